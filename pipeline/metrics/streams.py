"""Per-stream numbers of a pipeline with several sources (issue 20): frames per second and
capture->publish latency p50/p99 of each stream, over a trailing window, plus the total.

The publisher keeps one `StreamStats`; its `summary()` rides in the heartbeat extras
(`streams`), from which `pipeline status` prints one row per stream and the metrics CSV
writes one row per stream.
"""
from __future__ import annotations

import collections
import time

import numpy as np

WINDOW_S = 5.0       # the seed CSV's trailing window
MAX_SAMPLES = 4096   # per stream; enough for 800 FPS over the window


class StreamStats:
    def __init__(self, names: list[str], window_s: float = WINDOW_S):
        self.names = list(names)
        self.window_s = window_s
        self._samples = [collections.deque(maxlen=MAX_SAMPLES) for _ in self.names]  # (t, latency ms or nan)
        self.published = [0] * len(self.names)

    def add(self, stream: int, latency_ms: float | None, now: float | None = None) -> None:
        if not 0 <= stream < len(self.names):
            return  # a record of an unknown stream: counted nowhere rather than crashing
        now = time.monotonic() if now is None else now
        self._samples[stream].append((now, float("nan") if latency_ms is None else float(latency_ms)))
        self.published[stream] += 1

    def summary(self, now: float | None = None) -> dict:
        """{name: {fps, p50_ms, p99_ms, published}, ..., "total": {...}} over the window."""
        now = time.monotonic() if now is None else now
        out, every = {}, []
        for name, samples, count in zip(self.names, self._samples, self.published):
            while samples and now - samples[0][0] > self.window_s:
                samples.popleft()
            lat = [x for _, x in samples]
            every += lat
            out[name] = _row(lat, len(samples), self._span(samples, now), count)
        spans = [self._span(s, now) for s in self._samples if s]
        out["total"] = _row(every, len(every), max(spans) if spans else 0.0, sum(self.published))
        return out

    def _span(self, samples, now: float) -> float:
        """Seconds the window covers: from the oldest sample kept (or the window) to now."""
        if not samples:
            return 0.0
        return min(self.window_s, max(now - samples[0][0], 1e-9))


def _row(latencies, n: int, span: float, published: int) -> dict:
    arr = np.asarray(latencies, np.float64)
    arr = arr[~np.isnan(arr)]  # records without a capture stamp count for FPS only
    p50, p99 = (np.percentile(arr, [50, 99]) if arr.size else (0.0, 0.0))
    # n samples over the span: n-1 intervals between the first and the newest
    fps = (n - 1) / span if n > 1 and span > 0 else 0.0
    return {"fps": round(float(fps), 2), "p50_ms": round(float(p50), 2), "p99_ms": round(float(p99), 2),
            "published": int(published)}


_SUMMED = ("fps", "frames_in", "frames_out", "drops", "overruns", "skipped", "cpu_percent", "rss_bytes")
_WORST = ("p50_ms", "p99_ms")


def combine_stream_workers(workers: list) -> list:
    """Status rows with the per-stream workers (`capture.<stream>`) also summed into one row named
    like their base worker (`capture`): the CSV keeps one fixed set of per-worker columns, so
    several captures count together (counts, CPU and memory summed; timings the worst)."""
    groups: dict = {}
    for w in workers:
        name = w.get("name") if isinstance(w, dict) else None
        if isinstance(name, str) and "." in name:
            groups.setdefault(name.split(".", 1)[0], []).append(w)
    out = list(workers)
    for base, rows in groups.items():
        combined = {"name": base, "generation": max(int(r.get("generation") or 0) for r in rows)}
        for key in _SUMMED:
            combined[key] = sum(r.get(key) or 0 for r in rows if isinstance(r.get(key), (int, float)))
        for key in _WORST:
            combined[key] = max((r.get(key) or 0 for r in rows if isinstance(r.get(key), (int, float))), default=0)
        out.append(combined)
    return out
