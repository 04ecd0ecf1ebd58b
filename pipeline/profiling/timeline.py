"""The profile timeline: one row per (sample time, worker) plus one per GPU, as CSV and JSON.

CSV (`timeline.csv`) is long format, one fixed header, empty cells for values that do not apply
(a GPU row has no RSS, a CPU-only profile no GPU columns filled). JSON (`timeline.json`) holds the
same rows plus what does not fit a flat row: the busiest threads of each process, the run's
metadata, and the events the profiler saw (restarts, vanished pids).
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Iterable

from pipeline.profiling.sampler import ProcessSample

COLUMNS = (
    "t_s", "kind", "worker", "pid", "generation", "alive",
    # psutil
    "cpu_percent", "main_thread_cpu_percent", "top_thread", "top_thread_cpu_percent", "num_threads",
    "rss_bytes", "uss_bytes", "ctx_voluntary_per_s", "ctx_involuntary_per_s",
    # heartbeat stats (the runner's view)
    "state", "fps", "frames_in", "frames_out", "drops", "overruns", "p50_ms", "p99_ms",
    # NVML, per process and per device
    "gpu", "gpu_util_percent", "gpu_mem_bytes", "gpu_mem_total_bytes", "sm_clock_mhz", "power_w",
    "pcie_tx_mb_s", "pcie_rx_mb_s",
    # rings: items written per second (header counters)
    "ring", "ring_items_per_s",
)


class Timeline:
    def __init__(self, t0: float):
        self.t0 = t0
        self.rows: list[dict[str, Any]] = []
        self.threads: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.meta: dict[str, Any] = {}

    def add_process(self, s: ProcessSample, stats: dict | None = None, gpu: dict | None = None) -> dict:
        main = next((t for t in s.threads if t.tid == s.pid), None)
        top = s.top_thread
        row = {
            "t_s": round(s.t - self.t0, 3), "kind": "worker", "worker": s.worker, "pid": s.pid,
            "generation": s.generation, "alive": int(s.alive), "cpu_percent": s.cpu_percent,
            # A main thread below the sampler's reporting threshold is idle, not unknown.
            "main_thread_cpu_percent": main.cpu_percent if main else (0.0 if s.threads_measured else math.nan),
            "top_thread": top.name if top else "", "top_thread_cpu_percent": top.cpu_percent if top else math.nan,
            "num_threads": s.num_threads, "rss_bytes": s.rss_bytes, "uss_bytes": s.uss_bytes,
            "ctx_voluntary_per_s": s.ctx_voluntary_per_s, "ctx_involuntary_per_s": s.ctx_involuntary_per_s,
        }
        for key in ("state", "fps", "frames_in", "frames_out", "drops", "overruns", "p50_ms", "p99_ms"):
            if stats and key in stats:
                row[key] = stats[key]
        if gpu:
            row.update({"gpu": gpu.get("device"), "gpu_util_percent": gpu.get("sm_util_percent"),
                        "gpu_mem_bytes": gpu.get("mem_bytes")})
        self.rows.append(row)
        if s.threads:
            self.threads.append({"t_s": row["t_s"], "worker": s.worker, "pid": s.pid,
                                 "threads": [{"tid": t.tid, "name": t.name, "cpu_percent": t.cpu_percent}
                                             for t in s.threads]})
        return row

    def add_gpu(self, t: float, d) -> None:
        self.rows.append({"t_s": round(t - self.t0, 3), "kind": "gpu", "worker": f"gpu{d.index}", "gpu": d.index,
                          "gpu_util_percent": d.util_percent, "gpu_mem_bytes": d.mem_used_bytes,
                          "gpu_mem_total_bytes": d.mem_total_bytes, "sm_clock_mhz": d.sm_clock_mhz,
                          "power_w": d.power_w, "pcie_tx_mb_s": d.pcie_tx_mb_s, "pcie_rx_mb_s": d.pcie_rx_mb_s})

    def add_ring(self, t: float, ring: str, items_per_s: float) -> None:
        self.rows.append({"t_s": round(t - self.t0, 3), "kind": "ring", "worker": "", "ring": ring,
                          "ring_items_per_s": round(items_per_s, 2)})

    def event(self, t: float, kind: str, **data) -> None:
        self.events.append({"t_s": round(t - self.t0, 3), "kind": kind, **data})

    def worker_rows(self, worker: str | None = None) -> list[dict]:
        return [r for r in self.rows if r["kind"] == "worker" and (worker is None or r["worker"] == worker)]

    def workers(self) -> list[str]:
        return list(dict.fromkeys(r["worker"] for r in self.rows if r["kind"] == "worker"))

    def write_csv(self, path: Path) -> None:
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
            w.writeheader()
            for row in self.rows:
                w.writerow({k: _cell(row.get(k)) for k in COLUMNS})

    def write_json(self, path: Path) -> None:
        doc = {"meta": self.meta, "columns": list(COLUMNS), "rows": [_clean(r) for r in self.rows],
               "threads": self.threads, "events": self.events}
        Path(path).write_text(json.dumps(doc, indent=1, default=str))


def _cell(value) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return round(value, 3)
    return value


def _clean(row: dict) -> dict:
    """JSON has no NaN: drop the keys that have no value."""
    return {k: v for k, v in row.items() if not (v is None or (isinstance(v, float) and math.isnan(v)))}


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def rows_of(rows: Iterable[dict], kind: str) -> list[dict]:
    return [r for r in rows if r.get("kind") == kind]
