"""The control plane, in one place: every message from a worker or a client arrives here.

Workers say hello/ready/heartbeat/bye and send events; only the process the supervisor spawned
may claim a generation (identity `w:<name>:<generation>:<pid>`). Clients send commands; `set`,
`pause` and `resume` are forwarded to the worker and its reply is routed back to the client.
"""
from __future__ import annotations

import logging
import os
import time

from pipeline.runtime.messages import (
    Bye,
    Command,
    Event,
    Heartbeat,
    Hello,
    Ready,
    Reply,
)
from pipeline.runtime.supervisor.state import WorkerState

log = logging.getLogger(__name__)


class Commands:
    """Control-plane message handling (mixed into `Supervisor`)."""

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
            # Only the worker the command went to may answer it: a reply with a guessed id from
            # anyone else is dropped, and the command stays pending for the real answer.
            pending = self._pending.get(msg.id)
            if pending is None or pending[3] != identity:
                log.debug("ignored reply %r from %r: no command of that id went there", msg.id, identity)
                return
            del self._pending[msg.id]
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
                        "overruns": stats.overruns, "skipped": stats.skipped, "p50_ms": stats.p50_ms, "p99_ms": stats.p99_ms,
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
        self._pending[fid] = (client, cmd.id, time.monotonic() + 5.0, ws.identity)
        if cmd.cmd in ("pause", "resume"):
            ws.state = "paused" if cmd.cmd == "pause" else "running"
        self.server.send(ws.identity, Command(fid, cmd.cmd, {k: v for k, v in args.items() if k != "worker"}))
