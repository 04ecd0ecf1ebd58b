"""Make-before-break swap (`swap <worker> key=value...`): a new generation with the changed
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
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from pipeline.runtime.messages import Command, Reply
from pipeline.runtime.supervisor.state import WorkerState, _log_tail

log = logging.getLogger(__name__)


class Swaps:
    """Make-before-break swaps (mixed into `Supervisor`)."""

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

        from pipeline.config import (
            ConfigError,
            SourceConfig,
            build_dataclass,
            deep_merge,
            load_worker_class,
        )

        changes = copy.deepcopy(changes)
        shared = None
        source_keys = {k: changes.pop(k) for k in _SOURCE_KEYS if k in changes} if ws.cfg.input is None else {}
        try:
            if source_keys:
                src = self._stream_of(ws).source
                raw = {"spec": src.spec, "options": dict(src.options), "at_end": src.at_end}
                if "source" in source_keys:
                    # Options belong to a kind of source (width/fps of `sample`, ...): a new
                    # source starts from none unless they are given with it.
                    raw.update(spec=source_keys["source"], options={})
                raw.update({k: v for k, v in source_keys.items() if k in ("at_end", "options")})
                new_src = build_dataclass(SourceConfig, raw, "source")
                shared = {**self._shared(ws), "source": {"spec": new_src.spec, "options": new_src.options,
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
            if h.new.cfg.input is None and h.new.shared is not None and "source" in h.new.shared:
                self._adopt_source(h.new, h.new.shared["source"])
            del self._handoffs[name]
            result = {"worker": name, "old_generation": h.old.generation, "generation": h.new.generation,
                      "ready_s": round(h.t_ready - h.t0, 3), "seconds": round(now - h.t0, 3),
                      "handoff_s": round(now - h.t_ready, 3)}
            if h.client is not None:
                self.server.send(h.client, Reply(h.cid, True, result))
            self._publish("swapped", **result)

    def _stream_of(self, ws: WorkerState):
        """The stream a source worker captures (capture.<stream>, or the one stream)."""
        return self.cfg.streams[ws.cfg.stream if ws.cfg.stream is not None else 0]

    def _adopt_source(self, ws: WorkerState, source: dict) -> None:
        from pipeline.config import SourceConfig

        stream = self._stream_of(ws)
        old = stream.source
        stream.source = SourceConfig(spec=source["spec"], options=source["options"], at_end=source["at_end"],
                                     every_frame=old.every_frame)
        if stream.index == 0:
            self.cfg.source = stream.source
        self.workers[ws.name].shared = None  # restarts open the new source through _shared()


# Workers that cannot run two generations side by side, and why.
_NO_LIVE_SWAP = {
    "workers.publisher": "its sinks bind fixed ports (native stream, viewer) that a second generation cannot "
                         "bind beside the first; change them with `pipeline set publisher ...` or restart",
    "workers.metrics": "it binds the Prometheus port, which a second generation cannot bind beside the first; "
                       "restart the pipeline to change its settings",
}


_SOURCE_KEYS = ("source", "at_end", "options")   # `swap capture` keys that change the source


@dataclass
class _Handoff:
    new: WorkerState
    old: WorkerState
    ring: object            # the output Ring, or None
    client: bytes | None
    cid: int
    t0: float               # command received
    t_ready: float          # new generation ready; hand-over started

