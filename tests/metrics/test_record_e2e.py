"""`pipeline record` against a running pipeline (issue 6): the seed CSV row it appends."""
from __future__ import annotations

import csv
import math
import time

from pipeline.metrics.seedcsv import HEADER, SEED_COLUMNS
from pipeline_helpers import request, wait_for


def test_record_appends_a_seed_row_from_a_running_pipeline(run_cli, small_config, tmp_path):
    out = tmp_path / "metrics.csv"
    run_cli("start", "--detach", "--config", small_config, check=True)
    try:
        wait_for(lambda: all(w["frames_out"] > 0 for w in request("status")["workers"]), timeout=60,
                 what="frames through every worker")
        time.sleep(3.0)  # a few frames in the trailing window
        first = run_cli("record", "--condition", "Low Light", "--seconds", "5", "--csv", out)
        assert first.returncode == 0, first.stderr
        second = run_cli("record", "--condition", "Custom:bench lights off", "--seconds", "5", "--csv", out)
        assert second.returncode == 0, second.stderr
        bad = run_cli("record", "--condition", "Dusk", "--csv", out)
        assert bad.returncode != 0 and "Low Light" in bad.stderr  # lists the allowed conditions
    finally:
        assert run_cli("stop").returncode == 0

    with open(out, newline="") as fh:
        rows = list(csv.reader(fh))
    assert tuple(rows[0][:9]) == SEED_COLUMNS and tuple(rows[0]) == HEADER
    assert len(rows) == 3  # header written once, one row per record
    row = dict(zip(rows[0], rows[1]))
    time.strptime(row["Timestamp"], "%Y-%m-%d %H:%M:%S")
    assert row["Condition"] == "Low Light" and dict(zip(rows[0], rows[2]))["Condition"] == "Custom: bench lights off"
    fps = float(row["Avg Processing FPS"])
    latency = float(row["Avg End-to-End Latency (ms)"])
    assert fps > 0 and math.isfinite(latency) and latency > 0
    assert float(row["Avg Detection/Tracking Rate (%)"]) == 100.0  # the centre detector: one person always
    assert math.isfinite(float(row["Avg Shape Param Variance"]))
    # no SMPL files in tests: joint change is NaN, written as such
    assert row["Avg Joint Position Change (mm)"] == "NaN"
    for span in ("End-to-End", "Inference"):
        values = [float(row[f"{span} p{q} (ms)"]) for q in (50, 95, 99)]
        assert all(math.isfinite(v) and v > 0 for v in values) and values == sorted(values), (span, values)
    assert "UNTRAINED" in row["Model"] and row["Backend"] == "torch"
