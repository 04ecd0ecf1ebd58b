"""The supervisor (architecture.md §4): owns the rings and the control sockets, starts the workers in
data-flow order, watches them and restarts them by policy, and shuts everything down cleanly.

Used in-process by `pipeline start` (foreground) and as ``python -m pipeline.runtime.supervisor``
(``--detach``; the resolved config arrives as JSON on stdin).

The class is put together from one mixin per job, each in its own file:
`lifecycle` (spawning and stopping processes), `health` (watching them, restart policy),
`commands` (the control plane: every message in and out), `swap` (make-before-break swaps)
and `ab` (A/B tests). This file holds the state they share, the main loop and `status`.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time

from pipeline.config import PipelineConfig
from pipeline.config_streams import ring_kind
from pipeline.runtime import rundir
from pipeline.runtime.control import ControlServer, make_endpoints, new_token
from pipeline.runtime.messages import Reply
from pipeline.runtime.supervisor.ab import ABTests
from pipeline.runtime.supervisor.commands import Commands
from pipeline.runtime.supervisor.health import Health
from pipeline.runtime.supervisor.lifecycle import Lifecycle
from pipeline.runtime.supervisor.state import _STAT_KEYS, StartError, WorkerState
from pipeline.runtime.supervisor.swap import Swaps

log = logging.getLogger(__name__)


class Supervisor(Lifecycle, Health, Commands, Swaps, ABTests):
    def __init__(self, cfg: PipelineConfig, on_tick=None, on_event=None):
        self.cfg = cfg
        self.on_tick = on_tick          # called every status_interval with status() (foreground display)
        self.on_event = on_event        # called with (kind, data) for progress/fatal/restart events
        self.workers = {name: WorkerState(name, wc) for name, wc in cfg.enabled_workers().items()}
        self.rings: dict = {}
        self.server: ControlServer | None = None
        self.run_dir: rundir.RunDir | None = None
        self.state = "init"
        self.stop_reason = ""
        self.started = time.monotonic()
        self.error = ""
        self.final_status: dict = {}
        self._stop_requested = False
        self._pending: dict = {}        # forwarded id -> (client identity, client cmd id, deadline, worker identity)
        self._next_cmd = 1
        self._unclean: list[str] = []
        self._generations: dict = {}    # worker name -> last generation handed out
        self._swaps: dict = {}          # worker name -> (candidate WorkerState, client, cmd id, t0)
        self._handoffs: dict = {}       # worker name -> _Handoff while the old generation lets go
        self._retiring: list = []       # (WorkerState, SIGKILL deadline) of swapped-out generations
        self._side: dict = {}           # name -> WorkerState of A/B processes (variant B, comparer)
        self._ab: dict | None = None    # the running A/B test (see _ab_start)

    def run(self) -> int:
        """Start, supervise until stopped, shut down. Returns 0 clean, 1 unclean, 2 start failure."""
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            try:
                self._prepare()
                self._start_all()
            except Exception as exc:  # StartError, or a bug/OS error while setting up
                self.error = str(exc) if isinstance(exc, StartError) else f"{type(exc).__name__}: {exc}"
                log.debug("start failed", exc_info=True)
                self._shutdown()
                return 2
            self.state = "running"
            self._publish("started", run_id=self.run_dir.run_id)
            self._supervise()
            return self._shutdown()
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def request_stop(self, reason: str) -> None:
        if not self._stop_requested:
            self._stop_requested = True
            self.stop_reason = reason
            log.info("stopping: %s", reason)

    def _on_signal(self, signum, _frame):
        self.request_stop(signal.Signals(signum).name)

    def _prepare(self) -> None:
        from pipeline.runtime.records import detections_dtype, frames_dtype, poses_dtype
        from pipeline.runtime.ring import Ring, RingError

        try:
            rundir.cleanup_stale()
            self.run_dir = rundir.RunDir.create()
        except rundir.RuntimeDirError as exc:
            raise StartError(str(exc)) from exc
        self.run_dir.write_pid()
        r = self.cfg.rings
        dtypes = {
            "frames": (frames_dtype(r.frames.max_height, r.frames.max_width), r.frames.slots),
            "detections": (detections_dtype(r.max_persons), r.detections.slots),
            "poses": (poses_dtype(r.max_persons), r.poses.slots),
            "published": (poses_dtype(r.max_persons), r.published.slots),
        }
        used = []
        for wc in self.cfg.enabled_workers().values():
            used += [x for x in (wc.input, *wc.inputs, wc.output, *wc.reads) if x and x not in used]
        try:
            # frames.<stream> (several sources) has the layout of frames
            for name in sorted((n for n in used if ring_kind(n) in dtypes), key=lambda n: (ring_kind(n), n)):
                dtype, slots = dtypes[ring_kind(name)]
                self.rings[name] = Ring.create(name, dtype, slots, self.run_dir.run_id)
        except RingError as exc:
            raise StartError(str(exc)) from exc
        try:
            endpoints = make_endpoints(self.run_dir, self.cfg.control.transport, self.cfg.control.host)
        except ValueError as exc:
            raise StartError(str(exc)) from exc
        self.server = ControlServer(endpoints, new_token())
        self.run_dir.write_control({**self.server.endpoints, "token": self.server.token})
        self.run_dir.make_current()
        self.state = "starting"
        log.info("run %s: rings %s, control %s", self.run_dir.run_id, sorted(self.rings), self.server.endpoints["router"])

    def _supervise(self) -> None:
        seconds = self.cfg.supervisor.seconds
        next_tick = 0.0
        while not self._stop_requested:
            self._step(0.05)
            now = time.monotonic()
            if seconds is not None and now - self.started >= seconds:
                self.request_stop(f"--seconds {seconds:g} elapsed")
            if self.on_tick is not None and now >= next_tick:
                next_tick = now + self.cfg.supervisor.status_interval
                try:
                    self.on_tick(self.status())
                except Exception:
                    log.exception("progress display failed")
            if self.workers and all(w.state in ("failed", "stopped", "finished") for w in self.workers.values()):
                self.request_stop("every worker has stopped")

    def _step(self, timeout: float) -> None:
        for identity, msg in self.server.poll(timeout):
            try:
                self._handle(identity, msg)
            except Exception:
                log.exception("error handling %s", type(msg).__name__)
        now = time.monotonic()
        for ws in self.workers.values():
            self._check_worker(ws, now)
        self._check_swaps(now)
        self._check_handoffs(now)
        self._check_side(now)
        self._reap_retired()
        for cid, (client, client_id, deadline, _worker) in list(self._pending.items()):
            if now > deadline:
                del self._pending[cid]
                self.server.send(client, Reply(client_id, False, error="the worker did not answer in time"))

    def _publish(self, kind: str, **data) -> None:
        if self.server is not None:
            self.server.publish(kind, **data)
        if self.on_event is not None:
            try:
                self.on_event(kind, data)
            except Exception:
                log.exception("event display failed")

    def status(self) -> dict:
        """`workers`: one row per configured worker (its serving generation). `side_workers`:
        the processes beside them — a swap's new generation while it starts (`role` swap, with
        its `progress`), A/B variant B and the comparer; `swaps`: the swaps in progress."""
        now = time.monotonic()
        workers = [self._row(ws) for ws in self.workers.values()]
        side = [self._row(c) for c, *_ in self._swaps.values()] + [self._row(ws) for ws in self._side.values()]
        swaps = [{"worker": n, "generation": c.generation, "phase": "starting", "state": c.state,
                  "progress": c.progress, "seconds": round(now - t0, 2)} for n, (c, _, _, t0) in self._swaps.items()]
        swaps += [{"worker": n, "generation": h.new.generation, "phase": "handing over", "state": h.new.state,
                   "progress": "", "seconds": round(now - h.t0, 2)} for n, h in self._handoffs.items()]
        return {"run_id": self.run_dir.run_id if self.run_dir else None, "pid": os.getpid(),
                "state": self.state, "uptime_s": round(now - self.started, 2),
                "source": str(self.cfg.source.spec) if len(self.cfg.streams) <= 1
                else ", ".join(f"{s.name}={s.source.spec}" for s in self.cfg.streams),
                "streams": [s.name for s in self.cfg.streams],
                "every_frame": bool(self.cfg.source.every_frame),
                "workers": workers, "side_workers": side,
                "swaps": swaps, "ab": {"worker": self._ab["worker"], "changes": self._ab["changes"]}
                if self._ab else None}

    def _row(self, ws: WorkerState) -> dict:
        s = ws.stats
        return {
            "name": ws.name, "module": ws.cfg.module, "pid": ws.pid if ws.alive() else None,
            "generation": ws.generation, "state": ws.state, "restarts": ws.total_restarts,
            "fps": s.get("fps", 0.0), "p50_ms": s.get("p50_ms", 0.0), "p99_ms": s.get("p99_ms", 0.0),
            "frames_in": s.get("frames_in", 0), "frames_out": s.get("frames_out", 0),
            "drops": s.get("drops", 0), "overruns": s.get("overruns", 0),
            "skipped": s.get("skipped", 0),
            "cpu_percent": s.get("cpu_percent", 0.0), "rss_bytes": s.get("rss_bytes", 0),
            "info": ws.info, "extras": {k: v for k, v in s.items() if k not in _STAT_KEYS},
            "role": ws.role, "progress": ws.progress, "threads": ws.threads,
            "starting_s": round(time.monotonic() - ws.started_at, 1) if ws.state == "starting" else None,
        }


def main() -> int:
    """Detached mode: the resolved config (plain JSON) arrives on stdin."""
    from pipeline.config import ConfigError, validate

    logging.basicConfig(level=os.environ.get("POSEPIPE_LOG_LEVEL", "INFO").upper(),
                        format="%(asctime)s supervisor %(levelname)s %(name)s: %(message)s")
    try:
        cfg = validate(json.loads(sys.stdin.read()))
    except (ValueError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sup = Supervisor(cfg)
    code = sup.run()
    if sup.error:
        print(f"error: {sup.error}", file=sys.stderr)
    return code
