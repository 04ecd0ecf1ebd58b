"""The supervisor (DESIGN §4): owns the rings and the control sockets, starts the workers in
data-flow order, watches them and restarts them by policy, and shuts everything down cleanly.

Used in-process by `pipeline start` (foreground) and as ``python -m pipeline.supervisor``
(``--detach``; the resolved config arrives as JSON on stdin).

Life of a worker: ``starting`` (spawned; `start_timeout` runs until `ready`) -> ``running``
(`health_timeout` of silence gets it SIGKILLed) -> on exit: ``restarting`` (policy allows,
delay = restart_delay * 2^(restarts in window), capped) or ``failed``/``stopped``/``finished``.
Each spawn bumps the worker's generation; the ring owner is set to it so stale writers of an
older generation can never write again.

Make-before-break swap (`swap <worker> key=value...`): a new generation with the changed
params starts beside the running one and reads the same input, but cannot write (the output
ring's owner is still the old generation). When it says `ready` (models loaded, warmed up)
the hand-over starts: the ring's owner is cleared (-1) and the old generation is told to
stop. It finishes the item in flight (that result is still published), leaves its loop and
releases the writer token; the new generation, which has been processing the same input all
along, claims the token with its next result. The supervisor then sets the owner to the new
generation (or, when the old one had to be killed, its dead pid frees the token) and answers
the command. The ring refuses a frame_id that is not newer, so nothing is published twice,
and each record is written by exactly one generation. If the new generation fails to become
ready (bad settings, crash, start_timeout) it is killed and the old one keeps running,
untouched. Only one swap or A/B transition runs at a time.

`swap capture source=SPEC [at_end=...] [options={...}]` swaps the source itself: the new
capture opens it beside the old one (a file, stream or other camera; the same webcam cannot
be opened twice, so that swap fails and the old capture keeps running). The frames ring is
not re-created: it is sized for `rings.frames.max_height/max_width` and capture downscales
larger frames to fit (aspect kept); every record carries its own height/width.

Workers that bind fixed ports (publisher: native stream and viewer; metrics: Prometheus)
cannot run two generations side by side and refuse a swap with that reason.

A/B (`ab start <worker> key=value...`): variant B of a worker whose output is `poses` runs
beside A with its own output ring `poses_b` (created on first use), and the `ab_compare`
worker pairs both by frame_id (see `pipeline.ab`). `ab stop --keep B` stops B and the
comparer, then swaps A to B's settings through the swap path above (B's process writes to
`poses_b` and cannot be promoted in place).
"""
from __future__ import annotations

import collections
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import rundir
from pipeline.config import PipelineConfig, WorkerConfig
from pipeline.control import ControlServer, make_endpoints
from pipeline.messages import Bye, Command, Event, Heartbeat, Hello, Ready, Reply

log = logging.getLogger(__name__)

EXIT_SETUP = 78
REPO_ROOT = Path(__file__).resolve().parent.parent


class StartError(RuntimeError):
    """The pipeline could not start; the message names the worker and the reason."""


@dataclass
class WorkerState:
    name: str
    cfg: WorkerConfig
    generation: int = 0
    state: str = "pending"
    proc: subprocess.Popen | None = None
    identity: bytes | None = None
    started_at: float = 0.0
    ready_at: float = 0.0
    last_seen: float = 0.0
    stats: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    restarts: collections.deque = field(default_factory=collections.deque)  # restart times
    total_restarts: int = 0
    next_restart_at: float = 0.0
    exit_code: int | None = None
    fatal: str = ""
    finished: str = ""
    log_path: Path | None = None
    last_hb_frames: tuple = (0.0, 0)
    progress: str = ""              # last `progress` event (model loading, warm-up)
    role: str = ""                  # "" | "swap" (candidate) | "ab-b" | "ab-compare"
    shared: dict | None = None      # pipeline-wide settings for this process (capture source swap)
    spec_extra: dict = field(default_factory=dict)  # spec overrides (side workers' rings)

    @property
    def pid(self):
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Supervisor:
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
        self._pending: dict = {}        # forwarded command id -> (client identity, client cmd id, deadline)
        self._next_cmd = 1
        self._unclean: list[str] = []
        self._generations: dict = {}    # worker name -> last generation handed out
        self._swaps: dict = {}          # worker name -> (candidate WorkerState, client, cmd id, t0)
        self._handoffs: dict = {}       # worker name -> _Handoff while the old generation lets go
        self._retiring: list = []       # (WorkerState, SIGKILL deadline) of swapped-out generations
        self._side: dict = {}           # name -> WorkerState of A/B processes (variant B, comparer)
        self._ab: dict | None = None    # the running A/B test (see _ab_start)

    # ---- entry point ----------------------------------------------------------------------------
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

    # ---- set-up ---------------------------------------------------------------------------------
    def _prepare(self) -> None:
        from pipeline.records import detections_dtype, frames_dtype, poses_dtype
        from pipeline.ring import Ring, RingError

        rundir.cleanup_stale()
        self.run_dir = rundir.RunDir.create()
        self.run_dir.write_pid()
        r = self.cfg.rings
        dtypes = {
            "frames": (frames_dtype(r.frames.max_height, r.frames.max_width), r.frames.slots),
            "detections": (detections_dtype(r.max_persons), r.detections.slots),
            "poses": (poses_dtype(r.max_persons), r.poses.slots),
            "published": (poses_dtype(r.max_persons), r.published.slots),
        }
        used = set()
        for wc in self.cfg.enabled_workers().values():
            used.update(x for x in (wc.input, wc.output, *wc.reads) if x)
        try:
            for name in (n for n in dtypes if n in used):
                dtype, slots = dtypes[name]
                self.rings[name] = Ring.create(name, dtype, slots, self.run_dir.run_id)
        except RingError as exc:
            raise StartError(str(exc)) from exc
        endpoints = make_endpoints(self.run_dir, self.cfg.control.transport, self.cfg.control.host)
        self.server = ControlServer(endpoints)
        self.run_dir.write_control(self.server.endpoints)
        self.run_dir.make_current()
        self.state = "starting"
        log.info("run %s: rings %s, control %s", self.run_dir.run_id, sorted(self.rings), self.server.endpoints["router"])

    def _start_all(self) -> None:
        for ws in self.workers.values():
            self._spawn(ws)
            while ws.state == "starting":
                self._step(0.05)
                if self._stop_requested:
                    raise StartError(f"stopped while starting {ws.name} ({self.stop_reason})")
            if ws.state != "running":
                reason = ws.fatal or f"exited with code {ws.exit_code}" + _log_tail(ws.log_path)
                raise StartError(f"worker {ws.name} ({ws.cfg.module}) could not start: {reason}")

    def _spawn(self, ws: WorkerState, take_output: bool = True) -> None:
        """Start the next generation of `ws`; `take_output=False` leaves the output ring's
        writer token with the current owner (the first half of a swap)."""
        self._generations[ws.name] = ws.generation = self._generations.get(ws.name, 0) + 1
        ws.state = "starting"
        ws.identity = None
        ws.stats, ws.fatal, ws.finished, ws.exit_code = {}, "", "", None
        out_ring = self.rings.get(ws.cfg.output) if ws.cfg.output else None
        if out_ring is not None and take_output:
            out_ring.set_owner(ws.generation)
        spec = {
            "name": ws.name, "module": ws.cfg.module, "generation": ws.generation,
            "control": self.server.endpoints["router"], "parent_pid": os.getpid(),
            "rings": {n: r.shm_name for n, r in self.rings.items()},
            "input": ws.cfg.input, "policy": ws.cfg.policy, "output": ws.cfg.output,
            "reads": list(ws.cfg.reads), "params": ws.cfg.params or {},
            "shared": ws.shared if ws.shared is not None else self._shared(),
            **ws.spec_extra,
        }
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        env.setdefault("POSEPIPE_LOG_LEVEL", "INFO")
        ws.log_path = self.run_dir.path / f"{ws.name}.log"
        with open(ws.log_path, "ab") as logf:
            # A new session: Ctrl-C in the terminal reaches only the supervisor, which then stops
            # the workers in order. PR_SET_PDEATHSIG in the runner covers a killed supervisor.
            ws.proc = subprocess.Popen([sys.executable, "-m", "pipeline.runner", json.dumps(spec)],
                                       stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, env=env,
                                       start_new_session=True, close_fds=True)
        ws.started_at = ws.last_seen = time.monotonic()
        log.info("spawned %s generation %d pid %d", ws.name, ws.generation, ws.proc.pid)

    def _shared(self) -> dict:
        c = self.cfg
        return {"source": {"spec": c.source.spec, "options": c.source.options, "at_end": c.source.at_end},
                "sinks": c.sinks, "max_persons": c.rings.max_persons, "run_id": self.run_dir.run_id}

    # ---- main loop ------------------------------------------------------------------------------
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
        for cid, (client, client_id, deadline) in list(self._pending.items()):
            if now > deadline:
                del self._pending[cid]
                self.server.send(client, Reply(client_id, False, error="the worker did not answer in time"))

    def _check_worker(self, ws: WorkerState, now: float) -> None:
        if ws.proc is not None and ws.proc.poll() is not None and ws.state in ("starting", "running", "paused"):
            ws.exit_code = ws.proc.returncode
            self._on_exit(ws, now)
            return
        if ws.state == "starting" and now - ws.started_at > ws.cfg.start_timeout:
            ws.fatal = ws.fatal or f"no `ready` within start_timeout={ws.cfg.start_timeout:g} s"
            log.warning("%s: %s; killing it", ws.name, ws.fatal)
            self._kill(ws)
        elif ws.state in ("running", "paused") and now - ws.last_seen > ws.cfg.health_timeout:
            log.warning("%s (pid %s) silent for %.1f s (health_timeout); killing it", ws.name, ws.pid,
                        now - ws.last_seen)
            self._publish("unhealthy", worker=ws.name, generation=ws.generation)
            self._kill(ws)
            ws.last_seen = now
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

    def _kill(self, ws: WorkerState) -> None:
        if ws.alive():
            try:
                ws.proc.kill()
            except ProcessLookupError:
                pass

    # ---- messages -------------------------------------------------------------------------------
    def _worker_for(self, identity: bytes, name: str, generation: int) -> WorkerState | None:
        ws = self.workers.get(name) or self._side.get(name)
        if name in self._swaps and self._swaps[name][0].generation == generation:
            ws = self._swaps[name][0]
        if ws is None or generation != ws.generation:
            return None  # a message from an older generation or an unknown worker
        if ws.identity is None:
            # Only the process we spawned may claim a new generation (WorkerLink's identity is
            # w:<name>:<generation>:<pid>); else any client speaking first could take it over
            # and the real worker would be ignored until killed (found by control fuzzing).
            if ws.proc is None or identity != f"w:{name}:{generation}:{ws.proc.pid}".encode():
                return None
            ws.identity = identity
        return ws if ws.identity == identity else None

    def _handle(self, identity: bytes, msg) -> None:
        now = time.monotonic()
        if isinstance(msg, Command):
            self._command(identity, msg)
            return
        if isinstance(msg, Reply):
            pending = self._pending.pop(msg.id, None)
            if pending is not None:
                self.server.send(pending[0], Reply(pending[1], msg.ok, msg.result, msg.error))
            return
        if isinstance(msg, Event):
            self._worker_event(identity, msg)
            return
        name, gen = getattr(msg, "name", None), getattr(msg, "generation", None)
        ws = self._worker_for(identity, name, gen)
        if ws is None:
            log.debug("ignored %s from %r", type(msg).__name__, identity)
            return
        ws.last_seen = now
        if isinstance(msg, Hello):
            log.debug("%s hello pid %d", name, msg.pid)
        elif isinstance(msg, Ready):
            ws.info = msg.info
            ws.ready_at = now
            if ws.state == "starting":
                ws.state = "running"
            log.info("%s generation %d ready after %.2f s", name, gen, now - ws.started_at)
            self._publish("ready", worker=name, generation=gen, info=msg.info)
        elif isinstance(msg, Heartbeat):
            stats = msg.stats
            ws.stats = {"frames_in": stats.frames_in, "frames_out": stats.frames_out, "drops": stats.drops,
                        "overruns": stats.overruns, "p50_ms": stats.p50_ms, "p99_ms": stats.p99_ms,
                        "cpu_percent": stats.cpu_percent, "rss_bytes": stats.rss_bytes, **stats.extras}
        elif isinstance(msg, Bye):
            log.debug("%s bye: %s", name, msg.reason)

    def _worker_event(self, identity: bytes, ev: Event) -> None:
        name, gen = ev.data.get("worker"), ev.data.get("generation")
        ws = self._worker_for(identity, name, gen) if isinstance(name, str) and isinstance(gen, int) else None
        if ws is None:
            return
        ws.last_seen = time.monotonic()
        if ev.kind == "fatal":
            ws.fatal = str(ev.data.get("error", "unknown error"))
        elif ev.kind == "progress":
            ws.progress = str(ev.data.get("message", ""))[:200]
        elif ev.kind == "finished":
            ws.finished = str(ev.data.get("reason", "done"))
        self._publish(ev.kind, **ev.data)

    def _command(self, identity: bytes, cmd: Command) -> None:
        args = cmd.args if isinstance(cmd.args, dict) else {}
        try:
            if cmd.cmd == "status":
                result = self.status()
            elif cmd.cmd == "stop":
                self.request_stop("stop command")
                result = {"state": "stopping"}
            elif cmd.cmd in ("set", "pause", "resume"):
                self._forward(identity, cmd, args)
                return
            elif cmd.cmd == "swap":
                self._start_swap(identity, cmd, args)
                return
            elif cmd.cmd in ("ab_start", "ab_stop"):
                (self._ab_start if cmd.cmd == "ab_start" else self._ab_stop)(identity, cmd, args)
                return
            elif cmd.cmd == "ab_status":
                result = self._ab_status()
            elif cmd.cmd == "ab_record":
                self._ab_record(identity, cmd, args)
                return
            elif cmd.cmd == "ping":
                result = {"pid": os.getpid()}
            else:
                raise ValueError(f"unknown command {cmd.cmd!r}; known: status, stop, set, pause, resume, swap, "
                                 f"ab_start, ab_status, ab_record, ab_stop, ping")
        except ValueError as exc:
            self.server.send(identity, Reply(cmd.id, False, error=str(exc)))
            return
        self.server.send(identity, Reply(cmd.id, True, result))

    def _forward(self, client: bytes, cmd: Command, args: dict) -> None:
        name = args.get("worker")
        ws = (self.workers.get(name) or self._side.get(name)) if isinstance(name, str) else None
        if ws is None:
            raise ValueError(f"unknown worker {name!r}; running: {', '.join([*self.workers, *self._side])}")
        if ws.identity is None or ws.state not in ("running", "paused"):
            raise ValueError(f"worker {name} is {ws.state}; try again when it is running")
        fid = self._next_cmd
        self._next_cmd += 1
        self._pending[fid] = (client, cmd.id, time.monotonic() + 5.0)
        if cmd.cmd in ("pause", "resume"):
            ws.state = "paused" if cmd.cmd == "pause" else "running"
        self.server.send(ws.identity, Command(fid, cmd.cmd, {k: v for k, v in args.items() if k != "worker"}))

    # ---- make-before-break swap -----------------------------------------------------------------
    def _busy(self) -> str:
        """What swap/A-B transition is in progress ("" when none): only one at a time."""
        now = time.monotonic()
        for name, (cand, *_rest, t0) in self._swaps.items():
            what = f", {cand.progress}" if cand.progress else ""
            return (f"a swap of {name} to generation {cand.generation} is in progress "
                    f"({now - t0:.1f} s, {cand.state}{what})")
        for name, h in self._handoffs.items():
            return f"a swap of {name} is handing over from generation {h.old.generation} to {h.new.generation}"
        if self._ab is not None and not self._ab["replied"]:
            return f"an A/B start of {self._ab['worker']} is in progress ({now - self._ab['t0']:.1f} s)"
        return ""

    def _worker_to_change(self, args: dict, verb: str) -> tuple[WorkerState, dict]:
        name, changes = args.get("worker"), args.get("params", {})
        ws = self.workers.get(name) if isinstance(name, str) else None
        if ws is None:
            raise ValueError(f"unknown worker {name!r}; running: {', '.join(self.workers)}")
        if not isinstance(changes, dict):
            raise ValueError(f"{verb} params must be a mapping of key -> value")
        refused = _NO_LIVE_SWAP.get(ws.cfg.module)
        if refused:
            raise ValueError(f"{name} ({ws.cfg.module}) cannot be swapped live: {refused}")
        busy = self._busy()
        if busy:
            raise ValueError(f"{verb} of {name} refused: {busy}; wait for it to finish")
        if ws.state != "running":
            raise ValueError(f"worker {name} is {ws.state}; a {verb} needs it running")
        return ws, changes

    def _candidate(self, ws: WorkerState, changes: dict, role: str, name: str | None = None) -> WorkerState:
        """A validated WorkerState for `ws` with `changes` merged into its params (not spawned)."""
        import copy
        import dataclasses

        from pipeline.config import ConfigError, SourceConfig, build_dataclass, deep_merge, load_worker_class

        changes = copy.deepcopy(changes)
        shared = None
        source_keys = {k: changes.pop(k) for k in _SOURCE_KEYS if k in changes} if ws.cfg.input is None else {}
        try:
            if source_keys:
                src = self.cfg.source
                raw = {"spec": src.spec, "options": dict(src.options), "at_end": src.at_end}
                if "source" in source_keys:
                    # Options belong to a kind of source (width/fps of `sample`, ...): a new
                    # source starts from none unless they are given with it.
                    raw.update(spec=source_keys["source"], options={})
                raw.update({k: v for k, v in source_keys.items() if k in ("at_end", "options")})
                new_src = build_dataclass(SourceConfig, raw, "source")
                shared = {**self._shared(), "source": {"spec": new_src.spec, "options": new_src.options,
                                                       "at_end": new_src.at_end}}
            params = deep_merge(copy.deepcopy(ws.cfg.params or {}), changes)
            cls = load_worker_class(ws.cfg.module, f"workers.{ws.name}")
            params_obj = build_dataclass(cls.Params, params, f"workers.{ws.name}.params")
        except ConfigError as exc:
            text = str(exc)
            if ws.cfg.input is None and "is not a known key" in text:
                text += f" (and for the source: {', '.join(_SOURCE_KEYS)})"
            raise ValueError(text) from exc
        cand = WorkerState(name or ws.name, dataclasses.replace(ws.cfg, params=params, params_obj=params_obj))
        cand.role, cand.shared = role, shared
        return cand

    def _start_swap(self, client: bytes, cmd: Command, args: dict) -> None:
        ws, changes = self._worker_to_change(args, "swap")
        if self._ab is not None and self._ab["worker"] == ws.name:
            raise ValueError(f"an A/B test of {ws.name} is running; end it first with `pipeline ab stop "
                             f"[--keep A|B]` (--keep B swaps to B's settings)")
        cand = self._candidate(ws, changes, "swap")
        cand.generation = ws.generation
        self._swaps[ws.name] = (cand, client, cmd.id, time.monotonic())
        self._spawn(cand, take_output=False)
        self._publish("swap_started", worker=ws.name, generation=cand.generation, params=changes)

    def _check_swaps(self, now: float) -> None:
        for name, (cand, client, cid, t0) in list(self._swaps.items()):
            old = self.workers[name]
            if cand.state == "running" and old.state in ("running", "paused") and not self._stop_requested:
                # Ready. Clear the owner: the old generation keeps the token until it has
                # published its item in flight and left its loop; then the new one claims it.
                out_ring = self.rings.get(cand.cfg.output) if cand.cfg.output else None
                if out_ring is not None:
                    out_ring.set_owner(-1)
                cand.restarts, cand.total_restarts = old.restarts, old.total_restarts
                cand.role = ""
                self.workers[name] = cand
                del self._swaps[name]
                self._retire(old)
                self._handoffs[name] = _Handoff(cand, old, out_ring, client, cid, t0, now)
                continue
            failed = cand.proc.poll() is not None
            if not failed and now - cand.started_at > cand.cfg.start_timeout:
                cand.fatal = cand.fatal or f"no `ready` within start_timeout={cand.cfg.start_timeout:g} s"
                failed = True
            if failed or old.state not in ("running", "paused") or self._stop_requested:
                if not failed:
                    reason = "the pipeline is stopping" if self._stop_requested else f"{name} is {old.state}"
                else:
                    reason = cand.fatal or (f"exited with code {cand.proc.poll()}" + _log_tail(cand.log_path))
                self._kill(cand)
                if cand.proc is not None:
                    cand.proc.wait(5)
                del self._swaps[name]
                self.server.send(client, Reply(cid, False, error=f"swap of {name} failed; generation "
                                                                   f"{old.generation} keeps running: {reason}"))
                self._publish("swap_failed", worker=name, generation=cand.generation, reason=reason)

    def _check_handoffs(self, now: float) -> None:
        for name, h in list(self._handoffs.items()):
            ring = h.ring
            taken = ring is None or ring.writer_generation == h.new.generation
            if not (taken or not h.old.alive()):
                continue
            # The old generation has let go (or is dead, which frees the token): make the new
            # one the owner so a stale writer of any older generation can never write again.
            if ring is not None:
                ring.set_owner(h.new.generation)
            if h.new.name == "capture" and h.new.shared is not None:
                self._adopt_source(h.new.shared["source"])
            del self._handoffs[name]
            result = {"worker": name, "old_generation": h.old.generation, "generation": h.new.generation,
                      "ready_s": round(h.t_ready - h.t0, 3), "seconds": round(now - h.t0, 3),
                      "handoff_s": round(now - h.t_ready, 3)}
            if h.client is not None:
                self.server.send(h.client, Reply(h.cid, True, result))
            self._publish("swapped", **result)

    def _adopt_source(self, source: dict) -> None:
        from pipeline.config import SourceConfig

        self.cfg.source = SourceConfig(spec=source["spec"], options=source["options"], at_end=source["at_end"])
        self.workers["capture"].shared = None  # restarts open the new source through _shared()

    # ---- A/B ------------------------------------------------------------------------------------
    def _ab_start(self, client: bytes, cmd: Command, args: dict) -> None:
        from pipeline.records import poses_dtype
        from pipeline.ring import Ring, RingError

        if self._ab is not None:
            raise ValueError(f"an A/B test of {self._ab['worker']} is already running; `pipeline ab stop` first")
        ws, changes = self._worker_to_change(args, "A/B")
        if ws.cfg.output != "poses":
            raise ValueError(f"A/B compares pose outputs: {ws.name} writes "
                             f"{ws.cfg.output or 'nothing'!r}, which has no comparable output; run A/B on "
                             f"the worker that writes `poses` (the inference worker)")
        b = self._candidate(ws, changes, "ab-b", name=f"{ws.name}{AB_SUFFIX}")
        if "poses_b" not in self.rings:
            try:
                self.rings["poses_b"] = Ring.create("poses_b", poses_dtype(self.cfg.rings.max_persons),
                                                    self.cfg.rings.poses.slots, self.run_dir.run_id)
            except RingError as exc:
                raise ValueError(f"cannot create the variant-B ring: {exc}") from exc
        import dataclasses

        b.cfg = dataclasses.replace(b.cfg, output="poses_b", restart="never")
        from pipeline.config import WorkerConfig, build_dataclass, load_worker_class

        cmp_params = {"worker": ws.name, "changes": changes}
        cmp_cls = load_worker_class("workers.ab_compare", "ab compare")
        comparer = WorkerState(AB_COMPARE, WorkerConfig(
            module="workers.ab_compare", params=cmp_params, input=None, output=None, restart="never",
            health_timeout=ws.cfg.health_timeout, start_timeout=60.0, reads=tuple(cmp_cls.reads),
            params_obj=build_dataclass(cmp_cls.Params, cmp_params, "ab compare")))
        comparer.role = "ab-compare"
        self._ab = {"worker": ws.name, "changes": changes, "b": b.name, "t0": time.monotonic(),
                    "client": client, "cid": cmd.id, "replied": False, "error": "", "last": None}
        for side in (b, comparer):
            self._side[side.name] = side
            self._spawn(side, take_output=True)
        self._publish("ab_started", worker=ws.name, params=changes)

    def _check_side(self, now: float) -> None:
        for ws in list(self._side.values()):
            if ws.proc is not None and ws.proc.poll() is not None and ws.state in ("starting", "running", "paused"):
                ws.exit_code = ws.proc.returncode
                for identity, msg in self.server.poll(0.05):  # its last words (`fatal`)
                    self._handle(identity, msg)
                ws.fatal = ws.fatal or f"exited with code {ws.exit_code}" + _log_tail(ws.log_path)
                ws.state = "failed"
                log.warning("A/B %s (generation %d) failed: %s", ws.name, ws.generation, ws.fatal)
            elif ws.state == "starting" and now - ws.started_at > ws.cfg.start_timeout:
                ws.fatal = ws.fatal or f"no `ready` within start_timeout={ws.cfg.start_timeout:g} s"
                self._kill(ws)
            elif ws.state in ("running", "paused") and now - ws.last_seen > ws.cfg.health_timeout:
                ws.fatal = f"silent for {now - ws.last_seen:.1f} s (health_timeout)"
                self._kill(ws)
        ab = self._ab
        if ab is None or ab["replied"]:
            return
        b, comparer = self._side.get(ab["b"]), self._side.get(AB_COMPARE)
        failed = [w for w in (b, comparer) if w is not None and w.state == "failed"]
        if failed or self._stop_requested:
            reason = "; ".join(f"{w.name}: {w.fatal}" for w in failed) or "the pipeline is stopping"
            self._ab_end()
            self.server.send(ab["client"], Reply(ab["cid"], False, error=f"A/B start of {ab['worker']} failed; "
                                                                         f"A keeps running: {reason}"))
            return
        if b.state == "running" and comparer.state == "running":
            ab["replied"] = True
            self.server.send(ab["client"], Reply(ab["cid"], True, {
                "worker": ab["worker"], "variant_b": b.name, "generation": b.generation,
                "seconds": round(now - ab["t0"], 3)}))

    def _ab_status(self) -> dict:
        ab = self._ab
        if ab is None:
            raise ValueError("no A/B test is running; start one with `pipeline ab start <worker> key=value ...`")
        b, comparer = self._side.get(ab["b"]), self._side.get(AB_COMPARE)
        comparison = (comparer.stats.get("ab") if comparer is not None else None) or ab["last"]
        if comparison is not None:
            ab["last"] = comparison
        a = self.workers[ab["worker"]]
        return {"worker": ab["worker"], "changes": ab["changes"], "a_generation": a.generation,
                "b_state": b.state if b else "stopped", "b_generation": b.generation if b else None,
                "b_progress": b.progress if b else "", "b_error": b.fatal if b else "",
                "compare_state": comparer.state if comparer else "stopped",
                "seconds": round(time.monotonic() - ab["t0"], 2), "comparison": comparison}

    def _ab_record(self, client: bytes, cmd: Command, args: dict) -> None:
        self._ab_status()  # raises when none runs
        path = args.get("csv")
        if not isinstance(path, str) or not path:
            raise ValueError("ab record needs csv=PATH")
        self._forward(client, Command(cmd.id, "set", {}), {"worker": AB_COMPARE, "key": "record",
                                                            "value": {"csv": path}})

    def _ab_stop(self, client: bytes, cmd: Command, args: dict) -> None:
        keep = args.get("keep", "A")
        if keep not in ("A", "B"):
            raise ValueError(f"ab stop --keep {keep!r} — allowed: A, B")
        summary = self._ab_status()
        ab = self._ab
        if not ab["replied"]:
            raise ValueError(f"the A/B start of {ab['worker']} is still in progress; wait for it to finish")
        b = self._side.get(ab["b"])
        if keep == "B" and (b is None or b.state != "running"):
            raise ValueError(f"variant B is {b.state if b else 'stopped'}, it cannot be kept"
                             + (f": {b.fatal}" if b is not None and b.fatal else ""))
        self._ab_end()
        self._publish("ab_stopped", worker=ab["worker"], keep=keep)
        if keep == "A":
            self.server.send(client, Reply(cmd.id, True, {"kept": "A", "ab": summary}))
            return
        # B's process writes `poses_b`; promoting it means a swap of A to B's settings.
        self._start_swap(client, Command(cmd.id, "swap", {}), {"worker": ab["worker"], "params": ab["changes"]})

    def _ab_end(self) -> None:
        for ws in list(self._side.values()):
            if ws.alive():
                self._retire(ws)
            ws.state = "stopped" if ws.state != "failed" else ws.state
        self._side.clear()
        self._ab = None

    def _retire(self, ws: WorkerState) -> None:
        ws.state = "retiring"
        if ws.identity is not None:
            self.server.send(ws.identity, Command(0, "stop", {}))
        else:
            ws.proc.terminate()
        self._retiring.append((ws, time.monotonic() + self.cfg.supervisor.shutdown_grace))

    def _reap_retired(self, force: bool = False) -> None:
        now = time.monotonic()
        keep = []
        for ws, deadline in self._retiring:
            if ws.proc.poll() is not None:
                continue
            if force or now > deadline:
                ws.proc.kill()
                ws.proc.wait(5)
                continue
            keep.append((ws, deadline))
        self._retiring = keep

    def _publish(self, kind: str, **data) -> None:
        if self.server is not None:
            self.server.publish(kind, **data)
        if self.on_event is not None:
            try:
                self.on_event(kind, data)
            except Exception:
                log.exception("event display failed")

    # ---- status ---------------------------------------------------------------------------------
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
                "source": str(self.cfg.source.spec), "workers": workers, "side_workers": side,
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
            "cpu_percent": s.get("cpu_percent", 0.0), "rss_bytes": s.get("rss_bytes", 0),
            "info": ws.info, "extras": {k: v for k, v in s.items() if k not in _STAT_KEYS},
            "role": ws.role, "progress": ws.progress,
        }

    # ---- shutdown -------------------------------------------------------------------------------
    def _shutdown(self) -> int:
        from pipeline.ring import Ring

        self._stop_requested = True
        self.state = "stopping"
        grace = self.cfg.supervisor.shutdown_grace
        if self.server is None:
            for ws in self.workers.values():
                if ws.alive():
                    self._kill(ws)
        else:
            try:
                self.final_status = self.status()
            except Exception:
                self.final_status = {}
            sources = [w for w in self.workers.values() if w.cfg.input is None]
            rest = [w for w in self.workers.values() if w.cfg.input is not None] + list(self._side.values())
            self._stop_group(sources, grace)            # capture first: nothing new enters
            self._drain(self.cfg.supervisor.drain)      # let in-flight frames reach the publisher
            try:
                self.final_status = self.status()
            except Exception:
                pass
            self._stop_group(rest, grace)
            self.server.close()
        for cand, *_ in self._swaps.values():
            self._kill(cand)
            cand.proc.wait(5)
        self._swaps.clear()
        self._reap_retired(force=True)
        for ws in self.workers.values():  # a worker that never got a socket (start failure)
            if ws.alive():
                self._kill(ws)
                ws.proc.wait(5)
        for ring in self.rings.values():
            ring.close()
            ring.unlink()
        if self.run_dir is not None:
            Ring.cleanup_stale(run_id=self.run_dir.run_id)
            self.run_dir.remove()
        self.state = "stopped"
        if self._unclean:
            log.warning("did not stop cleanly: %s", "; ".join(self._unclean))
            return 1
        return 0

    def _drain(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._step(0.02)

    def _stop_group(self, group: list, grace: float) -> None:
        live = [w for w in group if w.alive()]
        for ws in live:
            if ws.identity is not None:
                self.server.send(ws.identity, Command(0, "stop", {}))
            else:
                ws.proc.terminate()
        deadline = time.monotonic() + grace
        sent_term = False
        while any(w.alive() for w in live):
            now = time.monotonic()
            if not sent_term and now > deadline - grace / 2:
                for ws in live:  # the control message may not have arrived: SIGTERM as well
                    if ws.alive():
                        ws.proc.terminate()
                sent_term = True
            if now > deadline:
                for ws in live:
                    if ws.alive():
                        self._unclean.append(f"{ws.name} needed SIGKILL")
                        ws.proc.kill()
                        ws.proc.wait(5)
                break
            self._step(0.02)
        for ws in live:
            code = ws.proc.wait(5)
            ws.state = "stopped"
            if code not in (0, -signal.SIGTERM) and f"{ws.name} needed SIGKILL" not in self._unclean:
                self._unclean.append(f"{ws.name} exited with code {code}")


# Workers that cannot run two generations side by side, and why.
_NO_LIVE_SWAP = {
    "workers.publisher": "its sinks bind fixed ports (native stream, viewer) that a second generation cannot "
                         "bind beside the first; change them with `pipeline set publisher ...` or restart",
    "workers.metrics": "it binds the Prometheus port, which a second generation cannot bind beside the first; "
                       "restart the pipeline to change its settings",
}
_SOURCE_KEYS = ("source", "at_end", "options")   # `swap capture` keys that change the source
AB_SUFFIX = ".b"
AB_COMPARE = "ab_compare"


@dataclass
class _Handoff:
    new: WorkerState
    old: WorkerState
    ring: object            # the output Ring, or None
    client: bytes | None
    cid: int
    t0: float               # command received
    t_ready: float          # new generation ready; hand-over started


_STAT_KEYS = {"frames_in", "frames_out", "drops", "overruns", "p50_ms", "p99_ms", "cpu_percent", "rss_bytes", "fps"}


def _log_tail(path: Path | None, lines: int = 3) -> str:
    if path is None:
        return ""
    try:
        tail = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()][-lines:]
    except OSError:
        return ""
    return (" — last log lines: " + " | ".join(tail)) if tail else ""


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


if __name__ == "__main__":
    sys.exit(main())
