"""Shared fixtures.

* ``pipeline_env`` — a private runtime dir (POSEPIPE_RUNTIME_DIR) and run tag
  (POSEPIPE_RUN_TAG) for the test, and afterwards the leak check: no /dev/shm ring of the
  test's runs, no ipc socket file, no run directory, no child process may remain. Any
  leftover is killed/removed and the test fails. Tests that start pipelines use it.
* ``small_video`` — a generated 320x240 MJPG clip (OpenCV) with a moving box.
* ``small_config`` — a YAML for a tiny pipeline with the real workers (320x240 sample, `center`
  detector, POCO-PARE with random weights, random native port).
* ``run_cli`` — run ``python -m pipeline.cli ...`` in a subprocess with the test's env.
* ``fake_relay`` — factory for test seed relays (tests/relay_wire.py), closed after the test.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from pipeline_helpers import leftover_rings, leftover_run_files, write_clip, write_pipeline_config
from relay_wire import FakeRelay

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("YOLO_OFFLINE", "1")
# The pipeline's data folder in tests: never the user's data/ (their weights would change what runs).
os.environ.setdefault("POSEPIPE_DATA_DIR", "/nonexistent-posepipe-data")
# ultralytics reads its safe-load switch once, at its first import; tests import it themselves (to
# build weights) before a detector loads, so turn it on here as the detector does in a worker.
os.environ["ULTRALYTICS_SAFE_LOAD"] = "1"


def _children():
    import psutil

    try:
        return psutil.Process().children(recursive=True)
    except psutil.Error:
        return []


@pytest.fixture
def pipeline_env(tmp_path, monkeypatch):
    import psutil

    tag = "t" + uuid.uuid4().hex[:8]
    # Short: ipc socket paths must fit in 108 bytes.
    runtime = Path(f"/tmp/ppt-{tag}")
    monkeypatch.setenv("POSEPIPE_RUNTIME_DIR", str(runtime))
    monkeypatch.setenv("POSEPIPE_RUN_TAG", tag)
    # The test's own data folder (empty until a test writes weights or engines) and output folder.
    monkeypatch.setenv("POSEPIPE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("POSEPIPE_OUTPUT_DIR", str(tmp_path))
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path / "yolo"))
    # `pipeline start` opens the browser viewer on 127.0.0.1:8080 by default; tests that run in
    # parallel must not fight over that port (viewer tests turn it back on with a free port).
    monkeypatch.setenv("POSEPIPE_VIEWER", "0")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    before = set(_children())
    yield {"runtime": runtime, "tag": tag, "tmp": tmp_path}

    problems = []
    # A detached supervisor is not our child (its parent CLI exited): find it by its pid file.
    if runtime.exists():
        for pid_file in runtime.rglob("supervisor.pid"):
            run = pid_file.parent
            if run.is_symlink():
                continue
            try:
                proc = psutil.Process(int(pid_file.read_text()))
            except (psutil.Error, ValueError):
                continue
            problems.append(f"supervisor {proc.pid} of run {run.name} still running")
            proc.terminate()
            try:
                proc.wait(10)
            except psutil.TimeoutExpired:
                proc.kill()
    deadline = time.monotonic() + 8.0
    while time.monotonic() < deadline:
        leftovers = [p for p in _children() if p not in before and _alive(p)]
        if not leftovers:
            break
        time.sleep(0.1)
    else:
        for p in leftovers:
            problems.append(f"child process {p.pid} {' '.join(_cmdline(p))[:120]}")
            try:
                p.kill()
            except psutil.Error:
                pass
    for name in leftover_rings(tag):
        problems.append(f"/dev/shm/{name}")
        try:
            os.unlink(f"/dev/shm/{name}")
        except OSError:
            pass
    problems += leftover_run_files(runtime)
    shutil.rmtree(runtime, ignore_errors=True)
    assert not problems, "leaked: " + "; ".join(problems)


def _alive(p) -> bool:
    import psutil

    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _cmdline(p):
    try:
        return p.cmdline()
    except Exception:
        return []



@pytest.fixture
def run_id():
    """A fresh run id for tests that make rings themselves; their shared memory is gone after."""
    from pipeline.runtime.ring import Ring

    rid = "t" + uuid.uuid4().hex[:10]
    yield rid
    Ring.cleanup_stale(run_id=rid)
    assert not [e for e in os.listdir("/dev/shm") if e.startswith(f"posepipe-{rid}-")]


@pytest.fixture
def small_video(tmp_path) -> Path:
    return write_clip(tmp_path / "clip.avi", 45)


@pytest.fixture
def small_config(tmp_path) -> Path:
    return write_pipeline_config(tmp_path / "small.yaml", settings="health_timeout: 3, restart_delay: 0.2",
                                 metrics="{prometheus_port: 0}")


@pytest.fixture
def run_cli(pipeline_env):
    def run(*args, timeout=60, check=False):
        proc = subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], capture_output=True,
                              text=True, timeout=timeout, cwd=REPO, env=dict(os.environ))
        if check and proc.returncode != 0:
            raise AssertionError(f"pipeline {' '.join(map(str, args))} failed ({proc.returncode}):\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc
    return run


@pytest.fixture
def fake_relay():
    """``fake_relay(port=...)`` -> a listening FakeRelay; closed at teardown, after the test body
    (so after the `pipeline stop` a test runs at its end)."""
    relays = []

    def start(**kw) -> FakeRelay:
        relays.append(FakeRelay(**kw))
        return relays[-1]

    yield start
    for relay in relays:
        relay.close()
