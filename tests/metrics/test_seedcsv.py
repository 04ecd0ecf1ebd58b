import csv
import math

import pytest

from pipeline.metrics.engine import MetricsEngine
from pipeline.metrics.seedcsv import (CONDITIONS, HEADER, SEED_COLUMNS, MetricsCsvError, append_row, build_row,
                                      default_csv_name, parse_condition)
from pipeline.metrics.window import WindowSummary

SEED_HEADER_TEXT = ("Timestamp,Condition,Avg Processing FPS,Avg End-to-End Latency (ms),"
                    "Avg Pose Change (Euclidean Dist),Avg Translation Change (mm),Avg Joint Position Change (mm),"
                    "Avg Shape Param Variance,Avg Detection/Tracking Rate (%)")


def summary(**kw):
    base = dict(seconds=5.0, frames=10, fps=2.0, end_to_end_ms=12.5, pose_change=0.25,
                translation_change_mm=math.nan, joint_change_mm=math.nan, shape_variance=0.5,
                detection_rate=80.0, backend="torch", model="poco-cliff", precision="fp32", generation=1)
    base.update(kw)
    return WindowSummary(**base)


def test_first_nine_columns_exact():
    assert ",".join(SEED_COLUMNS) == SEED_HEADER_TEXT
    assert HEADER[:9] == SEED_COLUMNS and len(set(HEADER)) == len(HEADER)


def test_new_file_gets_header_then_rows_with_nan(tmp_path):
    path = tmp_path / "m.csv"
    append_row(path, build_row(summary(), "Optimal"))
    append_row(path, build_row(summary(untrained=True), "Low Light"))
    lines = path.read_text().splitlines()
    assert lines[0].startswith(SEED_HEADER_TEXT + ",Model,")
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 2
    r = rows[0]
    assert r["Condition"] == "Optimal" and r["Avg Processing FPS"] == "2"
    assert r["Avg Translation Change (mm)"] == "NaN" and r["Avg Joint Position Change (mm)"] == "NaN"
    assert r["Avg End-to-End Latency (ms)"] == "12.5" and r["Untrained"] == "0"
    assert rows[1]["Untrained"] == "1" and "UNTRAINED" in rows[1]["Model"]
    import datetime
    datetime.datetime.strptime(r["Timestamp"], "%Y-%m-%d %H:%M:%S")


def test_gpu_columns_empty_when_not_measured_number_when_measured(tmp_path):
    # docs/metrics.md: a CPU-only pipeline has no GPU numbers: an empty cell, not 0 and not NaN
    path = tmp_path / "m.csv"
    append_row(path, build_row(summary(), "Optimal"))
    append_row(path, build_row(summary(gpu_util_percent=0.0, gpu_mem_bytes=3 * 2**20), "Optimal"))
    cpu, gpu = list(csv.DictReader(path.open()))
    assert cpu["GPU Util (%)"] == "" and cpu["GPU Memory (MB)"] == ""
    assert gpu["GPU Util (%)"] == "0" and gpu["GPU Memory (MB)"] == "3"


def test_seed_only_file_gets_seed_columns(tmp_path):
    path = tmp_path / "seed.csv"
    path.write_text(SEED_HEADER_TEXT + "\n2024-01-01 10:00:00,Optimal,20,50,1,2,3,0.1,100\n")
    cols = append_row(path, build_row(summary(), "Fast Motion"))
    assert cols == SEED_COLUMNS
    last = path.read_text().splitlines()[-1].split(",")
    assert len(last) == 9 and last[1] == "Fast Motion"


def test_skipped_frames_are_their_own_columns_and_older_files_stay_appendable(tmp_path):
    s = summary()
    s.worker_drops, s.worker_skipped = {"inference": 2}, {"detection": 40}
    row = build_row(s, "Optimal")
    assert row["Dropped Frames inference"] == "2" and row["Skipped Frames detection"] == "40"
    assert row["Dropped Frames detection"] == "NaN"  # skipped-by-design is not counted as lost
    old = tmp_path / "old.csv"  # written before the Skipped Frames columns existed
    older = [c for c in HEADER if not c.startswith("Skipped Frames")]
    old.write_text(",".join(older) + "\n")
    assert append_row(old, row) == tuple(older)
    assert len(old.read_text().splitlines()[-1].split(",")) == len(older)


def test_refuses_mismatched_header(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("Timestamp,Condition,FPS\n1,2,3\n")
    before = path.read_text()
    with pytest.raises(MetricsCsvError, match=r"column 3 is 'FPS' where 'Avg Processing FPS'"):
        append_row(path, build_row(summary(), "Optimal"))
    assert path.read_text() == before


def test_missing_directory_is_clear_error(tmp_path):
    with pytest.raises(MetricsCsvError, match="does not exist"):
        append_row(tmp_path / "nope" / "m.csv", build_row(summary(), "Optimal"))


def test_torn_last_line_does_not_swallow_row(tmp_path):
    path = tmp_path / "m.csv"
    append_row(path, build_row(summary(), "Optimal"))
    with path.open("a") as fh:
        fh.write("2024-01-01 10:00:00,Opt")
    append_row(path, build_row(summary(), "Optimal"))
    assert path.read_text().splitlines()[-1].startswith(build_row(summary(), "Optimal")["Timestamp"][:4])


def test_conditions():
    for c in CONDITIONS:
        assert parse_condition(c) == c
    assert parse_condition("low light") == "Low Light"
    assert parse_condition(None) == "Optimal"
    assert parse_condition("Custom:rain, at night") == "Custom: rain, at night"
    assert parse_condition("Custom", note="two people") == "Custom: two people"
    with pytest.raises(MetricsCsvError, match="allowed: Optimal, Low Light, Partial Occlusion"):
        parse_condition("Darkness")
    with pytest.raises(MetricsCsvError, match="only allowed with the Custom"):
        parse_condition("Optimal", note="x")
    with pytest.raises(MetricsCsvError, match="control"):
        parse_condition("Custom:a\nb")


def test_default_names_follow_seed():
    assert default_csv_name("trt") == "pocolib_demo_metrics_avg.csv"
    for b in ("torch", "compile", "onnx", ""):
        assert default_csv_name(b) == "pocolib_demo_no_trt_metrics_avg.csv"


def test_engine_record_default_name(tmp_path, make_frame, make_person):
    eng = MetricsEngine()
    for i in range(5):
        eng.observe(make_frame(i, [make_person()], backend="trt"))
    res = eng.record("Partial Occlusion", 5, directory=tmp_path)
    assert res.path.endswith("pocolib_demo_metrics_avg.csv")
    assert res.as_dict()["row"]["Condition"] == "Partial Occlusion"
    with pytest.raises(MetricsCsvError, match="unknown condition"):
        eng.record("Sunny", 5, directory=tmp_path)
