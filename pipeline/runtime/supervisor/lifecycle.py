"""Process lifecycle: spawn a worker generation, stop groups of workers, shut the run down.

Each worker is a fresh interpreter (`python -m pipeline.runtime.runner '<spec json>'`, never a
fork of the supervisor) in its own session; each spawn bumps the worker's generation and, unless
it is the first half of a swap, makes that generation the owner of its output ring so stale
writers of an older generation can never write again. Shutdown stops capture first, drains,
stops the rest (control `stop`, then SIGTERM, then SIGKILL after the grace period), unlinks
every ring and removes the run directory.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time

import numpy as np

from pipeline.runtime import cpu
from pipeline.runtime.control import TOKEN_ENV
from pipeline.runtime.messages import Command
from pipeline.runtime.supervisor.state import (
    REPO_ROOT,
    StartError,
    WorkerState,
    _log_tail,
)

log = logging.getLogger(__name__)


class Lifecycle:
    """Starting and stopping worker processes (mixed into `Supervisor`)."""

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
        ws.stats, ws.fatal, ws.finished, ws.exit_code, ws.progress = {}, "", "", None, ""
        out_ring = self.rings.get(ws.cfg.output) if ws.cfg.output else None
        if out_ring is not None and take_output:
            out_ring.set_owner(ws.generation)
        spec = {
            "name": ws.name, "module": ws.cfg.module, "generation": ws.generation,
            "control": self.server.endpoints["router"], "parent_pid": os.getpid(),
            "rings": {n: r.shm_name for n, r in self.rings.items()},
            "input": ws.cfg.input, "policy": ws.cfg.policy, "output": ws.cfg.output,
            "reads": list(ws.cfg.reads), "params": ws.cfg.params or {},
            "shared": ws.shared if ws.shared is not None else self._shared(ws),
            **({"inputs": list(ws.cfg.inputs)} if ws.cfg.inputs else {}),
            **ws.spec_extra,
        }
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        env.setdefault("POSEPIPE_LOG_LEVEL", "INFO")
        # Thread pools are sized (and told not to spin) when their libraries load: before the
        # worker imports anything, so through its environment (pipeline/runtime/cpu.py).
        ws.threads = self._cpu_threads(ws)
        env.update(cpu.worker_env(ws.threads, self.cfg.cpu.spin))
        env[TOKEN_ENV] = self.server.token  # the environment, not argv: /proc/<pid>/environ is private
        ws.log_path = self.run_dir.path / f"{ws.name}.log"
        with open(ws.log_path, "ab") as logf:
            # A new session: Ctrl-C in the terminal reaches only the supervisor, which then stops
            # the workers in order. PR_SET_PDEATHSIG in the runner covers a killed supervisor.
            ws.proc = subprocess.Popen([sys.executable, "-m", "pipeline.runtime.runner", json.dumps(spec)],
                                       stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, env=env,
                                       start_new_session=True, close_fds=True)
        ws.started_at = ws.last_seen = time.monotonic()
        log.info("spawned %s generation %d pid %d", ws.name, ws.generation, ws.proc.pid)

    def _cpu_threads(self, ws: WorkerState) -> int:
        """This worker's threads: cpu.threads.<name>, else the budget for its cpu_role."""
        from pipeline.config import load_worker_class

        c = self.cfg.cpu
        if ws.name in c.threads:
            return int(c.threads[ws.name])
        base = ws.name.split(".", 1)[0]  # capture.<stream>: the setting for capture
        if base in c.threads:
            return int(c.threads[base])
        cores = cpu.machine_cores() if c.cores == "auto" else int(c.cores)
        role = getattr(load_worker_class(ws.cfg.module, f"workers.{ws.name}"), "cpu_role", "light")
        return cpu.threads_for(role, cores)

    def _shared(self, ws: WorkerState | None = None) -> dict:
        """Pipeline-wide settings for a worker; a per-stream worker (capture.<stream>) gets its
        stream's source and index."""
        c = self.cfg
        stream = c.streams[ws.cfg.stream] if ws is not None and ws.cfg.stream is not None else c.streams[0]
        src = stream.source
        return {"source": {"spec": src.spec, "options": src.options, "at_end": src.at_end},
                "stream": stream.index, "streams": [s.name for s in c.streams],
                "sinks": c.sinks, "max_persons": c.rings.max_persons, "run_id": self.run_dir.run_id,
                "every_frame": bool(c.source.every_frame),
                "data_dir": c.data_dir, "output_dir": c.output_dir}

    def _kill(self, ws: WorkerState) -> None:
        if ws.alive():
            try:
                ws.proc.kill()
            except ProcessLookupError:
                pass

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

    def _shutdown(self) -> int:
        from pipeline.runtime.ring import Ring

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
            if self.cfg.source.every_frame:
                self._drain_every_frame()               # lossless: every captured frame to the end
            else:
                self._drain(self.cfg.supervisor.drain)  # let in-flight frames reach the publisher
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

    def _drain_every_frame(self, stall_s: float = 30.0) -> None:
        """Lossless mode: wait until every consumer has done the newest item of its ring, for as
        long as the rings move (a stage stuck for `stall_s` ends the wait), then for the workers'
        final heartbeats, so the summary counts every frame (architecture.md §2)."""
        from pipeline.runtime.runner import HEARTBEAT_S

        last, last_change, quiet_since = None, time.monotonic(), None
        while True:
            now = time.monotonic()
            state, drained = [], True
            for ring in self.rings.values():
                _, done, _ = ring.members.consumers()
                newest = ring.newest_seq()
                state.append((newest, int(done.sum())))
                drained = drained and bool(np.all(done >= newest))
            if state != last:
                last, last_change, quiet_since = state, now, None
            if drained:
                quiet_since = quiet_since or now
                if now - quiet_since >= 0.3:  # a pipelined worker flushes its last item at once
                    break
            if now - last_change > stall_s:
                log.warning("every-frame drain: nothing moved for %.0f s; stopping with frames in flight", stall_s)
                break
            self._step(0.02)
        self._drain(HEARTBEAT_S + 0.2)

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
