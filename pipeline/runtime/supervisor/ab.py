"""A/B (`ab start <worker> key=value...`): variant B of a worker whose output is `poses` runs
beside A with its own output ring `poses_b` (created on first use), and the `ab_compare`
worker pairs both by frame_id (see `pipeline.metrics.ab`). `ab stop --keep B` stops B and the
comparer, then swaps A to B's settings through the swap path above (B's process writes to
`poses_b` and cannot be promoted in place).
"""
from __future__ import annotations

import logging
import time

from pipeline.runtime.messages import Command, Reply
from pipeline.runtime.supervisor.state import WorkerState, _log_tail

log = logging.getLogger(__name__)


class ABTests:
    """A/B tests (mixed into `Supervisor`)."""

    def _ab_start(self, client: bytes, cmd: Command, args: dict) -> None:
        from pipeline.runtime.records import poses_dtype
        from pipeline.runtime.ring import Ring, RingError

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


AB_SUFFIX = ".b"


AB_COMPARE = "ab_compare"

