"""PNG plots of a profile (matplotlib, Agg backend, imported here only).

* `utilisation.png` — CPU % per worker over time (one line per worker), RSS per worker, and
  GPU utilisation / memory when NVML gave any; restarts are marked.
* `stage_latency.png` — per-stage latency stack: each stage's p50/p95/p99 stacked into one bar
  per percentile, with the end-to-end value on top for comparison.
* `frame_breakdown.png` — where each frame's time went from capture to publish (stacked per
  frame: capture, queue before detection, detection, queue before inference, inference, publish).

Each builder returns the Figure (tests inspect its lines before it is saved); `save_all` writes
the PNGs plus `plots.json` naming the series of every plot.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

from pipeline.profiling.trace import PHASES

STACK_SPANS = ("capture_wait", "queue_detect", "detection", "queue_infer", "inference", "publish")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def utilisation_figure(timeline):
    plt = _pyplot()
    workers = timeline.workers()
    gpu_rows = [r for r in timeline.rows if r["kind"] == "gpu"]
    n = 3 if gpu_rows else 2
    fig, axes = plt.subplots(n, 1, figsize=(11, 3.2 * n), sharex=True, squeeze=False)
    axes = axes[:, 0]
    for w in workers:
        rows = timeline.worker_rows(w)
        t = [r["t_s"] for r in rows]
        axes[0].plot(t, [_num(r.get("cpu_percent")) for r in rows], label=w, linewidth=1.2)
        axes[1].plot(t, [_num(r.get("rss_bytes")) / 2**20 for r in rows], label=w, linewidth=1.2)
    axes[0].set_ylabel("CPU % (of one core)")
    axes[0].set_title("Utilisation per worker")
    axes[1].set_ylabel("RSS (MiB)")
    restarts = [e["t_s"] for e in timeline.events if e["kind"] in ("restart", "vanished")]
    if restarts:
        for ax in axes:
            lo, hi = ax.get_ylim()
            ax.vlines(restarts, lo, hi, colors="red", linestyles="dotted", label=None)
    if gpu_rows:
        ax = axes[2]
        for dev in sorted({r["gpu"] for r in gpu_rows}):
            rows = [r for r in gpu_rows if r["gpu"] == dev]
            t = [r["t_s"] for r in rows]
            ax.plot(t, [_num(r.get("gpu_util_percent")) for r in rows], label=f"gpu{dev} util %", color="black")
        mem_ax = ax.twinx()
        for w in workers:
            rows = [r for r in timeline.worker_rows(w) if not math.isnan(_num(r.get("gpu_mem_bytes")))]
            if rows:
                mem_ax.plot([r["t_s"] for r in rows], [_num(r["gpu_mem_bytes"]) / 2**20 for r in rows],
                            linestyle="--", label=f"{w} GPU MiB")
        ax.set_ylabel("GPU util %")
        mem_ax.set_ylabel("GPU memory per worker (MiB)")
        ax.legend(loc="upper left", fontsize=8)
        if mem_ax.get_lines():
            mem_ax.legend(loc="upper right", fontsize=8)
    axes[0].legend(loc="upper right", fontsize=8, ncol=min(len(workers), 4) or 1)
    axes[-1].set_xlabel("time (s)")
    fig.tight_layout()
    return fig


def stage_latency_figure(latency_ms: dict):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    qs = (50, 95, 99)
    x = list(range(len(qs)))
    bottom = [0.0] * len(qs)
    for span in STACK_SPANS:
        pct = latency_ms.get(span)
        if not pct:
            continue
        heights = [0.0 if math.isnan(pct[q]) else pct[q] for q in qs]
        ax.bar(x, heights, bottom=bottom, label=span, width=0.55)
        bottom = [b + h for b, h in zip(bottom, heights)]
    e2e = latency_ms.get("end_to_end")
    if e2e:
        for i, q in enumerate(qs):
            if not math.isnan(e2e[q]):
                ax.plot([i - 0.35, i + 0.35], [e2e[q]] * 2, color="black", linewidth=2)
                ax.annotate(f"end-to-end {e2e[q]:.1f} ms", (i, e2e[q]), textcoords="offset points", xytext=(0, 4),
                            ha="center", fontsize=8)
    ax.set_xticks(x, [f"p{q}" for q in qs])
    ax.set_ylabel("ms")
    ax.set_title("Stage latency stack (each stage's percentile, stacked)")
    if ax.containers:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def frame_breakdown_figure(frames: Sequence):
    plt = _pyplot()
    frames = [f for f in frames if f.complete()]
    fig, ax = plt.subplots(figsize=(11, 4.5))
    if frames:
        t0 = frames[0].stamps_ns["capture"]
        t = [(f.stamps_ns["capture"] - t0) / 1e9 for f in frames]
        series = [[(f.stamps_ns[b] - f.stamps_ns[a]) / 1e6 for f in frames] for _, a, b, _ in PHASES]
        ax.stackplot(t, *series, labels=[p[0] for p in PHASES], step="post")
        ax.legend(loc="upper right", fontsize=8, ncol=3)
    else:
        ax.text(0.5, 0.5, "no complete frames were published", ha="center", transform=ax.transAxes)
    ax.set_xlabel("capture time (s)")
    ax.set_ylabel("ms from capture to publish")
    ax.set_title(f"Where each frame's time went ({len(frames)} frames)")
    fig.tight_layout()
    return fig


def series_of(fig) -> list[list[str]]:
    """Labels of the lines/bars/areas of every axes: what a test or a reader checks."""
    out = []
    for ax in fig.axes:
        labels = [ln.get_label() for ln in ax.get_lines()]
        labels += [c.get_label() for c in ax.containers]
        labels += [c.get_label() for c in ax.collections if not c.get_label().startswith("_")]
        out.append([lb for lb in labels if not lb.startswith("_")])
    return out


def save_all(out_dir: Path, timeline, latency_ms: dict, frames: Sequence, dpi: int = 90) -> dict[str, list]:
    plt = _pyplot()
    out_dir = Path(out_dir)
    figures = {"utilisation.png": utilisation_figure(timeline),
               "stage_latency.png": stage_latency_figure(latency_ms),
               "frame_breakdown.png": frame_breakdown_figure(frames)}
    sidecar = {}
    for name, fig in figures.items():
        sidecar[name] = series_of(fig)
        fig.savefig(out_dir / name, dpi=dpi)
        plt.close(fig)
    (out_dir / "plots.json").write_text(json.dumps(sidecar, indent=1))
    return sidecar
