"""Control-socket fuzzing against a running pipeline (issue 9, architecture.md §3, §12).

10 000 seeded random/malformed/oversized frames and well-formed envelopes with invalid fields
(tools/fuzz_control.py) go to the supervisor's ROUTER; `set`/`resume` commands reach the
workers' side of the control plane; they carry the run's control token, so the hostile content
reaches the decoder. Then 2 000 messages without a valid token (none, empty, wrong; among them
real `status`/`stop`/`pause` commands): every command gets the refusal reply, nothing else
happens. Then 200 garbage TCP connections hit the publisher's native-stream socket. Afterwards:
no worker died or restarted, no hang, `status` answers, frames flow. Also: forged
`hello`/`ready` cannot take over a respawned worker, with or without the token.
"""
from __future__ import annotations

import socket
import time

import pytest

from pipeline_helpers import native_endpoint, receive_frames
from tools.fuzz_control import fuzz

from .conftest import report

pytestmark = [pytest.mark.timeout(180)]

COUNT = 10000
UNAUTHENTICATED = 2000


def _snapshot(p):
    return {w["name"]: (w["pid"], w["generation"], w["state"]) for w in p.status()["workers"]}


def test_fuzz_control_socket_10000_messages(live, reliable_config):
    p = live(reliable_config)
    published = p.attach_published()
    assert published.wait_new(0.0, -1, 60.0)
    before = _snapshot(p)
    t0 = time.monotonic()
    result = fuzz(p.endpoints["router"], count=COUNT, seed=9, workers=list(before), max_seconds=90.0,
                  token=p.endpoints["token"])
    intruder = fuzz(p.endpoints["router"], count=UNAUTHENTICATED, seed=10, workers=list(before),
                    max_seconds=60.0, token=None)
    t_status = time.monotonic()
    status = p.request("status", timeout_s=5.0)
    status_s = time.monotonic() - t_status
    assert result.sent == COUNT, result
    assert result.replies > result.refused_replies == 0, result   # with the token: handled, not refused
    assert intruder.sent == UNAUTHENTICATED, intruder
    assert intruder.refused_replies > 50 and intruder.replies == intruder.refused_replies, intruder
    assert status["state"] == "running"
    assert p.request("ping")["pid"] == p.supervisor_pid
    after = _snapshot(p)
    assert after == before, f"workers changed under fuzzing: {before} -> {after}\n{p.logs()}"
    last = max(it[1] for it in published.snapshot())
    assert published.wait_new(time.monotonic(), last, 30.0, count=3), "publishing stopped after the fuzz run"
    # The worker side reachable from outside: the publisher's native-stream socket. Garbage
    # TCP connections (HTTP, a bogus ZMTP greeting, random bytes) must not stop publishing.
    endpoint = native_endpoint(p.status())
    host, port = endpoint[len("tcp://"):].rsplit(":", 1)
    payloads = [b"", b"\xff" * 10, b"GET / HTTP/1.1\r\n\r\n", bytes(range(256)) * 64,
                b"\xff\x00\x00\x00\x00\x00\x00\x00\x01\x7f" + b"\x03" * 60]
    for i in range(200):
        with socket.create_connection((host, int(port)), timeout=2.0) as conn:
            try:
                conn.sendall(payloads[i % len(payloads)])
            except OSError:
                pass  # ZeroMQ may hang up on us first: that is the point
    ids = [f.frame_id for f in receive_frames(endpoint, 3, timeout=30)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert _snapshot(p) == before
    events = [k for _, k, d in p.events.events if k in ("fatal", "finished", "exited", "unhealthy")]
    assert not events, f"fuzzing caused lifecycle events {events}"
    report("fuzz_control", sent=result.sent, replies=result.replies, error_replies=result.error_replies,
           unauthenticated_sent=intruder.sent, unauthenticated_refused=intruder.refused_replies,
           seconds=result.seconds, status_after_s=round(status_s, 3), by_class=result.by_class, valid=result.valid,
           native_garbage_connections=200, wall_s=round(time.monotonic() - t0, 1))
    assert p.stop().returncode == 0


def test_forged_hello_and_ready_cannot_claim_a_respawned_worker(live, reliable_config):
    import os
    import signal

    import zmq

    from pipeline.runtime.messages import Heartbeat, Hello, Ready, encode

    p = live(reliable_config)
    w = p.workers()["detection"]
    ctx = zmq.Context()
    forger = ctx.socket(zmq.DEALER)
    forger.setsockopt(zmq.LINGER, 0)
    forger.setsockopt(zmq.IDENTITY, b"c:forger")
    forger.connect(p.endpoints["router"])
    tokens = [[], [p.endpoints["token"].encode()]]  # an intruder without it, and one that has it
    try:
        os.kill(w["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:  # speak first for the next generations, many times
            for gen in (w["generation"] + 1, w["generation"] + 2):
                for msg in (Hello("detection", gen, 1), Ready("detection", gen, {"forged": True}),
                            Heartbeat("detection", gen)):
                    for token in tokens:
                        forger.send_multipart([*token, encode(msg)])
            time.sleep(0.01)
    finally:
        forger.close(0)
        ctx.term()
    ready = p.events.wait_ready("detection", w["generation"], timeout=30.0)
    assert ready is not None
    time.sleep(4.0)  # > health_timeout: a hijacked generation would be killed by now
    new = p.workers()["detection"]
    assert new["generation"] == w["generation"] + 1, new
    assert new["state"] == "running" and new["info"].get("forged") is None, new
    assert new["frames_out"] > 0, new
    assert p.stop().returncode == 0
