"""Control plane: typed messages, malformed input dropped (never a crash), sockets, run dirs."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time

import msgpack
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.runtime import rundir
from pipeline.runtime.control import ControlClient, ControlError, ControlServer, WorkerLink, make_endpoints
from pipeline.runtime.messages import (Bye, Command, Event, Heartbeat, Hello, MessageError, Ready, Reply, Stats, decode,
                               encode)

MESSAGES = [
    Hello("capture", 1, 123),
    Ready("inference", 2, {"model": "standin", "untrained": True}),
    Heartbeat("detection", 3, Stats(frames_in=5, frames_out=4, drops=1, overruns=0, p50_ms=1.5, p99_ms=3.0,
                                    cpu_percent=12.5, rss_bytes=1 << 20, extras={"fps": 29.9})),
    Bye("publisher", 1, "stop command"),
    Command(7, "set", {"worker": "inference", "key": "delay_ms", "value": 5}),
    Reply(7, True, {"value": 5.0}),
    Reply(8, False, error="nope"),
    Event("progress", {"worker": "inference", "message": "loading"}),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_roundtrip(msg):
    assert decode(encode(msg)) == msg


@pytest.mark.parametrize("data, needle", [
    (b"\xc1", "not valid msgpack"),
    (msgpack.packb([1, 2]), "must be a map"),
    (msgpack.packb({"type": "exec", "code": "x"}), "unknown message type 'exec'"),
    (msgpack.packb({"name": "a"}), "unknown message type None"),
    (msgpack.packb({"type": "hello", "name": "a", "generation": "1", "pid": 2}), "hello.generation: expected int"),
    (msgpack.packb({"type": "hello", "name": "a", "generation": True, "pid": 2}), "expected int, got bool"),
    (msgpack.packb({"type": "hello", "name": "a", "generation": 1}), "missing field 'pid'"),
    (msgpack.packb({"type": "hello", "name": "a", "generation": 1, "pid": 2, "x": 1}), "unknown field"),
    (msgpack.packb({"type": "heartbeat", "name": "a", "generation": 1, "stats": {"frames_in": "many"}}),
     "heartbeat.stats.frames_in: expected int"),
    (b"\x00" * (2 << 20), "exceeds"),
    (b"\x80\x03\x7d\x71\x00\x2e", "not valid msgpack"),  # a pickle is just garbage to us
])
def test_malformed_messages_raise_clear_errors(data, needle):
    with pytest.raises(MessageError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        decode(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=256))
def test_decode_never_raises_anything_but_message_error(data):
    try:
        decode(data)
    except MessageError:
        pass


def test_encode_rejects_non_messages():
    with pytest.raises(MessageError):
        encode({"type": "hello"})


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    runtime = f"/tmp/ppc-{os.getpid()}-{time.monotonic_ns() % 10**6}"
    monkeypatch.setenv("POSEPIPE_RUNTIME_DIR", runtime)
    rd = rundir.RunDir.create()
    yield rd
    rd.remove()
    shutil.rmtree(runtime)


TOKEN = "t0ken" * 8


def test_server_link_client_roundtrip_and_garbage_is_dropped(run_dir):
    server = ControlServer(make_endpoints(run_dir, "ipc"), TOKEN)
    try:
        sock = run_dir.socket_path("control")
        assert stat.S_IMODE(os.stat(sock).st_mode) & 0o077 == 0, "socket file must be private"
        assert stat.S_IMODE(os.stat(run_dir.path).st_mode) == 0o700
        link = WorkerLink(server.endpoints["router"], "capture", 1, TOKEN)
        link.send(Hello("capture", 1, os.getpid()))
        # Raw garbage from an arbitrary peer: refused (no token) or dropped, counted, never raised.
        ctx = zmq.Context.instance()
        raw = ctx.socket(zmq.DEALER)
        raw.setsockopt(zmq.LINGER, 0)
        raw.connect(server.endpoints["router"])
        raw.send(b"\xc1garbage")
        raw.send_multipart([b"two", b"frames"])
        raw.send_multipart([TOKEN.encode(), b"\xc1garbage"])
        raw.send_multipart([TOKEN.encode(), b"three", b"frames"])
        got = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (not got or server.dropped < 2 or server.refused < 2):
            got += server.poll(0.1)
        assert [type(m) for _, m in got] == [Hello]
        assert server.refused == 2 and server.dropped == 2
        identity = got[0][0]
        assert server.send(identity, Command(1, "pause", {}))
        msg = link.recv(2.0)
        assert msg == Command(1, "pause", {})
        raw.close()
        link.close()
    finally:
        server.close()


def test_client_request_reply_and_timeout(run_dir):
    server = ControlServer(make_endpoints(run_dir, "tcp"), TOKEN)
    assert server.endpoints["router"].startswith("tcp://127.0.0.1:")
    try:
        with ControlClient(server.endpoints["router"], TOKEN) as client:
            with pytest.raises(ControlError, match="did not answer 'status' within 0.3 s"):
                client.request("status", timeout_s=0.3)
            ident, cmd = None, None
            client.sock.send_multipart([TOKEN.encode(), encode(Command(99, "status", {}))])  # as request() does
            deadline = time.monotonic() + 3
            while cmd is None or cmd.id != 99:
                assert time.monotonic() < deadline
                for ident, cmd in server.poll(0.1):
                    pass
            server.send(ident, Reply(99, False, error="boom"))
            assert decode(client.sock.recv()) == Reply(99, False, error="boom")
    finally:
        server.close()


@pytest.mark.parametrize("token", [None, b"", b"wrong" * 13, TOKEN.encode()[:-1] + b"X"])
def test_commands_without_the_token_are_refused_and_say_why(run_dir, token):
    server = ControlServer(make_endpoints(run_dir, "tcp"), TOKEN)
    ctx = zmq.Context.instance()
    intruder = ctx.socket(zmq.DEALER)
    intruder.setsockopt(zmq.LINGER, 0)
    intruder.connect(server.endpoints["router"])
    try:
        body = encode(Command(5, "stop", {}))
        intruder.send_multipart([body] if token is None else [token, body])
        seen = []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not server.refused:
            seen += server.poll(0.05)
        assert seen == [] and server.refused == 1   # the supervisor never sees the command
        assert intruder.poll(3000)
        reply = decode(intruder.recv())
        assert reply.id == 5 and not reply.ok and "control token" in reply.error and "control.json" in reply.error
        with ControlClient(server.endpoints["router"], "guess") as client:  # the CLI's error for it
            client.sock.send_multipart([b"guess", encode(Command(1, "status", {}))])
            while not server.poll(0.05) and server.refused < 2:
                pass
            assert "refused" in decode(client.sock.recv()).error
    finally:
        intruder.close(0)
        server.close()


def test_a_run_dir_too_long_for_ipc_is_refused_never_silently_tcp(tmp_path, monkeypatch):
    monkeypatch.setenv("POSEPIPE_RUNTIME_DIR", str(tmp_path / ("x" * 90)))
    rd = rundir.RunDir.create()
    try:
        with pytest.raises(ValueError, match=r"too long for ipc.*POSEPIPE_RUNTIME_DIR.*control.transport=tcp"):
            make_endpoints(rd, "ipc")
        assert make_endpoints(rd, "tcp")["router"] == "tcp://127.0.0.1:*"   # asked for: fine
        assert make_endpoints(rd, "tcp", "::1")["router"] == "tcp://[::1]:*"
        with pytest.raises(ValueError, match="only listens on loopback"):
            make_endpoints(rd, "tcp", "0.0.0.0")
    finally:
        rd.remove()


def test_replies_are_taken_only_from_the_worker_the_command_went_to():
    from pipeline.runtime.supervisor.commands import Commands

    class Server:
        sent = []

        def send(self, identity, msg):
            self.sent.append((identity, msg))
            return True

    sup = Commands()
    sup.server, sup._pending = Server(), {41: (b"c:client", 7, time.monotonic() + 5, b"w:inference:2:1234")}
    sup._handle(b"c:intruder", Reply(41, True, {"value": "forged"}))
    sup._handle(b"w:capture:1:99", Reply(41, True, {"value": "forged"}))
    assert Server.sent == [] and 41 in sup._pending
    sup._handle(b"w:inference:2:1234", Reply(41, True, {"value": 3}))
    assert Server.sent == [(b"c:client", Reply(7, True, {"value": 3}))] and not sup._pending


def test_stale_runs_are_found_and_removed(run_dir):
    from pipeline.runtime.records import frames_dtype
    from pipeline.runtime.ring import Ring

    # A run whose supervisor is dead (a finished child process stands in for a killed one).
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = rundir.RunDir.create(run_id=f"stale_{dead}")
    stale.write_pid(int(dead))
    stale.write_control({"router": "ipc:///nonexistent"})
    stale.make_current()
    ring = Ring.create("frames", frames_dtype(16, 16), 2, stale.run_id)
    ring.close()
    assert os.path.exists(f"/dev/shm/posepipe-{stale.run_id}-frames")
    with pytest.raises(rundir.NotRunning, match="stale"):
        rundir.current_run()
    run_dir.write_pid()  # the live one (this process) must survive
    removed = rundir.cleanup_stale()
    assert removed == [stale.run_id]
    assert not stale.path.exists() and run_dir.path.exists()
    assert not os.path.exists(f"/dev/shm/posepipe-{stale.run_id}-frames")
    assert not (run_dir.path.parent / "current").is_symlink()
    with pytest.raises(rundir.NotRunning, match="no pipeline is running"):
        rundir.current_run()
