"""Which stage limits the pipeline, and the numbers that show it.

Busy fraction of a worker = items it processed per second x time per item (heartbeat stats:
`frames_in` deltas and the p50 of `process()` time, both measured by the runner), capped at 1.
A worker whose heartbeats say nothing (no p50 yet) falls back to its per-frame stamps in the
published records (sum of its spans / wall time; only frames that reached the publisher count).

The source worker (capture) is different: its `process()` mostly *waits* for the next camera or
file frame, so its busy time minus its main thread's CPU time is reported as time spent waiting
on the source. Verdicts, in order:

1. a data-path stage busy >= `SATURATED` is the bottleneck ("inference busy 97 %"); so is the
   busiest stage when fewer frames are published than captured (`KEEPS_UP`): frames are being
   skipped somewhere, even if no stage looks saturated (e.g. it was starved during a restart);
2. else, when capture waits on the source most of the time, the source sets the pace;
3. else, when the workers together use nearly every core, the machine is CPU-starved;
4. else nothing is saturated; the busiest stage is named as the one to watch.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np

from pipeline.metrics.percentiles import STAGE_SPANS, percentiles, stage_latencies_ms

SATURATED = 0.8
SOURCE_WAIT = 0.5
CPU_STARVED = 0.9
KEEPS_UP = 0.9              # published/captured rate at or above which the pipeline keeps up
PUBLISHER = "publisher"
SOURCE_WORKERS = ("capture",)
OFF_PATH_WORKERS = ("metrics",)    # read the published ring; they never hold a frame back
# Span of the published stamps that measures each worker's own work (fallback when heartbeats are silent).
WORKER_SPAN = {"capture": "capture_wait", "detection": "detection", "inference": "inference", "publisher": "publish"}


@dataclass
class StageLoad:
    worker: str
    busy: float = math.nan            # fraction of wall time inside process(), 0..1
    items_per_s: float = math.nan
    ms_per_item: float = math.nan
    cpu_percent: float = math.nan     # mean over the profile, of one core
    main_thread_cpu_percent: float = math.nan
    gpu_util_percent: float = math.nan
    gpu_mem_bytes: float = math.nan
    basis: str = ""                   # "heartbeats" | "stamps" | ""

    @property
    def source_wait(self) -> float:
        """For a source worker: fraction of wall time spent waiting on the source."""
        cpu = self.main_thread_cpu_percent if not math.isnan(self.main_thread_cpu_percent) else self.cpu_percent
        if math.isnan(self.busy) or math.isnan(cpu):
            return math.nan
        return max(0.0, self.busy - cpu / 100.0)


@dataclass
class Bottleneck:
    stage: str | None
    kind: str                          # "stage" | "source" | "cpu" | "none" | "unknown"
    headline: str
    evidence: str
    loads: list[StageLoad] = field(default_factory=list)
    latency_ms: dict[str, dict] = field(default_factory=dict)   # span -> {p50, p95, p99}
    notes: list[str] = field(default_factory=list)

    def text(self) -> str:
        lines = [f"bottleneck: {self.headline}", f"evidence:   {self.evidence}"]
        if self.loads:
            lines.append("per worker: " + "; ".join(_load_line(x) for x in self.loads))
        if self.latency_ms:
            parts = [f"{k} {v[50]:.1f}/{v[99]:.1f}" for k, v in self.latency_ms.items() if not math.isnan(v[50])]
            if parts:
                lines.append("latency p50/p99 ms: " + ", ".join(parts))
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:.0f} %"


def _load_line(x: StageLoad) -> str:
    bits = [f"{x.worker} busy {_pct(x.busy)}"]
    if not math.isnan(x.ms_per_item):
        bits.append(f"{x.ms_per_item:.1f} ms x {x.items_per_s:.1f}/s")
    if not math.isnan(x.cpu_percent):
        bits.append(f"CPU {x.cpu_percent:.0f} %")
    if not math.isnan(x.gpu_util_percent):
        bits.append(f"GPU {x.gpu_util_percent:.0f} %")
    if not math.isnan(x.gpu_mem_bytes):
        bits.append(f"GPU mem {x.gpu_mem_bytes / 2**20:.0f} MiB")
    return " ".join(bits[:1]) + (f" ({', '.join(bits[1:])})" if len(bits) > 1 else "")


def heartbeat_load(worker: str, snapshots: Sequence[Mapping]) -> StageLoad:
    """Busy fraction from a worker's status entries over time: dicts with t, generation, frames_in, p50_ms.

    Only consecutive snapshots of the same generation with growing counters count, so a restart
    (counters back to 0) does not produce a negative rate.
    """
    load = StageLoad(worker)
    items, seconds = 0.0, 0.0
    for a, b in zip(snapshots, snapshots[1:]):
        if a.get("generation") != b.get("generation"):
            continue
        dn = (b.get("frames_in") or 0) - (a.get("frames_in") or 0)
        dt = float(b["t"]) - float(a["t"])
        if dn < 0 or dt <= 0:
            continue
        items += dn
        seconds += dt
    p50s = [float(s["p50_ms"]) for s in snapshots if (s.get("p50_ms") or 0) > 0]
    if seconds > 0:
        load.items_per_s = items / seconds
    if p50s and seconds > 0:
        load.ms_per_item = float(np.mean(p50s))
        load.busy = min(1.0, load.items_per_s * load.ms_per_item / 1000.0)
        load.basis = "heartbeats"
    return load


def stamps_load(worker: str, frames: Sequence) -> StageLoad:
    """Busy fraction from the published stamps: the worker's span summed over the wall time they cover."""
    load = StageLoad(worker)
    span = WORKER_SPAN.get(worker)
    if span is None or len(frames) < 2:
        return load
    durations = [stage_latencies_ms(f.stamps_ns).get(span) for f in frames]
    durations = [d for d in durations if d is not None]
    starts = [f.stamps_ns.get("capture", 0) for f in frames if f.stamps_ns.get("capture")]
    ends = [f.stamps_ns.get("publish", 0) for f in frames if f.stamps_ns.get("publish")]
    if not durations or not starts or not ends:
        return load
    wall_s = (max(ends) - min(starts)) / 1e9
    if wall_s <= 0:
        return load
    load.items_per_s = len(durations) / wall_s
    load.ms_per_item = float(np.mean(durations))
    load.busy = min(1.0, sum(durations) / 1000.0 / wall_s)
    load.basis = "stamps"
    return load


def latency_table(frames: Iterable) -> dict[str, dict]:
    per_span: dict[str, list[float]] = {name: [] for name in STAGE_SPANS}
    for f in frames:
        for name, ms in stage_latencies_ms(f.stamps_ns).items():
            per_span[name].append(ms)
    return {name: percentiles(v) for name, v in per_span.items() if v}


def find_bottleneck(loads: Sequence[StageLoad], ncores: int | None = None,
                    latency_ms: Mapping[str, dict] | None = None) -> Bottleneck:
    ncores = ncores or os.cpu_count() or 1
    loads = list(loads)
    by_name = {x.worker: x for x in loads}
    path = [x for x in loads if x.worker not in SOURCE_WORKERS and x.worker not in OFF_PATH_WORKERS
            and not math.isnan(x.busy)]
    sources = [x for x in loads if x.worker in SOURCE_WORKERS]
    evidence = [f"{x.worker} busy {_pct(x.busy)}" for x in sorted(path, key=lambda x: -x.busy)]
    for s in sources:
        if not math.isnan(s.source_wait):
            evidence.append(f"{s.worker} waits on the source {_pct(s.source_wait)}")
    captured = max((s.items_per_s for s in sources if not math.isnan(s.items_per_s)), default=math.nan)
    published = by_name[PUBLISHER].items_per_s if PUBLISHER in by_name else math.nan
    keeps_up = math.isnan(captured) or math.isnan(published) or published >= KEEPS_UP * captured
    if not (math.isnan(captured) or math.isnan(published)):
        evidence.append(f"published {published:.1f}/s of {captured:.1f}/s captured")
    total_cpu = sum(x.cpu_percent for x in loads if not math.isnan(x.cpu_percent))
    evidence.append(f"all workers CPU {total_cpu:.0f} % of {100 * ncores} %")
    result = Bottleneck(None, "unknown", "", ", ".join(evidence), loads, dict(latency_ms or {}))
    top = max(path, key=lambda x: x.busy, default=None)
    wait = max((s.source_wait for s in sources if not math.isnan(s.source_wait)), default=math.nan)
    if top is None:
        result.headline = "unknown: no stage reported processing times (did frames flow?)"
        return result
    if top.busy >= SATURATED or not keeps_up:
        result.stage, result.kind = top.worker, "stage"
        result.headline = (f"{top.worker} (busy {_pct(top.busy)}: {top.ms_per_item:.1f} ms per item at "
                           f"{top.items_per_s:.1f} items/s)")
        if not keeps_up:
            result.headline += f"; only {published:.1f} of {captured:.1f} frames/s are published"
    elif not math.isnan(wait) and wait >= SOURCE_WAIT:
        result.stage, result.kind = sources[0].worker, "source"
        result.headline = (f"the source (capture waits on it {_pct(wait)}; no stage is saturated, busiest "
                           f"{top.worker} {_pct(top.busy)})")
    elif total_cpu >= CPU_STARVED * 100 * ncores:
        result.stage, result.kind = top.worker, "cpu"
        result.headline = (f"CPU: the workers use {total_cpu:.0f} % of {100 * ncores} % (all cores busy); "
                           f"busiest stage {top.worker} {_pct(top.busy)}")
    else:
        result.stage, result.kind = top.worker, "none"
        result.headline = f"nothing saturated; busiest stage {top.worker} {_pct(top.busy)}"
    if by_name.get(top.worker) and top.basis == "stamps":
        result.notes.append(f"{top.worker}'s load comes from frame stamps (its heartbeats had no timings)")
    return result
