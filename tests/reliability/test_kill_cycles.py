"""Fault injection with real processes (issue 9, architecture.md §4, §12).

While frames flow, `kill -9` a random worker many times in a row and check after each kill:
the supervisor restarted it within RESTART_BOUND_S (kill -> the new generation's `ready`
event), output resumes (a newer frame id appears in the `published` ring), published frame
ids only increase and never repeat; after the final `pipeline stop` nothing is left behind.
Also: a SIGSTOPped (hung) worker is killed by the health timeout and restarted; a killed
supervisor makes its workers exit, and the next `pipeline start` removes what it left.

Default CI run: 20 cycles within ~60 s; `-m slow` runs the 100-cycle variant.
"""
from __future__ import annotations

import os
import random
import signal
import time

import psutil
import pytest

from .conftest import leaks, make_config, percentile, report

pytestmark = [pytest.mark.timeout(300)]

WORKERS = ("capture", "detection", "inference", "publisher", "metrics")
# The policy under test restarts after <= max_restart_delay (0.2 s); the rest is a fresh
# interpreter importing numpy/zmq and attaching the rings. The median must be within the
# bound; single outliers may reach OVERLOAD_FACTOR x the bound while the box runs more
# runnable processes than it has cores (the CI box is 2 cores shared by several jobs).
RESTART_BOUND_S = float(os.environ.get("POSEPIPE_RESTART_BOUND_S", "2.0"))
OVERLOAD_FACTOR = 2.0
RESUME_TIMEOUT_S = 10.0
FRAMES_BETWEEN_KILLS = 3


def _max_bound() -> float:
    overloaded = os.getloadavg()[0] > (os.cpu_count() or 1)
    return RESTART_BOUND_S * (OVERLOAD_FACTOR if overloaded else 1.0)


MODEL_WORKERS = {"inference"}  # their own setup (model build) is outside the restart bound


def _kill_cycles(live, config, pipeline_env, cycles: int, budget_s: float, seed: int, pool=WORKERS,
                 then_kill=()):
    rng = random.Random(seed)
    p = live(config)
    published = p.attach_published()
    assert published.wait_new(0.0, -1, 60.0), "no frame was published before the first kill"
    respawn_s, restart_s, resume_s, killed, model_ready_s = [], [], [], [], []
    t_start = time.monotonic()
    for cycle in range(cycles):
        if time.monotonic() - t_start > budget_s and cycle < cycles - len(then_kill):
            continue  # out of time: skip to the final kills
        name = rng.choice(pool) if cycle < cycles - len(then_kill) else then_kill[cycle - (cycles - len(then_kill))]
        w = p.workers()[name]
        assert w["state"] == "running" and w["pid"], f"cycle {cycle}: {name} is {w['state']}"
        last_id = max((it[1] for it in published.snapshot()), default=-1)
        t_kill = time.monotonic()
        os.kill(w["pid"], signal.SIGKILL)
        respawned = p.events.wait_ready(name, w["generation"], timeout=15.0, kind="restarted")
        assert respawned is not None, f"cycle {cycle}: {name} (pid {w['pid']}) was not respawned within 15 s"
        respawn_s.append(respawned[0] - t_kill)
        ready = p.events.wait_ready(name, w["generation"], timeout=60.0)
        assert ready is not None, f"cycle {cycle}: {name} was respawned but not ready within 60 s\n{p.logs()}"
        (model_ready_s if name in MODEL_WORKERS else restart_s).append(ready[0] - t_kill)
        # Resumed = frames flow again, not just one: the next kill hits a running pipeline.
        resumed = published.wait_new(t_kill, last_id, RESUME_TIMEOUT_S, count=FRAMES_BETWEEN_KILLS)
        assert resumed is not None, f"cycle {cycle}: no new frame published {RESUME_TIMEOUT_S:g} s after killing {name}"
        resume_s.append(resumed[0] - t_kill)
        killed.append(name)
    status = p.status()
    ids = [it[1] for it in published.snapshot()]
    p.seen_pids.update(w["pid"] for w in status["workers"] if w["pid"])
    pids = set(p.seen_pids) | {p.supervisor_pid}
    stop = p.stop()
    assert stop.returncode == 0, stop.stdout + stop.stderr
    survived = len(killed)
    figures = dict(cycles=survived, load_avg=round(os.getloadavg()[0], 1), killed={n: killed.count(n) for n in WORKERS},
                   respawn_p50_s=round(percentile(respawn_s, 50), 3), respawn_max_s=round(max(respawn_s), 3),
                   restart_p50_s=round(percentile(restart_s, 50), 3),
                   restart_max_s=round(max(restart_s, default=float("nan")), 3),
                   model_worker_ready_s=[round(x, 2) for x in model_ready_s],
                   resume_p50_s=round(percentile(resume_s, 50), 3), resume_max_s=round(max(resume_s), 3),
                   frames_published=len(ids), overwritten_unread=published.overwritten,
                   wall_s=round(time.monotonic() - t_start, 1))
    report("kill_cycles", **figures)
    assert survived >= min(cycles, 10), f"only {survived} kill cycles fit in {budget_s:g} s: {figures}"
    assert ids == sorted(ids), "published frame ids went backwards"
    dupes = len(ids) - len(set(ids))
    assert dupes == 0, f"{dupes} frame ids were published twice"
    bound = _max_bound()
    late = [round(s, 2) for s in respawn_s if s > RESTART_BOUND_S]
    assert not late, f"the policy respawned later than {RESTART_BOUND_S:g} s after a kill: {late} ({figures})"
    assert figures["restart_p50_s"] <= RESTART_BOUND_S, figures
    slow = [round(s, 2) for s in restart_s if s > bound]
    assert not slow, f"kill -> ready slower than {bound:g} s: {slow} ({figures})"
    assert not leaks(pipeline_env, pids), leaks(pipeline_env, pids)
    by_worker = {w["name"]: w["restarts"] for w in status["workers"]}
    assert sum(by_worker.values()) == survived, (by_worker, survived)


def test_kill_9_random_worker_20_cycles(live, reliable_config, pipeline_env):
    """19 kills of random model-free workers (capture, detection, publisher, metrics) in ~60 s,
    then one of the inference worker, whose `ready` waits for its model to be rebuilt
    (~10 s here: that is the worker's own setup, not the restart policy)."""
    _kill_cycles(live, reliable_config, pipeline_env, cycles=20, budget_s=60.0, seed=9,
                 pool=("capture", "detection", "publisher", "metrics"), then_kill=("inference",))


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_kill_9_random_worker_100_cycles(live, reliable_config, pipeline_env):
    _kill_cycles(live, reliable_config, pipeline_env, cycles=100, budget_s=1500.0, seed=99)


def test_sigstop_worker_is_killed_by_health_timeout_and_restarted(live, tmp_path, pipeline_env):
    health = 1.5
    config = make_config(tmp_path / "stop.yaml", health_timeout=health)
    p = live(config)
    published = p.attach_published()
    assert published.wait_new(0.0, -1, 60.0)
    name = "detection"
    w = p.workers()[name]
    last_id = max(it[1] for it in published.snapshot())
    t_stop = time.monotonic()
    os.kill(w["pid"], signal.SIGSTOP)  # hung, not dead: only the heartbeat silence tells
    try:
        ready = p.events.wait_ready(name, w["generation"], timeout=health + 10.0)
        assert ready is not None, f"a SIGSTOPped {name} was not replaced within {health + 10:g} s"
        took = ready[0] - t_stop
        # The timeout runs from the last heartbeat, which came up to one interval (0.5 s) before the stop.
        assert health - 0.6 <= took < health + 1.0 + _max_bound(), took
        try:
            gone = psutil.Process(w["pid"]).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            gone = True
        assert gone, f"the frozen {name} (pid {w['pid']}) is still there"
        assert published.wait_new(t_stop, last_id, RESUME_TIMEOUT_S), "output did not resume"
        assert any(k == "unhealthy" and d.get("worker") == name for _, k, d in p.events.events)
        report("sigstop", worker=name, health_timeout_s=health, replaced_after_s=round(took, 2))
    finally:
        try:
            os.kill(w["pid"], signal.SIGCONT)
        except ProcessLookupError:
            pass
    assert p.stop().returncode == 0
    assert not leaks(pipeline_env, p.seen_pids), leaks(pipeline_env, p.seen_pids)


def test_kill_9_supervisor_workers_exit_and_next_start_cleans_up(live, run_cli, reliable_config, pipeline_env):
    tag = pipeline_env["tag"]
    p = live(reliable_config)
    worker_pids = [w["pid"] for w in p.status()["workers"]]
    old_run = p.run.path
    p.close_views()
    t_kill = time.monotonic()
    os.kill(p.supervisor_pid, signal.SIGKILL)
    deadline = t_kill + 5.0
    while time.monotonic() < deadline and leaks(pipeline_env, worker_pids)[-1:] and \
            any(x.startswith("process") for x in leaks(pipeline_env, worker_pids)):
        time.sleep(0.05)
    alive = [x for x in leaks(pipeline_env, worker_pids) if x.startswith("process")]
    assert not alive, f"workers still running 5 s after the supervisor died: {alive}"
    exited_s = time.monotonic() - t_kill
    assert [n for n in os.listdir("/dev/shm") if n.startswith(f"posepipe-{tag}")], "expected stale rings"
    assert old_run.exists(), "expected the stale run directory"
    p2 = live(reliable_config)  # the next start cleans the stale run
    assert not old_run.exists(), "pipeline start left the stale run directory"
    stale_rings = [n for n in os.listdir("/dev/shm") if n.startswith(f"posepipe-{tag}")
                   and not n.startswith(f"posepipe-{p2.run_id}-")]
    assert not stale_rings, stale_rings
    assert p2.stop().returncode == 0
    assert not leaks(pipeline_env, worker_pids + [p.supervisor_pid] + list(p2.seen_pids))
    report("supervisor_kill", workers_exited_within_s=round(exited_s, 2))
