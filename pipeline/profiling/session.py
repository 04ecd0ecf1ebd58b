"""A profiling session against a running pipeline: sample, collect, then write every output.

Every `interval_s` the session asks the supervisor for `status` (worker pids, generations and
heartbeat stats — re-read each time, so restarts and swaps are followed), samples those pids
with psutil (and NVML when present) and reads the ring headers' write counters. In between it
drains the `published` ring (reader policy `next`, header fields only) for the per-frame stamps.
At the end it writes, into `out_dir`:

    timeline.csv, timeline.json   samples per worker / GPU / ring over time
    trace.json                    Chrome trace of per-frame stage spans
    utilisation.png, stage_latency.png, frame_breakdown.png, plots.json
    summary.txt                   bottleneck verdict with evidence, profiler overhead
"""
from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.profiling.governor import CostGovernor
from pipeline.profiling.sampler import ProcessSampler, own_cpu_seconds
from pipeline.profiling.summary import (Bottleneck, StageLoad, find_bottleneck, heartbeat_load, latency_table,
                                        stamps_load)
from pipeline.profiling.timeline import Timeline
from pipeline.profiling.trace import FrameStamps, write_chrome_trace
from pipeline.runtime.records import STAGES

log = logging.getLogger(__name__)

RINGS = ("frames", "detections", "poses", "published")
DRAIN_S = 0.05             # how often the published ring (64 slots) is drained: 64 frames last 0.18 s at 350 fps
MAX_FRAMES = 200_000       # per-frame stamps kept (a long profile keeps the newest)
STATUS_FAILURES_TO_STOP = 3


class CostMeter:
    """CPU seconds of the profiler's own thread, per part of its work, so the overhead line can
    say where the profiler's time goes (thread_time: this thread only, not ZeroMQ's I/O thread)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def part(self, name: str):
        return _CostPart(self, name)

    def shares(self, elapsed: float) -> dict[str, float]:
        """% of one core per part over `elapsed` wall seconds."""
        return {k: 100.0 * v / elapsed for k, v in self.seconds.items()} if elapsed > 0 else {}


class _CostPart:
    def __init__(self, meter: CostMeter, name: str):
        self.meter, self.name = meter, name

    def __enter__(self):
        self.t0 = time.thread_time()

    def __exit__(self, *exc):
        self.meter.seconds[self.name] = self.meter.seconds.get(self.name, 0.0) + time.thread_time() - self.t0
        return False


class ProfileError(RuntimeError):
    """The profile cannot be taken; the message says why and what to do."""


@dataclass
class ProfileOptions:
    out_dir: Path
    interval_s: float = 0.5
    seconds: float | None = None      # None: until the pipeline stops or Ctrl-C
    per_thread: bool = True
    gpu: bool = True
    torch_profiler: int = 0           # iterations of torch profiler trace to ask the inference worker for
    plots: bool = True

    def validate(self) -> None:
        if not (isinstance(self.interval_s, (int, float)) and 0.05 <= self.interval_s <= 60):
            raise ProfileError(f"--interval must be between 0.05 and 60 s, got {self.interval_s!r}")
        if self.seconds is not None and not self.seconds > 0:
            raise ProfileError(f"--seconds must be > 0, got {self.seconds!r}")
        if self.torch_profiler < 0:
            raise ProfileError(f"--torch-profiler must be >= 0 iterations, got {self.torch_profiler}")
        self.out_dir = check_out_dir(self.out_dir)


@dataclass
class ProfileResult:
    out_dir: Path
    bottleneck: Bottleneck
    summary: str
    samples: int
    frames: int
    seconds: float
    overhead_percent: float           # profiler CPU / wall during sampling, % of one core
    gpu_note: str = ""
    files: list[str] = field(default_factory=list)


def check_out_dir(path) -> Path:
    """Create the output directory and prove it is writable, before any sampling starts."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise ProfileError(f"output path {path} exists and is not a directory; pick another --out")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ProfileError(f"cannot create output directory {path}: {exc.strerror or exc}; "
                           f"pick another --out") from exc
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise ProfileError(f"output directory {path} is not writable ({exc.strerror or exc}); "
                           f"pick another --out") from exc
    return path


class StatusSource:
    """The supervisor's `status`, via the control socket of the current run."""

    def __init__(self):
        from pipeline.runtime import rundir
        from pipeline.runtime.control import ControlClient

        try:
            self.run, endpoints = rundir.current_run()
        except rundir.NotRunning as exc:
            raise ProfileError(f"{exc} — or let the profiler start one: "
                               f"`pipeline profile --start -- <pipeline start args>`") from exc
        self.client = ControlClient.of(endpoints)

    def status(self, timeout_s: float = 1.0) -> dict:
        return self.client.request("status", timeout_s=timeout_s)

    def request(self, cmd: str, args: dict, timeout_s: float = 5.0):
        return self.client.request(cmd, args, timeout_s=timeout_s)

    def close(self) -> None:
        self.client.close()


class Profiler:
    def __init__(self, opts: ProfileOptions, source=None):
        opts.validate()
        self.opts = opts
        self.source = source or StatusSource()
        self.sampler = ProcessSampler(per_thread=opts.per_thread)
        self.gpu = None
        self.gpu_note = "GPU profiling off (--no-gpu)"
        if opts.gpu:
            from pipeline.profiling.gpu import GpuSampler

            self.gpu, reason = GpuSampler.open()
            self.gpu_note = f"profiling CPU only: {reason}" if self.gpu is None else \
                f"GPU: {', '.join(self.gpu.names)} (NVML)"
        self.frames: list[FrameStamps] = []
        self.lost_frames = 0
        self.snapshots: dict[str, list[dict]] = {}
        self.rings: dict = {}
        self.reader = None
        self.last_pids: dict[str, tuple[int | None, int]] = {}
        self.notes: list[str] = []
        self.costs = CostMeter()
        self.governor = CostGovernor()
        self._stop = False

    def stop(self) -> None:
        self._stop = True

    # ---- the loop -------------------------------------------------------------------------------
    def run(self) -> ProfileResult:
        try:
            status = self.source.status(timeout_s=3.0)
        except Exception as exc:
            raise ProfileError(f"the pipeline does not answer `status` ({exc}); is it still starting? "
                               f"try `pipeline status`") from exc
        self._attach_rings(status.get("run_id"))
        self._ask_torch_profiler()
        t0 = time.monotonic()
        timeline = Timeline(t0)
        timeline.meta = {"run_id": status.get("run_id"), "source": status.get("source"),
                         "interval_s": self.opts.interval_s, "ncores": os.cpu_count(), "gpu": self.gpu_note,
                         "started_unix": time.time()}
        cpu0 = own_cpu_seconds()
        uss0 = self.sampler.uss_cpu_s
        next_sample = t0
        ring_counts: dict[str, tuple[float, int]] = {}
        failures = 0
        n_samples = 0
        stop_reason = "time up"
        deadline = None if self.opts.seconds is None else t0 + self.opts.seconds
        try:
            while not self._stop:
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    break
                with self.costs.part("per-frame stamps"):
                    self._drain()
                if now >= next_sample:
                    try:
                        with self.costs.part("status"):
                            status = self.source.status(timeout_s=1.0)
                        failures = 0
                    except Exception as exc:
                        failures += 1
                        if failures >= STATUS_FAILURES_TO_STOP:
                            stop_reason = f"the pipeline stopped answering ({exc})"
                            break
                        next_sample = now + self.opts.interval_s
                        continue
                    if status.get("state") in ("stopping", "stopped"):
                        stop_reason = "the pipeline is stopping"
                        break
                    self._sample(timeline, status, now, ring_counts, detail=self.governor.detail_now())
                    self.governor.after_sample(time.monotonic(), own_cpu_seconds())
                    n_samples += 1
                    next_sample += self.opts.interval_s
                    if next_sample < now:  # we fell behind (suspended?): do not burst to catch up
                        next_sample = now + self.opts.interval_s
                wake = min(next_sample, time.monotonic() + DRAIN_S)
                if deadline is not None:
                    wake = min(wake, deadline)
                time.sleep(max(0.0, wake - time.monotonic()))
        except KeyboardInterrupt:
            stop_reason = "interrupted"
        self._drain()
        elapsed = time.monotonic() - t0
        overhead = 100.0 * (own_cpu_seconds() - cpu0) / elapsed if elapsed > 0 else math.nan
        self.costs.seconds["psutil USS"] = self.sampler.uss_cpu_s - uss0
        self.costs.seconds["psutil"] = self.costs.seconds.get("psutil", 0.0) - self.costs.seconds["psutil USS"]
        self._close_rings()
        timeline.meta.update({"seconds": round(elapsed, 3), "samples": n_samples, "stop_reason": stop_reason,
                              "profiler_cpu_percent": round(overhead, 3), "frames": len(self.frames),
                              "frames_lost": self.lost_frames})
        return self._write(timeline, n_samples, elapsed, overhead, stop_reason)

    def _sample(self, timeline: Timeline, status: dict, now: float, ring_counts: dict,
                detail: bool = True) -> None:
        workers = [w for w in status.get("workers", []) if isinstance(w, dict) and isinstance(w.get("name"), str)]
        targets = {w["name"]: w.get("pid") for w in workers}
        gens = {w["name"]: int(w.get("generation") or 0) for w in workers}
        for name, pid in targets.items():
            prev = self.last_pids.get(name)
            if prev is not None and pid and (prev[0] != pid or prev[1] != gens[name]):
                timeline.event(now, "restart", worker=name, old_pid=prev[0], pid=pid, generation=gens[name])
            if pid:
                self.last_pids[name] = (pid, gens[name])
        if status.get("pid"):
            targets["supervisor"] = status["pid"]
        targets["profiler"] = os.getpid()
        vanished_before = len(self.sampler.vanished)
        with self.costs.part("psutil"):
            samples = self.sampler.sample(targets, gens, now, detail=detail)
        for name, pid in self.sampler.vanished[vanished_before:]:
            timeline.event(now, "vanished", worker=name, pid=pid)
        per_pid_gpu = {}
        if self.gpu is not None:
            try:
                with self.costs.part("NVML"):
                    devices, per_pid_gpu = self.gpu.sample(detail=detail)
            except Exception as exc:
                log.warning("NVML sample failed: %s", exc)
                devices = []
            for d in devices:
                timeline.add_gpu(now, d)
        by_name = {w["name"]: w for w in workers}
        for s in samples:
            w = by_name.get(s.worker)
            stats = None
            if w is not None:
                extras = w.get("extras") or {}
                stats = {"state": w.get("state"), "fps": w.get("fps"), "frames_in": w.get("frames_in"),
                         "frames_out": w.get("frames_out"), "drops": w.get("drops"),
                         "overruns": w.get("overruns"), "p50_ms": w.get("p50_ms"), "p99_ms": w.get("p99_ms")}
                if isinstance(extras, dict) and isinstance(extras.get("state"), str):
                    stats["state"] = f"{w.get('state')}/{extras['state']}"
                self.snapshots.setdefault(s.worker, []).append(
                    {"t": now, "generation": w.get("generation"), "frames_in": w.get("frames_in") or 0,
                     "p50_ms": w.get("p50_ms") or 0.0})
            g = per_pid_gpu.get(s.pid) if s.pid else None
            timeline.add_process(s, stats, vars(g) if g is not None else None)
        for name, ring in self.rings.items():
            try:
                count = ring.newest_seq() // 2
            except Exception:
                continue
            prev = ring_counts.get(name)
            ring_counts[name] = (now, count)
            if prev is not None and now > prev[0]:
                timeline.add_ring(now, name, (count - prev[1]) / (now - prev[0]))

    # ---- rings ----------------------------------------------------------------------------------
    def _attach_rings(self, run_id) -> None:
        from pipeline.runtime.ring import Ring, RingError, ring_shm_name

        if not isinstance(run_id, str):
            self.notes.append("status has no run id: no per-frame stamps")
            return
        for name in RINGS:
            try:
                self.rings[name] = Ring.attach(ring_shm_name(run_id, name))
            except (RingError, OSError) as exc:
                log.debug("ring %s not attached: %s", name, exc)
        if "published" in self.rings:
            self.reader = self.rings["published"].reader(policy="next")
        else:
            self.notes.append("no `published` ring (is a publisher running?): no per-frame stamps or trace")

    def _drain(self) -> None:
        reader = self.reader
        if reader is None:
            return
        while True:
            item = reader.read(timeout=0, copy=False)
            if item is None:
                return
            rec = item.record
            frame = FrameStamps(int(rec["frame_id"]), int(rec["generation"]), {},
                                int(item.overwritten_before))
            stamps = np.array(rec["stamps_ns"])  # copy before the re-check below
            if not reader.valid(item):
                self.lost_frames += 1
                continue
            frame.stamps_ns = {s: int(v) for s, v in zip(STAGES, stamps) if v}
            self.lost_frames += frame.overwritten_before
            self.frames.append(frame)
            if len(self.frames) > MAX_FRAMES:
                del self.frames[: MAX_FRAMES // 10]

    def _close_rings(self) -> None:
        self.reader = None
        for ring in self.rings.values():
            ring.close()
        self.rings = {}

    def _ask_torch_profiler(self) -> None:
        n = self.opts.torch_profiler
        if not n:
            return
        # absolute: the worker runs elsewhere, and writes only inside the run's output folder
        value = {"iterations": n, "out_dir": str(Path(self.opts.out_dir).resolve())}
        try:
            self.source.request("set", {"worker": "inference", "key": "profile", "value": value})
            self.notes.append(f"asked the inference worker for a torch profiler trace of {n} iterations "
                              f"into {self.opts.out_dir}")
        except Exception as exc:
            self.notes.append(f"torch profiler trace not recorded: the inference worker refused "
                              f"`set inference profile`: {exc}")

    # ---- outputs --------------------------------------------------------------------------------
    def loads(self, timeline: Timeline) -> list[StageLoad]:
        out = []
        for name in timeline.workers():
            if name in ("supervisor", "profiler"):
                continue
            load = heartbeat_load(name, self.snapshots.get(name, []))
            if math.isnan(load.busy):
                fallback = stamps_load(name, self.frames)
                if not math.isnan(fallback.busy):
                    load = fallback
            rows = [r for r in timeline.worker_rows(name) if r.get("alive")]
            load.cpu_percent = _mean(r.get("cpu_percent") for r in rows)
            load.main_thread_cpu_percent = _mean(r.get("main_thread_cpu_percent") for r in rows)
            load.gpu_util_percent = _mean(r.get("gpu_util_percent") for r in rows)
            load.gpu_mem_bytes = _mean(r.get("gpu_mem_bytes") for r in rows)
            out.append(load)
        return out

    def _write(self, timeline: Timeline, n_samples: int, elapsed: float, overhead: float,
               stop_reason: str) -> ProfileResult:
        out = self.opts.out_dir
        latency = latency_table(self.frames)
        bottleneck = find_bottleneck(self.loads(timeline), latency_ms=latency)
        bottleneck.notes.extend(self.notes)
        for e in timeline.events:
            bottleneck.notes.append(f"{e['kind']} at {e['t_s']:.1f} s: " +
                                    ", ".join(f"{k}={v}" for k, v in e.items() if k not in ("kind", "t_s")))
        timeline.write_csv(out / "timeline.csv")
        timeline.write_json(out / "timeline.json")
        pids = {name: pid for name, (pid, _) in self.last_pids.items()}
        pids["publisher"] = pids.get("publisher")
        n_trace = write_chrome_trace(out / "trace.json", self.frames, pids)
        files = ["timeline.csv", "timeline.json", "trace.json"]
        if self.opts.plots:
            from pipeline.profiling.plots import save_all

            files += list(save_all(out, timeline, latency, self.frames)) + ["plots.json"]
        header = (f"profile of run {timeline.meta.get('run_id')} ({timeline.meta.get('source')}): "
                  f"{elapsed:.1f} s, {n_samples} samples every {self.opts.interval_s:g} s, "
                  f"{len(self.frames)} published frames ({self.lost_frames} lost to the ring), "
                  f"{n_trace} in the trace; stopped: {stop_reason}")
        shares = self.costs.shares(elapsed)
        parts = ", ".join(f"{k} {v:.2f}" for k, v in sorted(shares.items(), key=lambda kv: -kv[1]) if v >= 0.005)
        timeline.meta["profiler_cpu_percent_by_part"] = {k: round(v, 3) for k, v in shares.items()}
        timeline.meta["detail_every_max"] = self.governor.highest
        text = "\n".join([header, self.gpu_note, bottleneck.text(),
                          f"profiler overhead: {overhead:.2f} % of one core (CPU time of the profiler "
                          f"process while sampling; by part, % of one core: {parts or 'none measured'}; "
                          f"the rest is the loop, ZeroMQ's I/O thread and the interpreter); "
                          f"{self.governor.describe()}"]) + "\n"
        (out / "summary.txt").write_text(text)
        files.append("summary.txt")
        if self.gpu is not None:
            self.gpu.close()
        return ProfileResult(out, bottleneck, text, n_samples, len(self.frames), elapsed, overhead,
                             self.gpu_note, files)


def _mean(values) -> float:
    vals = []
    for v in values:
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if not math.isnan(f):
            vals.append(f)
    return float(np.mean(vals)) if vals else math.nan


def load_summary_json(out_dir: Path) -> dict:
    """The timeline JSON of a finished profile (for tools and tests)."""
    return json.loads((Path(out_dir) / "timeline.json").read_text())
