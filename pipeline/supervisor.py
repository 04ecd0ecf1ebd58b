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
the supervisor hands it the ring with `ring.set_owner(new)`, and stops the old one. The ring
refuses a frame_id that is not newer, so nothing is published twice; the gap is at most the
new worker's next item. If the new generation fails to start, the old one keeps running.
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
        self._retiring: list = []       # (WorkerState, SIGKILL deadline) of swapped-out generations

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
            "shared": self._shared(),
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
                "sinks": c.sinks, "max_persons": c.rings.max_persons}

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
        ws = self.workers.get(name)
        if name in self._swaps and self._swaps[name][0].generation == generation:
            ws = self._swaps[name][0]
        if ws is None or generation != ws.generation:
            return None  # a message from an older generation or an unknown worker
        if ws.identity is None:
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
            elif cmd.cmd == "ping":
                result = {"pid": os.getpid()}
            else:
                raise ValueError(f"unknown command {cmd.cmd!r}; known: status, stop, set, pause, resume, swap, ping")
        except ValueError as exc:
            self.server.send(identity, Reply(cmd.id, False, error=str(exc)))
            return
        self.server.send(identity, Reply(cmd.id, True, result))

    def _forward(self, client: bytes, cmd: Command, args: dict) -> None:
        name = args.get("worker")
        ws = self.workers.get(name) if isinstance(name, str) else None
        if ws is None:
            raise ValueError(f"unknown worker {name!r}; running: {', '.join(self.workers)}")
        if ws.identity is None or ws.state not in ("running", "paused"):
            raise ValueError(f"worker {name} is {ws.state}; try again when it is running")
        fid = self._next_cmd
        self._next_cmd += 1
        self._pending[fid] = (client, cmd.id, time.monotonic() + 5.0)
        if cmd.cmd in ("pause", "resume"):
            ws.state = "paused" if cmd.cmd == "pause" else "running"
        self.server.send(ws.identity, Command(fid, cmd.cmd, {k: v for k, v in args.items() if k != "worker"}))

    # ---- make-before-break swap -----------------------------------------------------------------
    def _start_swap(self, client: bytes, cmd: Command, args: dict) -> None:
        import copy
        import dataclasses

        from pipeline.config import ConfigError, build_dataclass, deep_merge, load_worker_class

        name, changes = args.get("worker"), args.get("params", {})
        ws = self.workers.get(name) if isinstance(name, str) else None
        if ws is None:
            raise ValueError(f"unknown worker {name!r}; running: {', '.join(self.workers)}")
        if not isinstance(changes, dict):
            raise ValueError("swap params must be a mapping of key -> value")
        if ws.state != "running":
            raise ValueError(f"worker {name} is {ws.state}; a swap needs it running")
        if name in self._swaps:
            raise ValueError(f"a swap of {name} is already in progress")
        params = deep_merge(copy.deepcopy(ws.cfg.params or {}), changes)
        try:
            cls = load_worker_class(ws.cfg.module, f"workers.{name}")
            params_obj = build_dataclass(cls.Params, params, f"workers.{name}.params")
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc
        cand = WorkerState(name, dataclasses.replace(ws.cfg, params=params, params_obj=params_obj))
        cand.generation = ws.generation
        self._swaps[name] = (cand, client, cmd.id, time.monotonic())
        self._spawn(cand, take_output=False)
        self._publish("swap_started", worker=name, generation=cand.generation, params=changes)

    def _check_swaps(self, now: float) -> None:
        for name, (cand, client, cid, t0) in list(self._swaps.items()):
            old = self.workers[name]
            if cand.state == "running":  # ready: hand over the output, retire the old generation
                out_ring = self.rings.get(cand.cfg.output) if cand.cfg.output else None
                if out_ring is not None:
                    out_ring.set_owner(cand.generation)
                cand.restarts, cand.total_restarts = old.restarts, old.total_restarts
                self.workers[name] = cand
                del self._swaps[name]
                self._retire(old)
                result = {"worker": name, "old_generation": old.generation, "generation": cand.generation,
                          "seconds": round(now - t0, 3)}
                self.server.send(client, Reply(cid, True, result))
                self._publish("swapped", **result)
                continue
            failed = cand.proc.poll() is not None
            if not failed and now - cand.started_at > cand.cfg.start_timeout:
                cand.fatal = cand.fatal or f"no `ready` within start_timeout={cand.cfg.start_timeout:g} s"
                failed = True
            if failed or old.state not in ("running", "paused") or self._stop_requested:
                reason = cand.fatal or (f"exited with code {cand.proc.poll()}" + _log_tail(cand.log_path)
                                        if cand.proc.poll() is not None else f"{name} is {old.state}")
                self._kill(cand)
                if cand.proc is not None:
                    cand.proc.wait(5)
                del self._swaps[name]
                self.server.send(client, Reply(cid, False, error=f"swap of {name} failed; generation "
                                                                   f"{old.generation} keeps running: {reason}"))
                self._publish("swap_failed", worker=name, generation=cand.generation, reason=reason)

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
        workers = []
        for ws in self.workers.values():
            s = ws.stats
            workers.append({
                "name": ws.name, "module": ws.cfg.module, "pid": ws.pid if ws.alive() else None,
                "generation": ws.generation, "state": ws.state, "restarts": ws.total_restarts,
                "fps": s.get("fps", 0.0), "p50_ms": s.get("p50_ms", 0.0), "p99_ms": s.get("p99_ms", 0.0),
                "frames_in": s.get("frames_in", 0), "frames_out": s.get("frames_out", 0),
                "drops": s.get("drops", 0), "overruns": s.get("overruns", 0),
                "cpu_percent": s.get("cpu_percent", 0.0), "rss_bytes": s.get("rss_bytes", 0),
                "info": ws.info, "extras": {k: v for k, v in s.items() if k not in _STAT_KEYS},
            })
        return {"run_id": self.run_dir.run_id if self.run_dir else None, "pid": os.getpid(),
                "state": self.state, "uptime_s": round(time.monotonic() - self.started, 2),
                "source": str(self.cfg.source.spec), "workers": workers}

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
            rest = [w for w in self.workers.values() if w.cfg.input is not None]
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
