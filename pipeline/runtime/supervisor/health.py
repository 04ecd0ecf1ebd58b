"""Health and restart policy.

Life of a worker: ``starting`` (spawned; `start_timeout` runs until `ready`, however long
`setup()` takes) -> ``running`` (SIGKILLed when `unhealthy`) -> on exit: ``restarting`` (policy
allows, delay = restart_delay * 2^(restarts in window), capped) or ``failed``/``stopped``/``finished``.

Heartbeats come from the worker's control thread, so they prove the process is alive, not that
it works: a main loop stuck in a call that releases the GIL (a CUDA sync, a blocking decode)
keeps beating. Each heartbeat therefore carries `loop_age_s`, the time since the main loop last
came round (it comes round at least every 0.1 s while it waits for input), and a loop older than
`loop_timeout` counts as hung, like silence (docs/architecture.md §4). That bound is separate from
`health_timeout` and generous (30 s) because one process() call may legitimately take seconds: a
batch of 8 on a CPU, a first call that compiles, any call on a machine under load (the inference
worker of the test suite took over 3 s per frame at a load of 10 on 2 cores).
"""
from __future__ import annotations

import logging

from pipeline.runtime.supervisor.state import WorkerState, _log_tail

log = logging.getLogger(__name__)


def unhealthy(ws: WorkerState, now: float) -> str:
    """Why a running worker must be killed now ('' when it is fine): no message for longer than
    its health_timeout, or a main loop that has not come round for longer than its loop_timeout."""
    if now - ws.last_seen > ws.cfg.health_timeout:
        return f"silent for {now - ws.last_seen:.1f} s (health_timeout={ws.cfg.health_timeout:g} s)"
    age = ws.stats.get("loop_age_s")
    if ws.stats.get("state") in ("running", "paused") and isinstance(age, (int, float)) \
            and age > ws.cfg.loop_timeout:
        return (f"main loop stuck for {age:.1f} s (loop_timeout={ws.cfg.loop_timeout:g} s) while its "
                f"heartbeats went on")
    return ""


class Health:
    """Watching workers and restarting them by policy (mixed into `Supervisor`)."""

    def _check_worker(self, ws: WorkerState, now: float) -> None:
        if ws.proc is not None and ws.proc.poll() is not None and ws.state in ("starting", "running", "paused"):
            ws.exit_code = ws.proc.returncode
            self._on_exit(ws, now)
            return
        if ws.state == "starting" and now - ws.started_at > ws.cfg.start_timeout:
            ws.fatal = ws.fatal or f"no `ready` within start_timeout={ws.cfg.start_timeout:g} s"
            log.warning("%s: %s; killing it", ws.name, ws.fatal)
            self._kill(ws)
        elif ws.state in ("running", "paused") and unhealthy(ws, now):
            reason = unhealthy(ws, now)
            log.warning("%s (pid %s) %s; killing it", ws.name, ws.pid, reason)
            self._publish("unhealthy", worker=ws.name, generation=ws.generation, reason=reason)
            self._kill(ws)
            ws.last_seen = now
            ws.stats.pop("loop_age_s", None)  # judged once; the exit is handled next
        elif ws.state == "restarting" and now >= ws.next_restart_at and not self._stop_requested:
            ws.restarts.append(now)
            ws.total_restarts += 1
            self._spawn(ws)
            self._publish("restarted", worker=ws.name, generation=ws.generation)

    def _on_exit(self, ws: WorkerState, now: float) -> None:
        # Messages it sent just before exiting (`finished`, `fatal`) decide what the exit means.
        for identity, msg in self.server.poll(0.05):
            self._handle(identity, msg)
        code = ws.exit_code
        was_starting = ws.state == "starting"
        if ws.finished:
            ws.state = "finished"
            self.request_stop(f"{ws.name} finished: {ws.finished}")
            return
        if self._stop_requested:
            ws.state = "stopped"
            return
        failed = code != 0
        policy = ws.cfg.restart
        log.log(logging.WARNING if failed else logging.INFO, "%s (generation %d) exited with code %s%s",
                ws.name, ws.generation, code, _log_tail(ws.log_path) if failed else "")
        self._publish("exited", worker=ws.name, generation=ws.generation, code=code)
        if self.state == "starting" and was_starting:
            ws.state = "failed"  # the initial start aborts the whole pipeline (see _start_all)
            return
        if policy == "never" or (policy == "on-failure" and not failed):
            ws.state = "failed" if failed else "stopped"
            return
        while ws.restarts and now - ws.restarts[0] > ws.cfg.restart_window:
            ws.restarts.popleft()
        if len(ws.restarts) >= ws.cfg.max_restarts:
            ws.state = "failed"
            log.error("%s failed %d times within %g s (max_restarts); giving up", ws.name,
                      len(ws.restarts), ws.cfg.restart_window)
            self._publish("gave_up", worker=ws.name)
            return
        delay = min(ws.cfg.restart_delay * (2 ** len(ws.restarts)), ws.cfg.max_restart_delay)
        ws.state = "restarting"
        ws.next_restart_at = now + delay
        log.info("restarting %s in %.2f s", ws.name, delay)
