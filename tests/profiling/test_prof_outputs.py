"""Timeline CSV/JSON and the PNG plots from synthetic samples: files non-trivial, one series per worker."""
from __future__ import annotations

import csv
import json
import math

from pipeline.profiling.gpu import GpuDeviceSample
from pipeline.profiling.plots import save_all, utilisation_figure
from pipeline.profiling.sampler import ProcessSample, ThreadSample
from pipeline.profiling.summary import latency_table
from pipeline.profiling.timeline import COLUMNS, Timeline
from test_prof_trace import pipelined_frames

WORKERS = ("capture", "detection", "inference", "publisher")


def make_timeline(gpu=False, n=10):
    tl = Timeline(100.0)
    for i in range(n):
        t = 100.0 + 0.5 * i
        for k, w in enumerate(WORKERS):
            pid = 1000 + k if not (w == "detection" and i >= 5) else 2000   # detection restarted
            s = ProcessSample(t, w, pid, 1 if pid != 2000 else 2, cpu_percent=10.0 * (k + 1),
                              rss_bytes=50e6 + k, uss_bytes=30e6, num_threads=4, ctx_voluntary_per_s=10,
                              ctx_involuntary_per_s=1, threads=[ThreadSample(pid, "python (main)", 9.0)],
                              threads_measured=True)
            tl.add_process(s, {"fps": 30.0, "p50_ms": 2.0 * k, "frames_in": i * 15},
                           {"device": 0, "mem_bytes": 1e9, "sm_util_percent": 50.0} if gpu and w == "inference"
                           else None)
        if gpu:
            tl.add_gpu(t, GpuDeviceSample(0, "H100", util_percent=80, mem_used_bytes=2e9, mem_total_bytes=8e10,
                                          sm_clock_mhz=1980, power_w=300))
        tl.add_ring(t, "published", 29.5)
    tl.event(102.5, "restart", worker="detection", old_pid=1001, pid=2000, generation=2)
    return tl


def test_csv_and_json(tmp_path):
    tl = make_timeline(gpu=True)
    tl.write_csv(tmp_path / "timeline.csv")
    tl.write_json(tmp_path / "timeline.json")
    rows = list(csv.DictReader(open(tmp_path / "timeline.csv")))
    assert tuple(rows[0]) == COLUMNS
    workers = [r for r in rows if r["kind"] == "worker"]
    assert len(workers) == 40 and {r["worker"] for r in workers} == set(WORKERS)
    assert {r["pid"] for r in workers if r["worker"] == "detection"} == {"1001", "2000"}
    assert all(float(r["cpu_percent"]) >= 0 and float(r["rss_bytes"]) > 0 for r in workers)
    assert [r for r in rows if r["kind"] == "gpu"][0]["sm_clock_mhz"] == "1980"
    doc = json.loads((tmp_path / "timeline.json").read_text())
    assert doc["events"][0]["kind"] == "restart" and len(doc["threads"]) == 40
    assert all(not isinstance(v, float) or not math.isnan(v) for r in doc["rows"] for v in r.values())


def test_utilisation_plot_has_one_series_per_worker():
    fig = utilisation_figure(make_timeline())
    cpu_ax, rss_ax = fig.axes
    assert [ln.get_label() for ln in cpu_ax.get_lines()] == list(WORKERS)
    assert len(rss_ax.get_lines()) == len(WORKERS)


def test_save_all_writes_non_trivial_pngs(tmp_path):
    frames = pipelined_frames(40)
    sidecar = save_all(tmp_path, make_timeline(gpu=True), latency_table(frames), frames)
    for name in ("utilisation.png", "stage_latency.png", "frame_breakdown.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, name
    saved = json.loads((tmp_path / "plots.json").read_text())
    assert saved == sidecar
    assert saved["utilisation.png"][0] == list(WORKERS)
    assert "gpu0 util %" in saved["utilisation.png"][2] and "inference GPU MiB" in saved["utilisation.png"][3]
    assert saved["stage_latency.png"][0] == ["capture_wait", "queue_detect", "detection", "queue_infer",
                                            "inference", "publish"]
    assert len(saved["frame_breakdown.png"][0]) == 6


def test_plots_without_frames_still_render(tmp_path):
    save_all(tmp_path, make_timeline(n=2), {}, [])
    assert (tmp_path / "frame_breakdown.png").stat().st_size > 5_000
