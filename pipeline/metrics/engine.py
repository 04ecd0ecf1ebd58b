"""One object the metrics worker feeds: frames in, window summaries, CSV rows and live numbers out."""
from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from pipeline.metrics.quantities import FrameMeasurer, FrameQuantities
from pipeline.metrics.seedcsv import append_row, build_row, default_csv_name, parse_condition
from pipeline.metrics.window import DEFAULT_WINDOW_S, TrailingWindow, WindowSummary, WorkerStats
from pipeline.pose.frame import PosesFrame

log = logging.getLogger(__name__)


@dataclass
class RecordResult:
    path: str
    columns: tuple[str, ...]
    row: dict[str, str]

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "row": {c: self.row[c] for c in self.columns}}


class MetricsEngine:
    def __init__(self, max_window_s: float = 60.0, exporter=None, dump=None, clock_ns=time.monotonic_ns):
        self._clock_ns = clock_ns
        self.window = TrailingWindow(max_seconds=max_window_s, clock_ns=clock_ns)
        self.measurer = FrameMeasurer()
        self.exporter = exporter          # a PrometheusExporter, or None
        self.last: FrameQuantities | None = None
        self.last_backend = ""
        self.dump = dump                  # a FrameDump (per-frame stamps for plots), or None
        # Several sources: a measurer (pose change follows one camera's people) and a window per stream
        self._max_window_s = max_window_s
        self.measurers: dict = {}
        self.stream_windows: dict = {}

    def observe(self, frame: PosesFrame, arrival_ns: int | None = None, missed: int = 0) -> FrameQuantities:
        arrival = self._clock_ns() if arrival_ns is None else int(arrival_ns)
        stream = getattr(frame, "stream", "main")
        if stream == "main" and not self.stream_windows:
            q = self.measurer.measure(frame, arrival, missed)
        else:
            if stream not in self.measurers:
                self.measurers[stream] = FrameMeasurer()
                self.stream_windows[stream] = TrailingWindow(max_seconds=self._max_window_s, clock_ns=self._clock_ns)
            q = self.measurers[stream].measure(frame, arrival, missed)
            self.stream_windows[stream].add(q)
        self.window.add(q)
        self.last = q
        if frame.backend:
            self.last_backend = frame.backend
        if self.exporter is not None:
            self.exporter.observe_frame(q)
        if self.dump is not None:
            self.dump.write(frame)
        return q

    def update_worker(self, name: str, stats: Mapping[str, Any], t_ns: int | None = None) -> WorkerStats:
        st = WorkerStats.from_heartbeat(stats)
        self.window.add_worker(name, st, t_ns)
        if self.exporter is not None:
            self.exporter.observe_worker(name, st)
        return st

    def summary(self, seconds: float = DEFAULT_WINDOW_S, now_ns: int | None = None) -> WindowSummary:
        s = self.window.summarize(seconds, now_ns)
        if self.exporter is not None:
            self.exporter.set_fps(s.fps)
        return s

    def live(self, seconds: float = DEFAULT_WINDOW_S) -> dict[str, float]:
        """Small numbers for heartbeat extras, `pipeline status` and the viewer panel."""
        s = self.summary(seconds)
        e2e = s.stage_ms.get("end_to_end", {})
        return {
            "pub_fps": _finite(s.fps),
            "e2e_p50_ms": _finite(e2e.get(50, math.nan)),
            "e2e_p99_ms": _finite(e2e.get(99, math.nan)),
            "persons": float(self.last.persons) if self.last else 0.0,
            "detection_rate": _finite(s.detection_rate),
            "untrained": 1.0 if (self.last and self.last.untrained) else 0.0,
        }

    def record(self, condition: str | None = None, seconds: float = DEFAULT_WINDOW_S,
               csv_path: str | os.PathLike | None = None, note: str | None = None,
               directory: str | os.PathLike | None = None) -> RecordResult:
        """Append one row of trailing-window averages; `csv_path` None -> seed name in `directory` (or cwd)."""
        canonical = parse_condition(condition, note)
        summary = self.summary(seconds)
        if csv_path is None:
            csv_path = Path(directory or ".") / default_csv_name(summary.backend or self.last_backend)
        row = build_row(summary, canonical)
        if len(self.stream_windows) > 1:
            row["Stream"] = "total"
        columns = append_row(csv_path, row)
        if len(self.stream_windows) > 1:
            for name, window in self.stream_windows.items():
                stream_row = build_row(window.summarize(seconds), canonical)
                stream_row["Stream"] = str(name)
                append_row(csv_path, stream_row)
        log.info("recorded %s (%s, %.0f s window, %d frames) to %s",
                 canonical, summary.backend or "?", seconds, summary.frames, csv_path)
        return RecordResult(path=str(Path(csv_path).resolve()), columns=columns, row=row)


def format_summary(s: WindowSummary) -> str:
    """One console line: the seed's headline numbers plus end-to-end percentiles."""
    e2e = s.stage_ms.get("end_to_end", {})
    text = (f"{s.fps:.1f} FPS | e2e mean {s.end_to_end_ms:.1f} ms p50 {e2e.get(50, math.nan):.1f} "
            f"p99 {e2e.get(99, math.nan):.1f} | det {s.detection_rate:.0f}% | persons {s.persons_mean:.2f} | "
            f"pose chg {s.pose_change:.3f} | transl chg {s.translation_change_mm:.1f} mm | "
            f"{s.frames} frames / {s.seconds:g} s")
    if s.missed:
        text += f" | missed {s.missed}"
    if s.untrained:
        text += " | UNTRAINED weights"
    return text


def _finite(v: float) -> float:
    return float(v) if math.isfinite(v) else 0.0
