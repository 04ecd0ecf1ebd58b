"""Trailing-window aggregation of per-frame quantities and worker heartbeat stats.

Rules (the seed's, kept so old and new CSV rows compare):
- The window is the last `seconds` (5 by default) before "now", on the monotonic clock, by each
  frame's publish stamp: a frame belongs when now − seconds < t_publish ≤ now.
- Every average is the mean of the finite values in the window; NaN values (no previous frame
  of the same person, no joints, nobody detected) are left out, and a quantity with no finite
  value at all is NaN.
- Exception: the detection rate averages 100/0 per frame, so frames without anyone count as 0.
- FPS (corrected; the seed averaged instantaneous 1/loop-time values, which overweights fast
  frames): frames published in the window / elapsed seconds of the window. Elapsed is the full
  window length, or the time since the metrics started observing when that is shorter.
- Latency (corrected; the seed timed its loop including the camera wait): mean capture→publish
  per frame. Per-stage spans are reported as p50/p95/p99.
- Dropped frames per worker: growth of that worker's drops + overruns counters during the
  window (its heartbeats are cumulative): frames lost. Skipped frames per worker: growth of its
  `skipped` counter: frames a `latest` reader passed over by design (newest frame wins), not
  lost. CPU %, RSS and GPU numbers: the newest heartbeat.
- GPU (only workers on a GPU report it, profiling/device_stats.py): memory is the sum over the
  workers, utilisation the highest reported; NaN (not measured) when no worker reported it.
"""
from __future__ import annotations

import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from pipeline.metrics.percentiles import PERCENTILES, STAGE_SPANS, percentiles
from pipeline.metrics.quantities import FrameQuantities

log = logging.getLogger(__name__)

DEFAULT_WINDOW_S = 5.0
MAX_WINDOW_S = 300.0


@dataclass
class WorkerStats:
    """The part of a worker heartbeat the metrics use; counters are cumulative since the worker started."""
    fps: float = math.nan
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    frames_in: int = 0
    frames_out: int = 0
    drops: int = 0
    overruns: int = 0
    skipped: int = 0
    cpu_percent: float = math.nan
    rss_bytes: float = math.nan
    gpu_util_percent: float = math.nan
    gpu_mem_bytes: float = math.nan
    generation: int = 0

    @classmethod
    def from_heartbeat(cls, stats: Mapping[str, Any]) -> "WorkerStats":
        """Read a heartbeat stats dict; a missing or malformed field stays at its default (and is logged)."""
        if not isinstance(stats, Mapping):
            raise TypeError(f"worker stats must be a mapping, got {type(stats).__name__}")
        extras = stats.get("extras") if isinstance(stats.get("extras"), Mapping) else {}
        merged = {**extras, **{k: v for k, v in stats.items() if k != "extras"}}
        out = cls()
        aliases = {
            "fps": ("fps",),
            "p50_ms": ("p50_ms", "p50"),
            "p99_ms": ("p99_ms", "p99"),
            "frames_in": ("frames_in",),
            "frames_out": ("frames_out",),
            "drops": ("drops", "dropped"),
            "overruns": ("overruns",),
            "skipped": ("skipped",),
            "cpu_percent": ("cpu_percent", "cpu"),
            "rss_bytes": ("rss_bytes", "rss"),
            "gpu_util_percent": ("gpu_util_percent", "gpu_util"),
            "gpu_mem_bytes": ("gpu_mem_bytes", "gpu_memory_bytes", "gpu_mem"),
            "generation": ("generation",),
        }
        for attr, keys in aliases.items():
            for key in keys:
                if key not in merged:
                    continue
                value = merged[key]
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                    log.debug("ignoring heartbeat field %s=%r (not a finite non-negative number)", key, value)
                    break
                default = getattr(out, attr)
                setattr(out, attr, int(value) if isinstance(default, int) else float(value))
                break
        return out


@dataclass
class WindowSummary:
    seconds: float
    frames: int
    fps: float
    end_to_end_ms: float
    pose_change: float
    translation_change_mm: float
    joint_change_mm: float
    shape_variance: float
    detection_rate: float
    vertex_change_mm: float = math.nan
    persons_mean: float = math.nan
    persons_max: int = 0
    missed: int = 0
    model: str = ""
    backend: str = ""
    precision: str = ""
    generation: int = -1
    untrained: bool = False
    stage_ms: dict[str, dict[float, float]] = field(default_factory=dict)
    workers: dict[str, WorkerStats] = field(default_factory=dict)
    worker_drops: dict[str, int] = field(default_factory=dict)
    worker_skipped: dict[str, int] = field(default_factory=dict)
    gpu_util_percent: float = math.nan
    gpu_mem_bytes: float = math.nan


class TrailingWindow:
    """Keeps the last `max_seconds` of frame quantities and heartbeats; summarises any shorter window."""

    def __init__(self, max_seconds: float = 60.0, clock_ns=time.monotonic_ns):
        if not 0 < max_seconds <= MAX_WINDOW_S:
            raise ValueError(f"max_seconds must be in (0, {MAX_WINDOW_S}], got {max_seconds}")
        self.max_seconds = float(max_seconds)
        self._clock_ns = clock_ns
        self._frames: deque[FrameQuantities] = deque()
        self._workers: dict[str, deque[tuple[int, WorkerStats]]] = {}
        self.started_ns = clock_ns()
        self.frames_total = 0
        self.missed_total = 0

    def add(self, q: FrameQuantities) -> None:
        self._frames.append(q)
        self.frames_total += 1
        self.missed_total += q.missed
        self._prune()

    def add_worker(self, name: str, stats: WorkerStats, t_ns: int | None = None) -> None:
        hist = self._workers.setdefault(name, deque())
        hist.append((self._clock_ns() if t_ns is None else int(t_ns), stats))
        self._prune()

    def latest_worker_stats(self) -> dict[str, WorkerStats]:
        return {name: hist[-1][1] for name, hist in self._workers.items() if hist}

    def summarize(self, seconds: float = DEFAULT_WINDOW_S, now_ns: int | None = None) -> WindowSummary:
        if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and 0 < seconds <= self.max_seconds):
            raise ValueError(f"window must be in (0, {self.max_seconds:g}] seconds, got {seconds!r}")
        now = self._clock_ns() if now_ns is None else int(now_ns)
        start = now - int(seconds * 1e9)
        frames = [q for q in self._frames if start < q.t_ns <= now]
        elapsed_s = (now - max(start, self.started_ns)) / 1e9
        fps = len(frames) / elapsed_s if elapsed_s > 0 else math.nan

        s = WindowSummary(
            seconds=float(seconds),
            frames=len(frames),
            fps=fps,
            end_to_end_ms=_nanmean(q.end_to_end_ms for q in frames),
            pose_change=_nanmean(q.pose_change for q in frames),
            translation_change_mm=_nanmean(q.translation_change_mm for q in frames),
            joint_change_mm=_nanmean(q.joint_change_mm for q in frames),
            shape_variance=_nanmean(q.shape_variance for q in frames),
            detection_rate=float(np.mean([q.detected for q in frames])) if frames else math.nan,
            vertex_change_mm=_nanmean(q.vertex_change_mm for q in frames),
            persons_mean=float(np.mean([q.persons for q in frames])) if frames else math.nan,
            persons_max=max((q.persons for q in frames), default=0),
            missed=sum(q.missed for q in frames),
            stage_ms={
                span: percentiles((q.stage_ms.get(span, math.nan) for q in frames), PERCENTILES)
                for span in STAGE_SPANS
            },
        )
        if frames:
            last = frames[-1]
            s.model, s.backend, s.precision = last.model, last.backend, last.precision
            s.generation, s.untrained = last.generation, last.untrained
        for name, hist in self._workers.items():
            in_window = [(t, st) for t, st in hist if t <= now]
            if not in_window:
                continue
            newest = in_window[-1][1]
            s.workers[name] = newest
            before = [st for t, st in in_window if t <= start]
            base = before[-1] if before else in_window[0][1]
            grown = (newest.drops + newest.overruns) - (base.drops + base.overruns)
            # A restarted worker starts its counters at 0 again: count what the new one saw.
            s.worker_drops[name] = grown if grown >= 0 else newest.drops + newest.overruns
            skipped = newest.skipped - base.skipped
            s.worker_skipped[name] = skipped if skipped >= 0 else newest.skipped
            # Workers on GPUs (inference, detection) each report their own memory and the
            # device's utilisation: the pipeline uses the sum of the memory and the busiest device.
            if math.isfinite(newest.gpu_util_percent):
                s.gpu_util_percent = max(_zero_if_nan(s.gpu_util_percent), newest.gpu_util_percent)
            if math.isfinite(newest.gpu_mem_bytes):
                s.gpu_mem_bytes = _zero_if_nan(s.gpu_mem_bytes) + newest.gpu_mem_bytes
        return s

    def _prune(self) -> None:
        horizon = self._clock_ns() - int(self.max_seconds * 1e9)
        while self._frames and self._frames[0].t_ns <= horizon:
            self._frames.popleft()
        for hist in self._workers.values():
            # Keep one sample older than the horizon: it is the baseline for counter growth.
            while len(hist) > 1 and hist[1][0] <= horizon:
                hist.popleft()


def _zero_if_nan(value: float) -> float:
    return 0.0 if math.isnan(value) else value


def _nanmean(values) -> float:
    arr = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    return float(arr.mean()) if arr.size else math.nan
