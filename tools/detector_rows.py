"""The rows of the detection benchmarks (bench_detect.py, detect_quality.py): each detector
built and set up on its own, measured by the caller, then closed before the next one starts,
so one detector that cannot start here costs its row and not the run."""
from __future__ import annotations

import time


def started_detectors(rows, only=None):
    """For each (name, build) row: (name, set-up detector, setup seconds). With `only`, just the
    rows whose name holds one of its substrings. A detector that fails to build or set up is
    printed as such and skipped; each one is closed when the caller moves on."""
    for name, build in rows:
        if only and not any(o in name for o in only):
            continue
        t0 = time.perf_counter()
        try:
            det = build()
            det.setup()
        except Exception as exc:  # noqa: BLE001 - one row failing must not lose the others
            print(f"{name:<44} failed to start: {exc}", flush=True)
            continue
        try:
            yield name, det, time.perf_counter() - t0
        finally:
            det.close()
