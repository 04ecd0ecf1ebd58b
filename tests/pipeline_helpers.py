"""Helpers for tests that drive a real, detached pipeline (processes, rings, sockets)."""
from __future__ import annotations

import time

from pipeline.runtime import rundir
from pipeline.client import NativeClient
from pipeline.runtime.control import ControlClient


def request(cmd, args=None, timeout_s=5.0):
    _, endpoints = rundir.current_run()
    with ControlClient(endpoints["router"]) as client:
        return client.request(cmd, args, timeout_s=timeout_s)


def workers(status) -> dict:
    return {w["name"]: w for w in status["workers"]}


def native_endpoint(status) -> str:
    return workers(status)["publisher"]["info"]["native_endpoint"]


def wait_for(predicate, timeout=20.0, interval=0.1, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as exc:  # the supervisor may be between states
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def receive_frames(endpoint, n, timeout=15.0, until=None):
    """At least `n` published frames; with `until`, keep receiving past `n` until it holds."""
    frames = []
    deadline = time.monotonic() + timeout
    with NativeClient(endpoint) as client:
        while (len(frames) < n or (until is not None and not until(frames))) and time.monotonic() < deadline:
            frame = client.receive(timeout=0.5)
            if frame is not None:
                frames.append(frame)
    assert len(frames) >= n, f"received only {len(frames)} of {n} frames from {endpoint}"
    return frames


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
