"""The A/B comparison library (pipeline/metrics/ab.py) in-process: pairing, pair rate, cost
columns, the status table and the CSV."""
import csv

import numpy as np
import pytest

from pipeline.metrics.ab import CSV_COLUMNS, AbComparer, csv_rows, format_table, write_csv


@pytest.fixture
def frame(make_frame, make_person):
    def make(fid, angle=0.0):
        bp = np.zeros(69)
        bp[0] = angle
        return make_frame(fid, [make_person(body_pose=bp)])
    return make


def test_pair_rate_counts_a_frames_from_bs_first_frame(frame):
    cmp = AbComparer()
    for fid in range(10):          # B is still loading its model: A's first frames cannot pair
        cmp.feed("A", frame(fid))
    for fid in (10, 11, 12, 13):
        cmp.feed("A", frame(fid))
    for fid in (11, 13):           # B (fed A's records, slower) got to two of A's frames since
        cmp.feed("B", frame(fid))
    cmp.feed("A", frame(14))
    agr = cmp.summary()["agreement"]
    # A's frames 11..14 count (4), of which 2 matched; frame 10 came before B's first frame
    assert agr["matched"] == 2 and agr["pair_rate"] == 0.5
    assert agr["rot_deg"] == 0.0 and agr["same_count"] == 1.0


def test_no_pair_rate_before_b_produced_anything(frame):
    cmp = AbComparer()
    cmp.feed("A", frame(1))
    assert cmp.summary()["agreement"]["pair_rate"] is None


def test_rotation_difference_of_matched_frames(frame):
    cmp = AbComparer()
    cmp.feed("A", frame(1, angle=0.0))
    cmp.feed("B", frame(1, angle=np.radians(24.0)))   # one of 24 joints off by 24 degrees
    assert cmp.summary()["agreement"]["rot_deg"] == pytest.approx(1.0, abs=1e-6)


def test_cost_reaches_the_table_and_the_csv(frame, tmp_path):
    cmp = AbComparer()
    cmp.feed("A", frame(1))
    cmp.feed("B", frame(1))
    cost = {"A": {"cpu_percent": 95.0, "cpu_ms_per_frame": 310.0, "rss_bytes": 2**29},
            "B": {"cpu_percent": 90.0, "cpu_ms_per_frame": 290.5, "rss_bytes": 2**30,
                  "gpu_mem_bytes": 3 * 2**20, "gpu_proc_util_percent": 12.0}}
    table = format_table({"worker": "inference", "changes": {"precision": "fp16"}, "b_state": "running",
                          "comparison": cmp.summary(), "cost": cost,
                          "tee": {"written": 7, "b_stale": 1, "b_overruns": 0}})
    assert "pair rate 100.0 %" in table and "A copied 7" in table and "B found 1 frames" in table
    cpu_row = next(line for line in table.splitlines() if line.startswith("CPU per Frame (ms)"))
    assert cpu_row.split()[-2:] == ["310.0", "290.5"]
    gpu_row = next(line for line in table.splitlines() if line.startswith("GPU Memory (MB)"))
    assert gpu_row.split()[-2:] == ["-", "3.000"]

    rows = csv_rows(cmp.summary(), "inference", {"precision": "fp16"}, cost)
    path = write_csv(str(tmp_path / "ab.csv"), rows)
    a, b = list(csv.DictReader(open(path)))
    assert a["Pair Rate (%)"] == b["Pair Rate (%)"] == "100.0"
    assert a["CPU per Frame (ms)"] == "310.0" and b["RSS (MB)"] == "1024.0" and a["GPU Memory (MB)"] == ""
    assert b["GPU SM Share (%)"] == "12.0"


def test_csv_refuses_a_file_with_other_columns(tmp_path):
    old = tmp_path / "old.csv"
    old.write_text(",".join(CSV_COLUMNS[:20]) + "\n")   # the columns before pair rate and cost
    with pytest.raises(ValueError, match="write to a new file"):
        write_csv(str(old), csv_rows(AbComparer().summary(), "inference", {}))
