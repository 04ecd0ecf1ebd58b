"""A/B (`ab start <worker> key=value...`): variant B of a worker whose output is `poses` runs
beside A with its own output ring `poses_b` (created on first use), and the `ab_compare`
worker pairs both by frame_id (see `pipeline.metrics.ab`). `ab stop --keep B` stops B and the
comparer, then swaps A to B's settings through the swap path above (B's process writes to
`poses_b` and cannot be promoted in place).

Same frames (architecture.md §4): B does not read the detections ring itself (two `latest`
readers would pick different frames under load). Once B is ready, A is told `set
ab_tee=<ring>` and copies every detections record it consumes into the tee ring
`detections_ab`; B reads that ring with policy `next`. A restarted A is told again. `ab status`
carries the tee's counts and each variant's process cost.
"""
from __future__ import annotations

import logging
import time

import psutil

from pipeline.runtime.messages import Command, Reply
from pipeline.runtime.supervisor.health import unhealthy
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
        try:
            if "poses_b" not in self.rings:
                self.rings["poses_b"] = Ring.create("poses_b", poses_dtype(self.cfg.rings.max_persons),
                                                    self.cfg.rings.poses.slots, self.run_dir.run_id)
            if TEE_RING not in self.rings:
                self.rings[TEE_RING] = Ring.create(TEE_RING, self.rings[ws.cfg.input].dtype, TEE_SLOTS,
                                                   self.run_dir.run_id)
        except RingError as exc:
            raise ValueError(f"cannot create the variant-B rings: {exc}") from exc
        import dataclasses

        b.cfg = dataclasses.replace(b.cfg, input=TEE_RING, policy="next", output="poses_b", restart="never")
        from pipeline.config import WorkerConfig, build_dataclass, load_worker_class

        cmp_params = {"worker": ws.name, "changes": changes}
        cmp_cls = load_worker_class("workers.ab_compare", "ab compare")
        comparer = WorkerState(AB_COMPARE, WorkerConfig(
            module="workers.ab_compare", params=cmp_params, input=None, output=None, restart="never",
            health_timeout=ws.cfg.health_timeout, start_timeout=60.0, reads=tuple(cmp_cls.reads),
            params_obj=build_dataclass(cmp_cls.Params, cmp_params, "ab compare")))
        comparer.role = "ab-compare"
        self._ab = {"worker": ws.name, "changes": changes, "b": b.name, "t0": time.monotonic(),
                    "client": client, "cid": cmd.id, "replied": False, "error": "", "last": None,
                    "tee_generation": None, "cpu0": {}, "frames0": {}}
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
            elif ws.state in ("running", "paused") and unhealthy(ws, now):
                ws.fatal = unhealthy(ws, now)
                self._kill(ws)
        ab = self._ab
        if ab is None:
            return
        a, b, comparer = self.workers[ab["worker"]], self._side.get(ab["b"]), self._side.get(AB_COMPARE)
        # The tee starts once B is ready (records from its model load would only be stale by
        # the time B reads them), and again for a restarted A.
        if (b is not None and b.state == "running" and a.state == "running"
                and ab["tee_generation"] != a.generation):
            self._ab_tee(a, on=True)
        if ab["replied"]:
            return
        failed = [w for w in (b, comparer) if w is not None and w.state == "failed"]
        if failed or self._stop_requested:
            reason = "; ".join(f"{w.name}: {w.fatal}" for w in failed) or "the pipeline is stopping"
            self._ab_end()
            self.server.send(ab["client"], Reply(ab["cid"], False, error=f"A/B start of {ab['worker']} failed; "
                                                                         f"A keeps running: {reason}"))
            return
        if b.state == "running" and comparer.state == "running":
            ab["replied"] = True
            ab["cpu0"] = {v: _cpu_seconds(w) for v, w in (("A", a), ("B", b))}
            seen = (comparer.stats.get("ab") or {})
            ab["frames0"] = {v: (seen.get(v) or {}).get("frames", 0) for v in ("A", "B")}
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
                "seconds": round(time.monotonic() - ab["t0"], 2), "comparison": comparison,
                "tee": {"ring": TEE_RING, "written": a.stats.get("ab_tee_written"),
                        "b_stale": b.stats.get("stale_frames") if b else None,
                        "b_overruns": b.stats.get("overruns") if b else None},
                "cost": {v: self._ab_cost(v, w, comparison) for v, w in (("A", a), ("B", b)) if w is not None}}

    def _ab_cost(self, variant: str, ws: WorkerState, comparison: dict | None) -> dict:
        """What running this variant costs: its process's CPU (now, and CPU time per frame since
        B was ready), memory and, when it reports them, GPU memory and NVML's per-process SM share."""
        s = ws.stats
        cost = {k: s.get(k) for k in ("cpu_percent", "rss_bytes", "gpu_mem_bytes", "gpu_proc_util_percent")}
        cpu0, now_cpu = self._ab["cpu0"].get(variant), _cpu_seconds(ws)
        frames = ((comparison or {}).get(variant) or {}).get("frames", 0) - self._ab["frames0"].get(variant, 0)
        if cpu0 is not None and now_cpu is not None:
            cost["cpu_s"] = round(now_cpu - cpu0, 3)
            if frames > 0:
                cost["cpu_ms_per_frame"] = round((now_cpu - cpu0) * 1000.0 / frames, 2)
        return cost

    def _ab_record(self, client: bytes, cmd: Command, args: dict) -> None:
        cost = self._ab_status()["cost"]  # raises when none runs
        path = args.get("csv")
        if not isinstance(path, str) or not path:
            raise ValueError("ab record needs csv=PATH")
        self._forward(client, Command(cmd.id, "set", {}), {"worker": AB_COMPARE, "key": "record",
                                                            "value": {"csv": path, "cost": cost}})

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

    def _ab_tee(self, a: WorkerState, on: bool) -> None:
        """Tell A to start (or stop) copying the detections it consumes into the tee ring. Its
        reply carries no client; A reports `ab_tee_written` in its heartbeat."""
        if a.identity is None or not a.alive():
            return
        value = self.rings[TEE_RING].shm_name if on else ""
        self.server.send(a.identity, Command(0, "set", {"key": "ab_tee", "value": value}))
        if self._ab is not None:
            self._ab["tee_generation"] = a.generation if on else None

    def _ab_end(self) -> None:
        if self._ab is not None:
            self._ab_tee(self.workers[self._ab["worker"]], on=False)
        for ws in list(self._side.values()):
            if ws.alive():
                self._retire(ws)
            ws.state = "stopped" if ws.state != "failed" else ws.state
        self._side.clear()
        self._ab = None


AB_SUFFIX = ".b"
TEE_RING = "detections_ab"
TEE_SLOTS = 64   # small records; B may lag this many of A's frames before it loses one


def _cpu_seconds(ws: WorkerState) -> float | None:
    try:
        t = psutil.Process(ws.pid).cpu_times()
    except (psutil.Error, TypeError, ValueError):
        return None
    return t.user + t.system


AB_COMPARE = "ab_compare"

