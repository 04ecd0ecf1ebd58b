"""Restart and swap of the CPU default inference backend as users feel them (issue 18, DESIGN §4).

The real inference worker on the CPU default (`onnx`, POCO-PARE with random weights, its
export cached for the whole session as a user's cache would be after the first start):

- an idle pipeline (capture paused) takes no core: every worker's CPU over 3 s stays low,
  because no thread pool spins (OpenMP passive, onnxruntime spinning off);
- kill -9 of inference -> the next frame published by its new generation, within the CPU goal
  of 6 s (scaled by how overloaded the shared box is: load average / cores, at least 1);
- `swap inference` (make-before-break): the command's time and the output gap at the hand-over,
  against the frame interval before it.

The figures go to the reliability report (conftest.report).
"""
from __future__ import annotations

import os
import signal
import statistics
import time

import psutil
import pytest

from pipeline_helpers import wait_for

from .conftest import leaks, make_config, report

pytestmark = [pytest.mark.timeout(600)]

KILL_TO_FRAME_S = 6.0            # issue 18: kill -9 inference -> next published frame, CPU, warm cache
                                 # (times the box's overload: see _share)
IDLE_CPU_PERCENT = 10.0          # an idle worker: heartbeats only
GAP_INTERVALS = 1.5              # output gap at a swap hand-over, in frame intervals (goal: <= 1)


@pytest.fixture(scope="session")
def onnx_data(tmp_path_factory):
    """One data dir (engine cache) for the session: the export happens once, as for a user."""
    return tmp_path_factory.mktemp("onnx-data")


def _share() -> float:
    """How many times more runnable processes than cores the box has (>= 1): on a shared CI box
    a worker gets about 1/share of the CPU it would get alone, so time bounds scale with it."""
    return max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))


def _wait_until_quiet(published, timeout: float = 60.0) -> None:
    """Until nothing was published for two frame intervals (at least 1 s): the last frames
    that were in flight when capture paused have come out."""
    items = published.snapshot()
    times = [it[0] for it in items[-8:]]
    quiet = max(1.0, 2.0 * statistics.median(b - a for a, b in zip(times, times[1:]))) if len(times) > 1 else 1.0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = published.snapshot()[-1][0]
        if time.monotonic() - last >= quiet:
            return
        time.sleep(0.1)
    raise AssertionError(f"output did not stop {timeout:g} s after capture was paused")


def _cpu_seconds(pids) -> dict:
    out = {}
    for name, pid in pids.items():
        try:
            t = psutil.Process(pid).cpu_times()
            out[name] = t.user + t.system
        except psutil.Error:
            out[name] = float("nan")
    return out


def test_idle_kill_9_and_swap_of_the_cpu_default(live, tmp_path, pipeline_env, onnx_data):
    inference = "{backend: onnx, model: poco-pare, smpl: 'off', backend_options: {seed: 0}}"
    config = make_config(tmp_path / "onnx.yaml", inference=inference, health_timeout=5.0)
    config.write_text(config.read_text() + f"data_dir: {onnx_data}\n")   # where the exported graph is cached
    p = live(config)
    published = p.attach_published()
    assert published.wait_new(0.0, -1, 300.0), f"nothing published\n{p.logs()}"
    w = p.workers()
    assert w["inference"]["info"]["backend"] == "onnx" and w["inference"]["threads"] >= 1
    assert w["inference"]["info"]["threads"] == w["inference"]["threads"]   # the budget reached the model

    # --- idle: capture paused, and the frames already in flight published
    p.request("pause", {"worker": "capture"})
    _wait_until_quiet(published)
    pids = {name: row["pid"] for name, row in p.workers().items()}
    c0, t0 = _cpu_seconds(pids), time.monotonic()
    time.sleep(3.0)
    c1, dt = _cpu_seconds(pids), time.monotonic() - t0
    idle = {name: round(100.0 * (c1[name] - c0[name]) / dt, 1) for name in pids}
    p.request("resume", {"worker": "capture"})
    busy = [name for name, pct in idle.items() if not pct <= IDLE_CPU_PERCENT]
    assert not busy, f"idle workers used CPU (% of one core over {dt:.1f} s): {idle}"

    # --- kill -9 inference -> next published frame of the new generation
    frames_seen = published.wait_new(time.monotonic(), max(it[1] for it in published.snapshot()), 60.0, count=3)
    assert frames_seen, "output did not resume after the pause"
    row = p.workers()["inference"]
    last_id = max(it[1] for it in published.snapshot())
    t_kill = time.monotonic()
    os.kill(row["pid"], signal.SIGKILL)
    deadline = t_kill + 120.0
    nxt = None
    while nxt is None and time.monotonic() < deadline:
        nxt = next((it for it in published.snapshot() if it[0] >= t_kill and it[2] > row["generation"]
                    and it[1] > last_id), None)
        time.sleep(0.02)
    assert nxt is not None, f"no frame from a new inference generation 120 s after kill -9\n{p.logs()}"
    kill_to_frame = nxt[0] - t_kill
    restarted = wait_for(lambda: (w := p.workers()["inference"])["extras"].get("load_s") is not None and w,
                         timeout=10, what="the restarted worker's first heartbeat")

    # --- swap: make-before-break, gap at the hand-over
    assert published.wait_new(time.monotonic(), nxt[1], 60.0, count=6), "too little output before the swap"
    t_cmd = time.monotonic()
    result = p.request("swap", {"worker": "inference", "params": {"threads": 1}}, timeout_s=300)
    swap_s = time.monotonic() - t_cmd
    assert published.wait_new(time.monotonic(), -1, 60.0, count=3)
    items = published.snapshot()
    old = [it for it in items if it[2] == result["old_generation"]]
    new = [it for it in items if it[2] == result["generation"]]
    assert old and new, "no output from one of the two generations"
    interval = statistics.median(b[0] - a[0] for a, b in zip(old[-8:], old[-7:]))
    gap = new[0][0] - old[-1][0]
    ids = [it[1] for it in items]

    stop = p.stop()
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert not leaks(pipeline_env, p.seen_pids), leaks(pipeline_env, p.seen_pids)
    bound = KILL_TO_FRAME_S * _share()
    figures = dict(load_avg=round(os.getloadavg()[0], 1), idle_cpu_percent=idle,
                   inference_threads=row["threads"], kill_to_frame_s=round(kill_to_frame, 2),
                   restarted_load_s=restarted["extras"].get("load_s"),
                   restarted_warmup_s=restarted["extras"].get("warmup_s"),
                   swap_command_s=round(swap_s, 2), swap_ready_s=result["ready_s"],
                   swap_gap_ms=round(gap * 1000), frame_interval_ms=round(interval * 1000),
                   swap_gap_intervals=round(gap / interval, 2))
    report("restart_swap_cpu", **figures)
    assert ids == sorted(ids) and len(ids) == len(set(ids)), "published frame ids repeated or went back"
    assert kill_to_frame <= bound, f"kill -9 inference -> next frame took {kill_to_frame:.2f} s > {bound:g} s: {figures}"
    assert gap <= GAP_INTERVALS * interval, f"swap output gap {gap:.2f} s > {GAP_INTERVALS} intervals: {figures}"
