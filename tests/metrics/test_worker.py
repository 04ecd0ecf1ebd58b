"""The metrics worker driven directly (no runner): records in, CSV row and live extras out."""
import csv

import numpy as np
import pytest

from pipeline.pose.frame import fill_record
from pipeline.runtime.records import poses_dtype
from pipeline.runtime.worker import SettingError, WorkerContext
from workers import metrics as metrics_worker


class Item:
    def __init__(self, record, overwritten_before=0):
        self.record = record
        self.overwritten_before = overwritten_before


def make_worker(tmp_path, **params):
    p = metrics_worker.Params(prometheus=False, stats_poll_s=0, dump_frames=str(tmp_path / "frames.csv"), **params)
    w = metrics_worker.MetricsWorker(p, WorkerContext("metrics", 1, {}, {"output_dir": str(tmp_path)}))
    w.setup()
    return w


def test_worker_records_row_and_reports_live(tmp_path, make_frame, make_person):
    w = make_worker(tmp_path)
    w.params.live_every_s = 0
    rec = np.zeros((), dtype=poses_dtype(4))
    import time
    now = time.monotonic_ns() - 100_000_000  # every publish stamp (capture + 30 ms) lies in the past
    for i in range(10):
        bp = np.zeros(69)
        bp[2] = 0.05 * i
        f = make_frame(i, [make_person(body_pose=bp, transl=(0, 0, 3 + 0.001 * i))],
                       t_capture_ns=now - (10 - i) * 20_000_000)
        fill_record(rec, f)
        w.process(Item(rec.copy(), overwritten_before=0))
    assert w.extras["persons"] == 1.0 and w.extras["e2e_p50_ms"] > 0
    out = w.on_set("record", {"condition": "Fast Motion", "seconds": 5, "csv": str(tmp_path / "r.csv")})
    assert out["row"]["Condition"] == "Fast Motion"
    rows = list(csv.DictReader(open(tmp_path / "r.csv")))
    assert len(rows) == 1
    r = rows[0]
    assert float(r["Avg Translation Change (mm)"]) == pytest.approx(1.0, abs=1e-2)
    assert float(r["Avg Detection/Tracking Rate (%)"]) == 100.0
    assert float(r["End-to-End p50 (ms)"]) <= float(r["End-to-End p95 (ms)"]) <= float(r["End-to-End p99 (ms)"])
    w.stop()
    assert len(open(tmp_path / "frames.csv").read().splitlines()) == 11


def test_worker_record_bad_inputs(tmp_path):
    w = make_worker(tmp_path)
    with pytest.raises(SettingError, match="known: record"):
        w.on_set("threshold", 1)
    with pytest.raises(SettingError, match="seconds"):
        w.on_set("record", {"seconds": 0})
    with pytest.raises(SettingError, match="unknown field"):
        w.on_set("record", {"path": "x"})
    with pytest.raises(ValueError, match="allowed: Optimal"):
        w.on_set("record", {"condition": "Dusk", "csv": str(tmp_path / "a.csv")})
    with pytest.raises(ValueError, match="does not exist"):
        w.on_set("record", {"csv": str(tmp_path / "no" / "a.csv")})
    w.stop()


def test_record_writes_only_inside_the_runs_output_folder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "link").symlink_to(tmp_path)                 # a link inside that leads outside
    w = make_worker(out)
    outside = [str(tmp_path / "evil.csv"), "../evil.csv", str(out / "link" / "evil.csv"), "/etc/cron.d/x.csv"]
    for path in outside:
        with pytest.raises(SettingError, match="outside the run's output folder .*output_dir="):
            w.on_set("record", {"csv": path})
    for directory in (str(tmp_path), "/etc", "link"):
        with pytest.raises(SettingError, match="outside the run's output folder"):
            w.on_set("record", {"directory": directory})
    with pytest.raises(SettingError, match="must be a .csv file"):
        w.on_set("record", {"csv": str(out / ".bashrc")})
    w.on_set("record", {"csv": "mine.csv"})            # relative: inside the output folder
    w.on_set("record", {})                              # default: the seed's file name, in the output folder
    assert (out / "mine.csv").is_file() and list(out.glob("pocolib_demo_*_avg.csv"))
    assert not list(tmp_path.glob("evil*")) and not list(tmp_path.glob("pocolib*"))
    w.stop()
