"""Faults with real processes: kill -9 of every worker and of the supervisor, a frozen
(SIGSTOPped) worker, restart policy `never`, and a slow stage that must not make latency grow."""
from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from pipeline_helpers import (detached_pipeline, foreground_pipeline, interrupt, leftover_rings, native_endpoint,
                              receive_frames, request, wait_for, workers)

pytestmark = [pytest.mark.timeout(180)]


def _restarted(name, old_gen):
    w = workers(request("status"))[name]
    return w["generation"] > old_gen and w["state"] == "running" and w


def test_kill_9_each_worker_is_restarted_and_output_resumes(run_cli, small_config):
    with detached_pipeline(run_cli, small_config):
        status = request("status")
        last_id = receive_frames(native_endpoint(status), 3)[-1].frame_id
        for name in ("capture", "detection", "inference", "publisher"):
            w = workers(request("status"))[name]
            os.kill(w["pid"], signal.SIGKILL)
            # inference reloads POCO on restart: allow for it on a busy 2-core box
            new = wait_for(lambda: _restarted(name, w["generation"]), timeout=60, what=f"{name} restart")
            assert new["restarts"] >= 1 and new["pid"] != w["pid"]
            frames = receive_frames(native_endpoint(request("status")), 3, timeout=30)
            assert frames[0].frame_id > last_id, f"frame ids went back after killing {name}"
            ids = [f.frame_id for f in frames]
            assert ids == sorted(ids) and len(set(ids)) == len(ids)
            last_id = frames[-1].frame_id
            if name == "inference":
                assert frames[-1].generation == new["generation"]


def _start_and_kill_supervisor(run_cli, config):
    """A detached run whose supervisor dies by SIGKILL; returns once all its workers have exited
    (they notice the dead parent within ~1-3 s, slower on a loaded box)."""
    run_cli("start", "--detach", "--config", config, check=True)
    status = request("status")
    worker_pids = [w["pid"] for w in status["workers"]]
    os.kill(status["pid"], signal.SIGKILL)
    wait_for(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                             for p in worker_pids), timeout=10, what="workers to exit after the supervisor died")


def test_kill_9_supervisor_workers_exit_and_stop_cleans_up(run_cli, small_config, pipeline_env):
    _start_and_kill_supervisor(run_cli, small_config)
    leftovers = leftover_rings(pipeline_env["tag"])
    assert leftovers, "expected the killed supervisor to leave its rings behind"
    assert run_cli("status").returncode != 0
    stop = run_cli("stop")
    assert stop.returncode == 0 and "cleaned up 1 stale run" in stop.stdout, stop.stdout + stop.stderr
    assert not leftover_rings(pipeline_env["tag"])
    # And a leftover from another killed run is cleaned by the next start as well.
    _start_and_kill_supervisor(run_cli, small_config)
    run_cli("start", "--detach", "--config", small_config, check=True)
    runs = [p for p in pipeline_env["runtime"].rglob("*") if not p.is_symlink() and (p / ".posepipe-run").is_file()]
    assert len(runs) == 1, runs
    assert run_cli("stop").returncode == 0


def test_frozen_worker_is_killed_by_health_timeout_and_restarted(run_cli, small_config):
    with detached_pipeline(run_cli, small_config, "workers.detection.health_timeout=1.5"):
        w = workers(request("status"))["detection"]
        os.kill(w["pid"], signal.SIGSTOP)
        wait_for(lambda: _restarted("detection", w["generation"]), timeout=15, what="frozen worker restart")
        assert not psutil.pid_exists(w["pid"]) or psutil.Process(w["pid"]).status() == psutil.STATUS_ZOMBIE
        receive_frames(native_endpoint(request("status")), 3)


def test_restart_never_leaves_worker_failed(run_cli, small_config):
    with detached_pipeline(run_cli, small_config, "workers.detection.restart=never"):
        w = workers(request("status"))["detection"]
        os.kill(w["pid"], signal.SIGKILL)
        wait_for(lambda: workers(request("status"))["detection"]["state"] == "failed", timeout=10,
                 what="detection marked failed")
        time.sleep(1.0)
        again = workers(request("status"))["detection"]
        assert again["generation"] == w["generation"] and again["restarts"] == 0


def test_slow_stage_keeps_latency_bounded_and_counts_drops(run_cli, small_config):
    # POCO on this CPU is the slow stage: a few fps behind a 30 fps capture.
    with detached_pipeline(run_cli, small_config):
        frames = receive_frames(native_endpoint(request("status")), 12, timeout=60)
        infer = [(f.stamps_ns["infer_end"] - f.stamps_ns["infer_start"]) / 1e6 for f in frames[2:]]
        lat = sorted((f.stamps_ns["publish"] - f.t_capture_ns) / 1e6 for f in frames[2:])
        # Bounded by ~ one frame interval + the stage times + scheduling, not growing with time.
        # Queueing would grow by a whole inference time per frame (12 frames: > 5 s here); the
        # slack covers a 2-core CI host that also runs the other workers.
        assert lat[len(lat) // 2] < 2 * max(infer) + 250, (lat, infer)
        assert lat[-1] < 4 * max(infer) + 500, (lat, infer)
        # A slow stage skips frames, it does not queue them. Detection runs on demand (architecture.md
        # §2) and the sample is a paced source: it renders only the frames detection will read and
        # skips ahead to the frame due then, so the frames nobody needs are passed over at the
        # source, counted as capture's `skipped` (by design), not as lost.
        status = wait_for(lambda: (s := request("status")) and workers(s)["capture"]["skipped"] > 0 and s,
                          what="skipped frames counted")
        w = workers(status)
        assert w["inference"]["drops"] == 0 and w["detection"]["drops"] == 0
        assert w["publisher"]["extras"]["latency_p99_ms"] < 4 * w["inference"]["p99_ms"] + 500


def test_max_restarts_within_window_gives_up(run_cli, small_config):
    with detached_pipeline(run_cli, small_config, "workers.detection.max_restarts=2",
                           "workers.detection.restart_delay=0.1", "workers.detection.restart_window=60"):
        for attempt in range(3):
            w = workers(request("status"))["detection"]
            assert w["state"] == "running", w
            os.kill(w["pid"], signal.SIGKILL)
            if attempt < 2:
                wait_for(lambda: _restarted("detection", w["generation"]), timeout=10, what="restart")
        final = wait_for(lambda: (d := workers(request("status"))["detection"])["state"] == "failed" and d,
                         timeout=10, what="detection given up")
        assert final["restarts"] == 2 and final["generation"] == 3
        assert {w["state"] for n, w in workers(request("status")).items() if n != "detection"} == {"running"}


def test_unclean_stop_gives_nonzero_exit(pipeline_env, small_config):
    with foreground_pipeline(small_config, "workers.publisher.health_timeout=60",
                             "supervisor.shutdown_grace=1.0") as proc:
        os.kill(workers(request("status"))["publisher"]["pid"], signal.SIGSTOP)  # cannot obey stop/SIGTERM
        out, err = interrupt(proc, timeout=30)
    assert proc.returncode == 1, out + err
    assert "NOT cleanly" in out and "publisher needed SIGKILL" in err
