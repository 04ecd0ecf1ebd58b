"""Helpers for tests that drive a real, detached pipeline (processes, rings, sockets), and the
test doubles and builders several test files share."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from pipeline.runtime import rundir
from pipeline.client import NativeClient
from pipeline.runtime.control import ControlClient
from real_workers import INFERENCE_FAST


def request(cmd, args=None, timeout_s=5.0):
    _, endpoints = rundir.current_run()
    with ControlClient.of(endpoints) as client:
        return client.request(cmd, args, timeout_s=timeout_s)


def workers(status) -> dict:
    return {w["name"]: w for w in status["workers"]}


def native_endpoint(status) -> str:
    return workers(status)["publisher"]["info"]["native_endpoint"]


@contextmanager
def detached_pipeline(run_cli, config, *overrides):
    """`pipeline start --detach --config config *overrides`; on the way out `pipeline stop`,
    which must succeed."""
    run_cli("start", "--detach", "--config", config, *overrides, check=True)
    try:
        yield
    finally:
        stop = run_cli("stop")
        assert stop.returncode == 0, stop.stderr


@contextmanager
def foreground_pipeline(config, *overrides):
    """`pipeline start --config config *overrides` in the foreground, as a child of the test,
    yielded once it runs; killed on the way out if the test left it running."""
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "start", "--config", str(config), *overrides],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        wait_for(lambda: request("status")["state"] == "running", timeout=30, what="pipeline running")
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def interrupt(proc, timeout) -> tuple[str, str]:
    """Ctrl-C as a terminal sends it (SIGINT); the (stdout, stderr) of the process once it exits."""
    proc.send_signal(signal.SIGINT)
    return proc.communicate(timeout=timeout)


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


def assert_publisher_keeps_inference_rate():
    """Over 4 s of a running pipeline the publisher puts out about what inference produces (POCO
    on CPU is the slow stage). Counters come from heartbeats (every 0.5 s, not in step across
    workers), hence the slack of about one second of inference output."""
    def counts():
        w = workers(request("status"))
        return w["inference"]["frames_out"], w["publisher"]["frames_out"]

    wait_for(lambda: counts()[1] > 3, timeout=60, what="published frames")
    c0, p0 = counts()
    time.sleep(4.0)
    c1, p1 = counts()
    assert c1 - c0 >= 2 and p1 - p0 >= (c1 - c0) - max(3, (c1 - c0) // 4), (c0, c1, p0, p1)


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


def leftover_rings(tag) -> list[str]:
    """Names of the shared-memory rings of the runs tagged `tag` that are still in /dev/shm."""
    return sorted(n for n in os.listdir("/dev/shm") if n.startswith(f"posepipe-{tag}"))


def leftover_run_files(runtime: Path) -> list[str]:
    """Socket files and run directories still under a runtime dir (POSEPIPE_RUNTIME_DIR)."""
    found = []
    if runtime.exists():
        for path in runtime.rglob("*"):
            if path.is_socket():
                found.append(f"socket file {path}")
            elif not path.is_symlink() and (path / ".posepipe-run").is_file():  # rundir.MARKER
                found.append(f"run directory {path}")
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PIPELINE_YAML = """
source:
  spec: {source}
  options: {options}
{at_end}rings:
  frames: {{slots: {slots}, max_height: {max_height}, max_width: {max_width}}}
  max_persons: 4
workers:
{workers}sinks:
  native: {{endpoint: "tcp://127.0.0.1:{port}"}}
supervisor: {{shutdown_grace: {shutdown_grace}, drain: {drain}}}
"""


def write_pipeline_config(path: Path, *, source="sample", options="{width: 320, height: 240, fps: 30}",
                          at_end=None, slots=6, max_height=240, max_width=320, settings="health_timeout: 3",
                          settings_for=None, detection="{kind: center}", inference=INFERENCE_FAST,
                          metrics=None, shutdown_grace=3.0, drain=0.3) -> Path:
    """The YAML of a small pipeline with the real workers, written to `path` on a free native port.

    Values are YAML text: `settings` is what every worker gets besides its module (health
    timeout, restart policy), `settings_for` replaces it for the workers it names ("" for
    none); `detection`/`inference`/`metrics` are worker params (`metrics=None`: no metrics
    worker). The `sinks:` line stays a line of its own: tests splice more sinks in after it.
    """
    params = {"capture": None, "detection": detection, "inference": inference, "publisher": None}
    if metrics is not None:
        params["metrics"] = metrics
    lines = []
    for name, worker_params in params.items():
        own = (settings_for or {}).get(name, settings)
        fields = [f"module: workers.{name}", *([own] if own else []),
                  *([] if worker_params is None else [f"params: {worker_params}"])]
        lines.append(f"  {name}: {{{', '.join(fields)}}}\n")
    path.write_text(PIPELINE_YAML.format(
        source=source, options=options, at_end="" if at_end is None else f"  at_end: {at_end}\n",
        slots=slots, max_height=max_height, max_width=max_width, workers="".join(lines),
        port=free_port(), shutdown_grace=shutdown_grace, drain=drain))
    return path


class FakeCapture:
    """A cv2.VideoCapture stand-in: plays `frames` (arrays, or None for a failed read), then fails;
    nothing more once released."""

    def __init__(self, frames=(), opened=True, fps=30.0):
        self.frames = list(frames)
        self.opened = opened
        self.fps = fps
        self._img = None

    def isOpened(self):  # noqa: N802 (OpenCV's name)
        return self.opened

    def grab(self):
        if not self.frames:
            return False
        self._img = self.frames.pop(0)
        return self._img is not None

    def retrieve(self):
        return self._img is not None, self._img

    def get(self, prop):
        return self.fps

    def set(self, prop, value):
        return True

    def release(self):
        self.opened = False
        self.frames = []


def write_clip(path: Path, frames: int) -> Path:
    """A 320x240 MJPG clip at 30 fps of `frames` frames, frame i showing a box at x = 20 + 4 i."""
    import cv2
    import numpy as np

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (320, 240))
    assert writer.isOpened(), "OpenCV cannot write MJPG test videos"
    for i in range(frames):
        img = np.full((240, 320, 3), 40, np.uint8)
        cv2.rectangle(img, (20 + 4 * i, 60), (80 + 4 * i, 200), (0, 200, 255), -1)
        writer.write(img)
    writer.release()
    return path


class SubscriberThread:
    """A ZeroMQ SUB socket on `endpoint` read on a background thread: each message goes to
    `on_message(parts, arrival monotonic time)` of the subclass; `close()` stops and frees it."""

    def __init__(self, endpoint: str, name: str = "subscriber"):
        import zmq

        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SUBSCRIBE, b"")
        self._sock.connect(endpoint)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def on_message(self, parts: list, t: float) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._sock.poll(50):
                parts = self._sock.recv_multipart()
                self.on_message(parts, time.monotonic())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self._sock.close(0)
        self._ctx.term()
