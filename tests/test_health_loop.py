"""A hung worker is restarted even though its control thread keeps beating (issue 21 item 7).

Three test workers (pipeline/testing/stuck_worker.py) in one real pipeline:
* `stuck` (health_timeout and loop_timeout 1.5 s) takes 2.5 s in setup() -- which must not count
  before `ready` -- then, on `set stuck hang=600`, blocks its main loop in a call that releases
  the GIL: heartbeats go on, the loop does not come round. It must be killed and restarted.
* `waiting` (loop_timeout 1.5 s) waits for input that never comes: not hung.
* `slow` (loop_timeout 3 s) takes 1 s per process() call, like a big model on a CPU: not hung.
"""
from __future__ import annotations

import time

import pytest

from pipeline_helpers import request, wait_for, workers

pytestmark = [pytest.mark.timeout(180)]

CONFIG = """
rings: {frames: {slots: 2, max_height: 16, max_width: 16}, detections: {slots: 2}, max_persons: 1}
workers:
  stuck: {module: pipeline.testing.stuck_worker, health_timeout: 1.5, loop_timeout: 1.5, restart: always,
          restart_delay: 0.1, params: {setup_s: 2.5}}
  waiting: {module: pipeline.testing.stuck_worker, input: detections, loop_timeout: 1.5}
  slow: {module: pipeline.testing.stuck_worker, loop_timeout: 3, params: {busy_s: 1.0}}
  capture: {enabled: false}
  detection: {enabled: false}
  inference: {enabled: false}
  publisher: {enabled: false}
  metrics: {enabled: false}
sinks: {}
supervisor: {shutdown_grace: 2.0, drain: 0.1}
"""


def test_a_hung_main_loop_is_restarted_a_waiting_or_slow_one_is_not(run_cli, tmp_path):
    config = tmp_path / "stuck.yaml"
    config.write_text(CONFIG)
    run_cli("start", "--detach", "--config", config, check=True)
    try:
        first = workers(request("status"))
        assert {n: (w["generation"], w["state"]) for n, w in first.items()} == \
            {n: (1, "running") for n in ("stuck", "waiting", "slow")}, first
        time.sleep(5.0)      # > 3 x loop_timeout of `waiting`, > 4 calls of `slow`
        calm = workers(request("status"))
        assert {n: w["generation"] for n, w in calm.items()} == {"stuck": 1, "waiting": 1, "slow": 1}, calm
        assert calm["slow"]["p50_ms"] >= 900 and calm["waiting"]["extras"]["loop_age_s"] < 1.0, calm

        assert request("set", {"worker": "stuck", "key": "hang", "value": 600})["value"] == 600
        hung_pid = first["stuck"]["pid"]
        restarted = wait_for(lambda: (w := workers(request("status"))["stuck"])["generation"] == 2
                             and w["state"] == "running" and w, timeout=30, what="the hung worker's restart")
        assert restarted["pid"] != hung_pid and restarted["restarts"] == 1
        others = workers(request("status"))
        assert (others["waiting"]["generation"], others["slow"]["generation"]) == (1, 1), others
    finally:
        stop = run_cli("stop")
    assert stop.returncode == 0, stop.stderr


def test_unhealthy_names_silence_and_a_stuck_loop():
    from pipeline.config import WorkerConfig
    from pipeline.runtime.supervisor.health import unhealthy
    from pipeline.runtime.supervisor.state import WorkerState

    ws = WorkerState("w", WorkerConfig(module="m", health_timeout=2.0, loop_timeout=2.0))
    ws.last_seen = 100.0
    ws.stats = {"state": "running", "loop_age_s": 0.3}
    assert unhealthy(ws, 101.0) == ""
    assert "silent for 3.0 s" in unhealthy(ws, 103.0)
    ws.stats["loop_age_s"] = 2.5
    assert "main loop stuck for 2.5 s" in unhealthy(ws, 101.0)
    ws.stats["state"] = "starting"       # setup() has start_timeout, not health_timeout
    assert unhealthy(ws, 101.0) == ""
