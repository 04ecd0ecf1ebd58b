"""PNG plots of posepipe metrics.

    python tools/plot_metrics.py csv pocolib_demo_no_trt_metrics_avg.csv -o bars.png
        bars of the seed columns, one group per condition, one bar per backend (mean of its rows)
    python tools/plot_metrics.py run frames.csv -o latency.png [--stages inference,end_to_end]
        per-stage latency over time from a per-frame stamp dump (metrics worker's dump_frames option)

Works headless (matplotlib Agg backend).
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pipeline.metrics.dump import DUMP_COLUMNS  # noqa: E402
from pipeline.metrics.percentiles import STAGE_SPANS, stage_latencies_ms  # noqa: E402
from pipeline.metrics.seedcsv import SEED_COLUMNS  # noqa: E402
from pipeline.runtime.records import STAGES  # noqa: E402

BAR_COLUMNS = SEED_COLUMNS[2:]


class PlotError(ValueError):
    pass


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _float(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def read_metrics_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = tuple(reader.fieldnames or ())
        if header[:len(SEED_COLUMNS)] != SEED_COLUMNS:
            raise PlotError(f"{path} is not a metrics CSV: its first columns are {list(header[:9])}, "
                            f"expected {list(SEED_COLUMNS)}")
        rows = list(reader)
    if not rows:
        raise PlotError(f"{path} has a header but no rows; record some first (pipeline record)")
    return rows


def plot_csv(path: Path, out: Path) -> Path:
    rows = read_metrics_csv(path)
    conditions = list(dict.fromkeys(r["Condition"] for r in rows))
    backends = list(dict.fromkeys(r.get("Backend") or path.stem for r in rows))
    plt = _pyplot()
    ncols = 3
    nrows = math.ceil(len(BAR_COLUMNS) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5 * ncols, 3.6 * nrows), squeeze=False)
    width = 0.8 / max(1, len(backends))
    for ax, column in zip(axes.flat, BAR_COLUMNS):
        for bi, backend in enumerate(backends):
            means = []
            for cond in conditions:
                vals = [_float(r[column]) for r in rows
                        if r["Condition"] == cond and (r.get("Backend") or path.stem) == backend]
                vals = [v for v in vals if math.isfinite(v)]
                means.append(sum(vals) / len(vals) if vals else 0.0)
            ax.bar([i + bi * width for i in range(len(conditions))], means, width, label=backend)
        ax.set_title(column, fontsize=9)
        ax.set_xticks([i + width * (len(backends) - 1) / 2 for i in range(len(conditions))])
        ax.set_xticklabels(conditions, rotation=30, ha="right", fontsize=7)
    for ax in list(axes.flat)[len(BAR_COLUMNS):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"{path.name}: mean per condition and backend (NaN rows left out)")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def read_frame_dump(path: Path) -> list[dict[str, int]]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != DUMP_COLUMNS:
            raise PlotError(f"{path} is not a per-frame stamp dump: expected columns {list(DUMP_COLUMNS)}")
        rows = []
        for n, r in enumerate(reader, start=2):
            try:
                rows.append({s: int(r[f"{s}_ns"]) for s in STAGES})
            except ValueError as exc:
                raise PlotError(f"{path} line {n}: stamps must be integers ({exc})") from exc
    if not rows:
        raise PlotError(f"{path} has no frames")
    return rows


def plot_run(path: Path, out: Path, stages: list[str] | None = None) -> Path:
    rows = read_frame_dump(path)
    stages = stages or list(STAGE_SPANS)
    unknown = [s for s in stages if s not in STAGE_SPANS]
    if unknown:
        raise PlotError(f"unknown stage(s) {unknown}; choose from {list(STAGE_SPANS)}")
    t0 = min(r["capture"] for r in rows if r["capture"]) if any(r["capture"] for r in rows) else 0
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(11, 5))
    for stage in stages:
        xs, ys = [], []
        for r in rows:
            lat = stage_latencies_ms({k: v for k, v in r.items() if v})
            if stage in lat and r["capture"]:
                xs.append((r["capture"] - t0) / 1e9)
                ys.append(lat[stage])
        if xs:
            ax.plot(xs, ys, label=stage, linewidth=0.8)
    ax.set_xlabel("time since first capture (s)")
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"{path.name}: per-stage latency, {len(rows)} frames")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="kind", required=True)
    a = sub.add_parser("csv", help="bars per condition/backend from a metrics CSV")
    a.add_argument("path", type=Path)
    a.add_argument("-o", "--out", type=Path)
    b = sub.add_parser("run", help="latency over time per stage from a per-frame stamp dump")
    b.add_argument("path", type=Path)
    b.add_argument("-o", "--out", type=Path)
    b.add_argument("--stages", help=f"comma-separated subset of {','.join(STAGE_SPANS)}")
    args = ap.parse_args(argv)
    if not args.path.is_file():
        print(f"error: {args.path} does not exist or is not a file", file=sys.stderr)
        return 2
    out = args.out or args.path.with_suffix(".png")
    if not out.parent.is_dir():
        print(f"error: output directory {out.parent} does not exist", file=sys.stderr)
        return 2
    try:
        if args.kind == "csv":
            plot_csv(args.path, out)
        else:
            plot_run(args.path, out, args.stages.split(",") if args.stages else None)
    except (PlotError, UnicodeDecodeError, csv.Error) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
