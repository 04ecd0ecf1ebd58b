"""Fixtures and helpers for the reliability suite (issue 9, architecture.md §12).

Builds on ``tests/conftest.py`` (``pipeline_env`` leak check, ``run_cli``, ``small_video``).
``reliable_config`` is the small fast pipeline of ``small_config`` with a restart policy that
lets a worker be killed many times in a row (``max_restarts`` high, short capped delays), so
the suite measures the runtime and not the give-up rule.

`LivePipeline` drives one detached pipeline: control requests, a subscriber on the
supervisor's event PUB (to time `ready` after a kill) and a reader of the ``published`` ring
with policy ``next`` (every published frame id, in order, straight from shared memory).
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from pipeline.runtime import rundir
from pipeline_helpers import SubscriberThread, leftover_rings, leftover_run_files, write_pipeline_config
from real_workers import INFERENCE_FAST

POLICY = ("restart: always, max_restarts: 1000, restart_window: 60, restart_delay: 0.05, "
          "max_restart_delay: 0.2, health_timeout: {health}")


def make_config(path: Path, source="sample", options="{width: 320, height: 240, fps: 30}",
                health_timeout=3.0, inference=INFERENCE_FAST) -> Path:
    """The default config's workers with fast settings: `center` detector, the real inference
    worker kept cheap (tests/real_workers.py: POCO-PARE, random weights, one thread -- about
    10 s to start and a few fps on this box; `inference` replaces those params), restart
    policy for repeated kills."""
    return write_pipeline_config(path, source=source, options=options, at_end="loop", inference=inference,
                                 settings=POLICY.format(health=health_timeout), metrics="{prometheus_port: 0}")


@pytest.fixture
def reliable_config(tmp_path) -> Path:
    return make_config(tmp_path / "reliable.yaml")


class EventLog(SubscriberThread):
    """Every event the supervisor publishes, with the local monotonic time it arrived."""

    def __init__(self, endpoint: str):
        self.events: list[tuple[float, str, dict]] = []
        super().__init__(endpoint, name="events")

    def on_message(self, parts: list, t: float) -> None:
        from pipeline.runtime.messages import Event, MessageError, decode

        try:
            ev = decode(parts[0])
        except MessageError:
            return
        if isinstance(ev, Event):
            with self._lock:
                self.events.append((t, ev.kind, dict(ev.data)))

    def wait_ready(self, worker: str, after_generation: int, timeout: float, kind: str = "ready"):
        """(arrival time, generation) of the first `kind` event ("ready", "restarted") of
        `worker` with a generation above `after_generation`, or None on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for t, k, data in self.events:
                    gen = data.get("generation")
                    if k == kind and data.get("worker") == worker and isinstance(gen, int) and gen > after_generation:
                        return t, gen
            time.sleep(0.01)
        return None


class PublishedLog:
    """Reads the `published` ring with policy `next`: (arrival time, frame_id, generation)."""

    def __init__(self, shm_name: str):
        from pipeline.runtime.ring import Ring

        self.ring = Ring.attach(shm_name)
        self.reader = self.ring.reader(policy="next")
        self.items: list[tuple[float, int, int]] = []
        self.overwritten = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="published", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            item = self.reader.read(timeout=0.1)
            if item is None:
                continue
            with self._lock:
                self.overwritten += item.overwritten_before
                self.items.append((time.monotonic(), int(item.record["frame_id"]),
                                   int(item.record["generation"])))

    def snapshot(self) -> list[tuple[float, int, int]]:
        with self._lock:
            return list(self.items)

    def wait_new(self, after_time: float, after_id: int, timeout: float, count: int = 1):
        """The first item that arrived after `after_time` with a frame id above `after_id`, once
        `count` such items exist (None on timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                new = [it for it in self.items[-(count + 200):] if it[0] >= after_time and it[1] > after_id]
            if len(new) >= count:
                return new[0]
            time.sleep(0.01)
        return None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self.reader = None
        self.ring.close()


class LivePipeline:
    """A detached pipeline started through the CLI, with its control/event/published views."""

    def __init__(self, run_cli, config: Path, *extra):
        self.run_cli = run_cli
        out = run_cli("start", "--detach", "--config", config, *extra, timeout=120)
        if out.returncode != 0:
            raise AssertionError(f"pipeline start failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
        self.run, self.endpoints = rundir.current_run()
        self.events = EventLog(self.endpoints["events"])
        status = self.status()
        self.run_id = status["run_id"]
        self.supervisor_pid = status["pid"]
        self.published = None
        self.seen_pids: set[int] = {w["pid"] for w in status["workers"] if w["pid"]}

    def attach_published(self) -> PublishedLog:
        self.published = PublishedLog(f"posepipe-{self.run_id}-published")
        return self.published

    def request(self, cmd, args=None, timeout_s=5.0):
        from pipeline.runtime.control import ControlClient

        with ControlClient.of(self.endpoints) as client:
            return client.request(cmd, args, timeout_s=timeout_s)

    def status(self) -> dict:
        return self.request("status")

    def workers(self) -> dict:
        ws = {w["name"]: w for w in self.status()["workers"]}
        self.seen_pids.update(w["pid"] for w in ws.values() if w["pid"])
        return ws

    def logs(self, lines: int = 15) -> str:
        """The last lines of every worker log of this run (for failure messages)."""
        out = []
        for path in [self.run.path.parent / "detached.log", *sorted(self.run.path.glob("*.log"))]:
            if not path.is_file():
                continue
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(out)

    def close_views(self) -> None:
        if self.published is not None:
            self.published.close()
            self.published = None
        if self.events is not None:
            self.events.close()
            self.events = None

    def stop(self):
        self.close_views()
        return self.run_cli("stop", timeout=60)


@pytest.fixture
def live(run_cli):
    """Factory: ``live(config, *overrides)`` -> LivePipeline; always stopped at the end."""
    started: list[LivePipeline] = []

    def start(config, *extra) -> LivePipeline:
        p = LivePipeline(run_cli, config, *extra)
        started.append(p)
        return p

    yield start
    for p in started:
        p.close_views()
        try:
            rundir.current_run()
        except rundir.NotRunning:
            continue
        p.run_cli("stop", timeout=60)


def leaks(pipeline_env, pids=()) -> list[str]:
    """What a stopped pipeline left behind: rings, socket files, run dirs, live processes."""
    import psutil

    found = [f"/dev/shm/{n}" for n in leftover_rings(pipeline_env["tag"])]
    found += leftover_run_files(pipeline_env["runtime"])
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                found.append(f"process {pid}")
        except psutil.Error:
            pass
    return found


def percentile(values, q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else float("nan")


def report(name: str, **figures) -> None:
    """Figures for the closing note: printed (pytest -s) and appended to $POSEPIPE_RELIABILITY_REPORT."""
    line = json.dumps({"test": name, **figures})
    print(line)
    target = os.environ.get("POSEPIPE_RELIABILITY_REPORT")
    if target:
        with open(target, "a") as fh:
            fh.write(line + "\n")


@pytest.fixture(scope="session", autouse=True)
def _resource_tracker_first():
    """Attaching a ring from the test process (Python < 3.13) starts multiprocessing's
    resource tracker as our child; start it before any test so the `pipeline_env` leak check
    (children that appeared during the test) does not count it."""
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    yield
