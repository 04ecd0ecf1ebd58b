"""ZeroMQ control plane (architecture.md §3).

* `ControlServer` — the supervisor's side: a ROUTER for commands/heartbeats from workers and
  the CLI, and a PUB for lifecycle events.
* `WorkerLink` — a worker's DEALER to that ROUTER.
* `ControlClient` — the CLI's request/reply helper (a DEALER with a timeout, so a dead
  supervisor never hangs the CLI).

Endpoints are ``ipc://`` paths inside the private run directory (0700; socket files 0600)
or ``tcp://127.0.0.1:*`` when asked. Malformed messages are logged and dropped.
"""
from __future__ import annotations

import itertools
import logging
import os
import uuid

import zmq

from pipeline.runtime.messages import Command, Event, MessageError, Reply, decode, encode

log = logging.getLogger(__name__)


class ControlError(RuntimeError):
    """The supervisor did not answer or answered with an error."""


IPC_PATH_MAX = 100  # sockaddr_un.sun_path is 108 bytes on Linux


def make_endpoints(run_dir, transport: str = "ipc", host: str = "127.0.0.1") -> dict:
    if transport == "ipc":
        paths = [str(run_dir.socket_path("control")), str(run_dir.socket_path("events"))]
        if max(map(len, paths)) <= IPC_PATH_MAX:
            return {"router": f"ipc://{paths[0]}", "events": f"ipc://{paths[1]}"}
        log.warning("run directory path is too long for ipc sockets (%d > %d characters); using "
                    "tcp://127.0.0.1 instead (set POSEPIPE_RUNTIME_DIR to a shorter path)",
                    max(map(len, paths)), IPC_PATH_MAX)
        transport, host = "tcp", "127.0.0.1"
    if transport == "tcp":
        return {"router": f"tcp://{host}:*", "events": f"tcp://{host}:*"}
    raise ValueError(f"control transport {transport!r} — allowed: ipc, tcp")


class ControlServer:
    def __init__(self, endpoints: dict):
        self.ctx = zmq.Context()
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.router.setsockopt(zmq.MAXMSGSIZE, 1 << 20)
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.setsockopt(zmq.SNDHWM, 1000)
        old_umask = os.umask(0o177)  # ipc socket files are created 0600
        try:
            self.router.bind(endpoints["router"])
            self.pub.bind(endpoints["events"])
        finally:
            os.umask(old_umask)
        self.endpoints = {"router": self.router.getsockopt(zmq.LAST_ENDPOINT).decode(),
                          "events": self.pub.getsockopt(zmq.LAST_ENDPOINT).decode()}
        self.poller = zmq.Poller()
        self.poller.register(self.router, zmq.POLLIN)
        self.dropped = 0

    def poll(self, timeout_s: float) -> list[tuple[bytes, object]]:
        """Wait up to timeout_s, then return every decoded (sender identity, message)."""
        out = []
        events = dict(self.poller.poll(max(0, int(timeout_s * 1000))))
        if self.router not in events:
            return out
        while True:
            try:
                frames = self.router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return out
            if len(frames) != 2:
                self.dropped += 1
                log.warning("dropped control message with %d frames (expected identity + body)", len(frames))
                continue
            try:
                out.append((frames[0], decode(frames[1])))
            except MessageError as exc:
                self.dropped += 1
                log.warning("dropped malformed control message from %r: %s", frames[0][:32], exc)

    def send(self, identity: bytes, msg) -> bool:
        try:
            self.router.send_multipart([identity, encode(msg)], zmq.NOBLOCK)
            return True
        except (zmq.Again, zmq.ZMQError) as exc:
            # Peer gone (EHOSTUNREACH) or its queue is full: a command it will never see.
            log.debug("could not send %s to %r: %s", type(msg).__name__, identity, exc)
            return False

    def publish(self, kind: str, **data) -> None:
        try:
            self.pub.send(encode(Event(kind, data)), zmq.NOBLOCK)
        except (zmq.Again, MessageError) as exc:
            log.debug("event %s not published: %s", kind, exc)

    def close(self) -> None:
        self.router.close(0)
        self.pub.close(0)
        self.ctx.term()


class WorkerLink:
    """A worker's DEALER. Not thread-safe: one thread owns it."""

    def __init__(self, endpoint: str, name: str, generation: int):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 500)
        self.sock.setsockopt(zmq.SNDHWM, 100)
        self.sock.setsockopt(zmq.IDENTITY, f"w:{name}:{generation}:{os.getpid()}".encode())
        self.sock.connect(endpoint)

    def send(self, msg) -> None:
        try:
            self.sock.send(encode(msg), zmq.NOBLOCK)
        except zmq.Again:
            log.debug("control queue full; %s dropped", type(msg).__name__)

    def recv(self, timeout_s: float):
        """The next valid message within timeout_s, else None (malformed ones are dropped)."""
        if not self.sock.poll(int(timeout_s * 1000)):
            return None
        data = self.sock.recv()
        try:
            return decode(data)
        except MessageError as exc:
            log.warning("dropped malformed control message: %s", exc)
            return None

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()


class ControlClient:
    """Request/reply to the supervisor, e.g. ``ControlClient(ep).request("status")``."""

    _ids = itertools.count(1)

    def __init__(self, endpoint: str):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.IDENTITY, f"c:{uuid.uuid4().hex[:12]}".encode())
        self.sock.connect(endpoint)

    def request(self, cmd: str, args: dict | None = None, timeout_s: float = 5.0):
        cid = next(self._ids)
        self.sock.send(encode(Command(cid, cmd, args or {})))
        deadline_ms = int(timeout_s * 1000)
        while self.sock.poll(deadline_ms):
            try:
                msg = decode(self.sock.recv())
            except MessageError as exc:
                log.warning("dropped malformed reply: %s", exc)
                continue
            if isinstance(msg, Reply) and msg.id == cid:
                if not msg.ok:
                    raise ControlError(msg.error or f"{cmd} failed")
                return msg.result
        raise ControlError(f"the supervisor did not answer {cmd!r} within {timeout_s:g} s")

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
