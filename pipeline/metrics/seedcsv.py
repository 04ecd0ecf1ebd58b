"""The seed-compatible metrics CSV: one row of trailing-window averages per `record`.

The first nine columns are exactly the seed's, so old and new rows sit in one table; posepipe's
extra columns follow. Rules:
- The header is written when the file is new (or empty). Appending to a file whose header is not
  ours is refused with the first differing column, except a file with exactly the seed's nine
  columns: there only those nine are appended, so a seed CSV keeps growing in its own format.
- Timestamp is local time `%Y-%m-%d %H:%M:%S`; NaN is written as `NaN`; floats with 6
  significant digits.
- Each row is flushed and fsync'ed before `append_row` returns (a crash loses no recorded row);
  an advisory lock keeps two writers from interleaving.
- Default file name follows the seed per backend: `pocolib_demo_metrics_avg.csv` for `trt`,
  `pocolib_demo_no_trt_metrics_avg.csv` for every other backend.
- Conditions: the seed's five names (matched case-insensitively) or `Custom`. Free text goes with
  Custom only, as `Custom:<text>` (or a separate note), and is stored as `Custom: <text>`.
"""
from __future__ import annotations

import csv
import datetime as _dt
import fcntl
import io
import logging
import math
import os
import unicodedata
from pathlib import Path
from typing import Mapping

from pipeline.metrics.percentiles import CSV_SPANS
from pipeline.metrics.window import WindowSummary

log = logging.getLogger(__name__)

SEED_COLUMNS = (
    "Timestamp",
    "Condition",
    "Avg Processing FPS",
    "Avg End-to-End Latency (ms)",
    "Avg Pose Change (Euclidean Dist)",
    "Avg Translation Change (mm)",
    "Avg Joint Position Change (mm)",
    "Avg Shape Param Variance",
    "Avg Detection/Tracking Rate (%)",
)
CONDITIONS = ("Optimal", "Low Light", "Partial Occlusion", "Fast Motion", "Static+Moving Occlusion", "Custom")
# Fixed so every row of a file has the same columns; a worker not running writes NaN.
WORKERS = ("capture", "detection", "inference", "publisher", "metrics")
SPAN_LABELS = {
    "capture_wait": "Capture Wait",
    "detection": "Detection",
    "inference": "Inference",
    "publish": "Publish",
    "end_to_end": "End-to-End",
}
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
MAX_NOTE_CHARS = 120

EXTRA_COLUMNS = (
    "Model", "Backend", "Precision", "Generation", "Untrained", "Window (s)", "Frames",
    "Avg Persons", "Max Persons", "Avg Vertex Change (mm)",
    *[f"{SPAN_LABELS[s]} p{q} (ms)" for s in CSV_SPANS for q in (50, 95, 99)],
    *[f"Dropped Frames {w}" for w in WORKERS],
    "Metrics Missed Records",
    *[f"CPU % {w}" for w in WORKERS],
    *[f"RSS (MB) {w}" for w in WORKERS],
    "GPU Util (%)", "GPU Memory (MB)",
    *[f"Skipped Frames {w}" for w in WORKERS],
    "Stream",   # several sources: one row per stream and one `total` row; last: older files stay appendable
)
HEADER = SEED_COLUMNS + EXTRA_COLUMNS


class MetricsCsvError(ValueError):
    """A CSV that cannot be written as asked; the message says why and what to do."""


def parse_condition(value: str | None, note: str | None = None) -> str:
    """Canonical condition text, or MetricsCsvError listing the allowed ones."""
    allowed = ", ".join(CONDITIONS)
    if value is None or not str(value).strip():
        value = "Optimal" if note is None else "Custom"
    text = str(value).strip()
    head, sep, tail = text.partition(":")
    if sep and head.strip().lower() == "custom":
        if note is not None:
            raise MetricsCsvError("give the Custom text either as 'Custom:<text>' or as a note, not both")
        return _custom(tail)
    for name in CONDITIONS:
        if text.lower() == name.lower():
            if note is not None:
                if name != "Custom":
                    raise MetricsCsvError(f"a note is only allowed with the Custom condition, not with {name!r}")
                return _custom(note)
            return name
    raise MetricsCsvError(
        f"unknown condition {text!r}; allowed: {allowed} (free text as 'Custom:<text>')")


def _custom(text: str) -> str:
    text = text.strip()
    if not text:
        return "Custom"
    if len(text) > MAX_NOTE_CHARS:
        raise MetricsCsvError(f"Custom condition text is {len(text)} characters; at most {MAX_NOTE_CHARS}")
    if any(unicodedata.category(ch).startswith("C") for ch in text):
        raise MetricsCsvError("Custom condition text must not contain control characters or line breaks")
    return f"Custom: {text}"


def default_csv_name(backend: str) -> str:
    return "pocolib_demo_metrics_avg.csv" if backend == "trt" else "pocolib_demo_no_trt_metrics_avg.csv"


def format_value(value) -> str:
    if value is None:
        return "NaN"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def build_row(summary: WindowSummary, condition: str,
              when: _dt.datetime | None = None) -> dict[str, str]:
    """One CSV row (column -> text) from a window summary; `condition` must be canonical."""
    when = when or _dt.datetime.now()
    model = summary.model or "unknown"
    if summary.untrained:
        # architecture.md §8: untrained output is flagged in the model field of every row.
        model = f"{model} (UNTRAINED random weights)"
    v: dict[str, object] = {
        "Timestamp": when.strftime(TIMESTAMP_FORMAT),
        "Condition": condition,
        "Avg Processing FPS": summary.fps,
        "Avg End-to-End Latency (ms)": summary.end_to_end_ms,
        "Avg Pose Change (Euclidean Dist)": summary.pose_change,
        "Avg Translation Change (mm)": summary.translation_change_mm,
        "Avg Joint Position Change (mm)": summary.joint_change_mm,
        "Avg Shape Param Variance": summary.shape_variance,
        "Avg Detection/Tracking Rate (%)": summary.detection_rate,
        "Model": model,
        "Backend": summary.backend or "unknown",
        "Precision": summary.precision or "unknown",
        "Generation": summary.generation,
        "Untrained": bool(summary.untrained),
        "Window (s)": summary.seconds,
        "Frames": summary.frames,
        "Avg Persons": summary.persons_mean,
        "Max Persons": summary.persons_max,
        "Avg Vertex Change (mm)": summary.vertex_change_mm,
        "Metrics Missed Records": summary.missed,
        "Stream": "main",
        # Not measured (nothing on a GPU, or no NVML for the utilisation) is an empty cell, never
        # 0 and never the NaN of "measured, but no value in this window" (docs/metrics.md).
        "GPU Util (%)": _measured(summary.gpu_util_percent),
        "GPU Memory (MB)": _measured(summary.gpu_mem_bytes / 2**20),
    }
    for span in CSV_SPANS:
        pct = summary.stage_ms.get(span, {})
        for q in (50, 95, 99):
            v[f"{SPAN_LABELS[span]} p{q} (ms)"] = pct.get(q, math.nan)
    for w in WORKERS:
        st = summary.workers.get(w)
        v[f"Dropped Frames {w}"] = summary.worker_drops.get(w, math.nan)
        v[f"Skipped Frames {w}"] = summary.worker_skipped.get(w, math.nan)
        v[f"CPU % {w}"] = st.cpu_percent if st else math.nan
        v[f"RSS (MB) {w}"] = st.rss_bytes / 2**20 if st else math.nan
    missing = set(HEADER) - set(v)
    assert not missing, missing
    return {col: format_value(v[col]) for col in HEADER}


def _measured(value: float):
    return "" if math.isnan(value) else value


def append_row(path: str | os.PathLike, row: Mapping[str, str]) -> tuple[str, ...]:
    """Append `row` to the CSV at `path` (header first when new). Returns the columns written."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise MetricsCsvError(
            f"cannot write metrics CSV {str(path)!r}: directory {str(parent)!r} does not exist; "
            "create it or pass --csv with a path in an existing directory")
    if path.exists() and not path.is_file():
        raise MetricsCsvError(f"cannot write metrics CSV {str(path)!r}: it exists and is not a regular file")
    missing = [c for c in SEED_COLUMNS if c not in row]
    if missing:
        raise MetricsCsvError(f"row lacks the seed columns {missing}")
    try:
        fh = open(path, "a+", newline="", encoding="utf-8")
    except OSError as exc:
        raise MetricsCsvError(f"cannot open metrics CSV {str(path)!r}: {exc.strerror}") from exc
    with fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            fh.seek(0)
            existing = fh.read()
            columns = _columns_for(path, existing)
            out = io.StringIO()
            writer = csv.writer(out, lineterminator="\n")
            if not existing.strip():
                writer.writerow(columns)
            elif not existing.endswith("\n"):
                # A torn last line (crash mid-write elsewhere) must not swallow our row.
                out.write("\n")
            writer.writerow([row.get(c, "NaN") for c in columns])
            fh.seek(0, os.SEEK_END)
            fh.write(out.getvalue())
            fh.flush()
            os.fsync(fh.fileno())
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    return columns


def _columns_for(path: Path, existing: str) -> tuple[str, ...]:
    if not existing.strip():
        return HEADER
    first = next(csv.reader(io.StringIO(existing.splitlines()[0])), [])
    found = tuple(c.strip() for c in first)
    if found == HEADER:
        return HEADER
    if found == SEED_COLUMNS:
        log.info("%s has the seed's nine columns only; appending those and leaving out posepipe's extras", path)
        return SEED_COLUMNS
    # An earlier posepipe wrote a subset of today's columns in today's order (newer ones were
    # added at the end or beside their kind): append those.
    if (len(found) > len(SEED_COLUMNS) and found[:len(SEED_COLUMNS)] == SEED_COLUMNS
            and len(set(found)) == len(found) and found == tuple(c for c in HEADER if c in set(found))):
        log.info("%s was started by an earlier posepipe; appending its %d columns", path, len(found))
        return found
    for i, (want, got) in enumerate(zip(HEADER, found)):
        if want != got:
            reason = f"column {i + 1} is {got!r} where {want!r} is expected"
            break
    else:
        reason = (f"it has {len(found)} columns where posepipe writes {len(HEADER)} "
                  f"(or the seed's {len(SEED_COLUMNS)})")
    raise MetricsCsvError(
        f"refusing to append to {str(path)!r}: its header does not match the metrics CSV ({reason}); "
        "pass --csv with a new file name, or move the old file away")
