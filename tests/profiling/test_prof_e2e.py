"""The profiler against a real multi-process pipeline: every worker pid found and followed across a
SIGKILL restart, the artificially slowed stage named as the bottleneck, every output written; and
the CLI's bad-input errors. The pipeline_env fixture fails the test if a process, ring or socket
of ours is left behind."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pipeline.profiling.session import ProfileError, ProfileOptions, Profiler, check_out_dir
from pipeline_helpers import request, wait_for, workers

pytestmark = [pytest.mark.timeout(120)]
REPO = Path(__file__).resolve().parents[2]
WORKERS = {"capture", "detection", "inference", "publisher", "metrics"}


@pytest.fixture
def tracker():
    """Attaching rings in this process starts multiprocessing's resource tracker, a child that lives
    as long as the test process; start it before pipeline_env takes its snapshot of our children."""
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()


def profile_cli(*args, timeout=60):
    return subprocess.run([sys.executable, str(REPO / "tools" / "profile_pipeline.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO, env=dict(os.environ))


def test_profile_follows_a_restart_and_names_the_slowed_stage(tracker, run_cli, small_config, tmp_path):
    # Real POCO on the CPU (a few frames/s at most) is slower than the 30 fps source: the stage
    # the summary must name is inference, with no artificial slowing needed.
    run_cli("start", "--detach", "--config", small_config, check=True)
    try:
        wait_for(lambda: all(w["frames_out"] > 0 for w in request("status")["workers"]), what="frames")
        out = tmp_path / "prof"
        profiler = Profiler(ProfileOptions(out, interval_s=0.25, seconds=8.0, gpu=False))
        result = {}
        thread = threading.Thread(target=lambda: result.update(r=profiler.run()))
        thread.start()
        time.sleep(2.0)
        old_pid = workers(request("status"))["detection"]["pid"]
        os.kill(old_pid, signal.SIGKILL)
        thread.join(30)
        assert not thread.is_alive()
    finally:
        stop = run_cli("stop")
    assert stop.returncode == 0, stop.stderr
    r = result["r"]
    assert r.samples >= 10 and r.frames >= 3
    assert r.bottleneck.stage == "inference" and r.bottleneck.kind == "stage", r.summary
    assert "bottleneck: inference" in (out / "summary.txt").read_text()
    assert "profiling CPU only" not in r.summary and "GPU profiling off" in r.summary

    rows = list(csv.DictReader(open(out / "timeline.csv")))
    procs = [x for x in rows if x["kind"] == "worker"]
    assert WORKERS | {"supervisor", "profiler"} == {x["worker"] for x in procs}
    for x in procs:
        if x["alive"] == "1" and x["cpu_percent"]:
            assert 0 <= float(x["cpu_percent"]) <= 100 * os.cpu_count() + 5
            assert float(x["rss_bytes"]) > 0
    det_pids = {x["pid"] for x in procs if x["worker"] == "detection" and x["pid"]}
    assert str(old_pid) in det_pids and len(det_pids) == 2, det_pids   # followed to the new pid
    doc = json.loads((out / "timeline.json").read_text())
    assert any(e["kind"] in ("restart", "vanished") and e["worker"] == "detection" for e in doc["events"])
    assert [x for x in rows if x["kind"] == "ring" and x["ring"] == "published"]

    trace = json.loads((out / "trace.json").read_text())
    assert trace["otherData"]["frames"] >= 3
    sidecar = json.loads((out / "plots.json").read_text())
    assert set(sidecar["utilisation.png"][0]) == WORKERS | {"supervisor", "profiler"}
    for name in ("utilisation.png", "stage_latency.png", "frame_breakdown.png"):
        assert (out / name).stat().st_size > 10_000


def test_cli_without_a_running_pipeline(pipeline_env, tmp_path):
    proc = profile_cli("--out", tmp_path / "p", "--seconds", "1")
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: no pipeline is running") and "--start" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_unwritable_out_dir_fails_before_anything_starts(pipeline_env, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for bad in (blocker, blocker / "sub"):
        proc = profile_cli("--out", bad, "--start", "--seconds", "1")
        assert proc.returncode == 1 and proc.stderr.startswith("error: "), proc.stderr
        assert "--out" in proc.stderr and "starting" not in proc.stderr
    with pytest.raises(ProfileError, match="not a directory"):
        check_out_dir(blocker)
    proc = profile_cli("--interval", "0", "--out", tmp_path / "ok")
    assert proc.returncode == 1 and "--interval" in proc.stderr
    proc = profile_cli("--out", tmp_path / "ok", "--source", "x")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr


def test_cli_start_profiles_and_stops(pipeline_env, small_config, tmp_path):
    out = tmp_path / "p2"
    proc = profile_cli("--out", out, "--seconds", "2.5", "--no-plots", "--start", "--", "--config", small_config,
                       timeout=90)
    assert proc.returncode == 0, proc.stderr
    assert "bottleneck:" in proc.stdout and "profiler overhead" in proc.stdout
    assert "stopped run" in proc.stderr
    assert (out / "trace.json").exists() and not (out / "utilisation.png").exists()


def test_reachable_as_pipeline_profile(pipeline_env, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "profile", "--out", tmp_path / "p", "--seconds", "1"],
                          capture_output=True, text=True, timeout=60, cwd=REPO, env=dict(os.environ))
    assert proc.returncode == 1 and proc.stderr.startswith("error: no pipeline is running"), proc.stderr
