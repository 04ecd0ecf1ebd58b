"""Per-stage latency spans from a frame's stage stamps, and NaN-omitting percentiles.

A span is the time between two stamps of `pipeline.runtime.records.STAGES`. The seed had only one
number (loop time, camera wait included); these spans split a frame's life so a slow stage is
visible. Queueing spans are the waits *between* stages (a frame sitting in a ring).
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

from pipeline.runtime.records import STAGES

# name -> (from stamp, to stamp); order is the column order of the CSV and the plots.
STAGE_SPANS: dict[str, tuple[str, str]] = {
    "capture_wait": ("capture", "frame_written"),
    "queue_detect": ("frame_written", "detect_start"),
    "detection": ("detect_start", "detect_end"),
    "queue_infer": ("detect_end", "infer_start"),
    "inference": ("infer_start", "infer_end"),
    "publish": ("infer_end", "publish"),
    "end_to_end": ("capture", "publish"),
}
# The spans the CSV reports with p50/p95/p99 (the list); queueing goes to plots/Prometheus.
CSV_SPANS = ("capture_wait", "detection", "inference", "publish", "end_to_end")
PERCENTILES = (50, 95, 99)

for _a, _b in STAGE_SPANS.values():
    assert _a in STAGES and _b in STAGES, (_a, _b)


def stage_latencies_ms(stamps_ns: dict[str, int]) -> dict[str, float]:
    """Span durations in ms for every span whose two stamps are set (0/missing = not reached).

    A negative span means stamps from different clocks or a writer bug; it is dropped rather
    than averaged in.
    """
    out: dict[str, float] = {}
    for name, (a, b) in STAGE_SPANS.items():
        ta, tb = stamps_ns.get(a, 0), stamps_ns.get(b, 0)
        if ta and tb and tb >= ta:
            out[name] = (tb - ta) / 1e6
    return out


def percentiles(values: Iterable[float], qs: Sequence[float] = PERCENTILES) -> dict[float, float]:
    """Linear-interpolated percentiles of the finite values; all NaN when there are none.

    Interpolated percentiles are monotone in q, so p50 ≤ p95 ≤ p99 always holds.
    """
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if arr.size == 0:
        return {q: math.nan for q in qs}
    res = np.percentile(arr, list(qs))
    return {q: float(v) for q, v in zip(qs, res)}
