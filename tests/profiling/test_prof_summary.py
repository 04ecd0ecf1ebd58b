"""Bottleneck verdicts from synthetic stats, and busy fractions from heartbeats and from stamps."""
from __future__ import annotations

import math

import pytest

from pipeline.profiling.summary import StageLoad, find_bottleneck, heartbeat_load, latency_table, stamps_load
from pipeline.profiling.trace import FrameStamps
from pipeline.runtime.records import STAGES


def snapshots(rate, p50, seconds=5.0, dt=0.5, generation=1, start=0):
    n = int(seconds / dt) + 1
    return [{"t": i * dt, "generation": generation, "frames_in": start + int(rate * i * dt), "p50_ms": p50}
            for i in range(n)]


def test_heartbeat_load_is_rate_times_time_per_item():
    load = heartbeat_load("inference", snapshots(rate=20, p50=45.0))
    assert load.items_per_s == pytest.approx(20, rel=0.02)
    assert load.busy == pytest.approx(0.9, rel=0.03)
    assert load.basis == "heartbeats"


def test_heartbeat_load_ignores_the_gap_across_a_restart():
    before = snapshots(rate=10, p50=10, seconds=2, generation=1, start=500)
    after = [dict(s, t=s["t"] + 2.5) for s in snapshots(rate=10, p50=10, seconds=2, generation=2)]
    load = heartbeat_load("detection", before + after)
    assert load.items_per_s == pytest.approx(10, rel=0.05)   # no negative rate from the counter reset


def test_no_timings_gives_nan():
    assert math.isnan(heartbeat_load("x", []).busy)
    assert math.isnan(heartbeat_load("x", snapshots(rate=10, p50=0.0)).busy)


def test_names_the_slow_stage_with_evidence():
    loads = [StageLoad("capture", busy=1.0, cpu_percent=5, items_per_s=30, ms_per_item=33),
             StageLoad("detection", busy=0.31, cpu_percent=30, items_per_s=16, ms_per_item=19),
             StageLoad("inference", busy=0.97, cpu_percent=95, items_per_s=16, ms_per_item=60),
             StageLoad("publisher", busy=0.02, cpu_percent=2, items_per_s=16, ms_per_item=1),
             StageLoad("metrics", busy=0.99, cpu_percent=5)]   # off the data path: never the bottleneck
    b = find_bottleneck(loads, ncores=8)
    assert (b.stage, b.kind) == ("inference", "stage")
    assert "inference busy 97 %" in b.evidence and "detection busy 31 %" in b.evidence
    assert "capture waits on the source 95 %" in b.evidence
    text = b.text()
    assert text.startswith("bottleneck: inference")


def test_source_bound_when_nothing_is_saturated():
    loads = [StageLoad("capture", busy=0.99, cpu_percent=4, main_thread_cpu_percent=3),
             StageLoad("detection", busy=0.2, cpu_percent=20), StageLoad("inference", busy=0.3, cpu_percent=30)]
    b = find_bottleneck(loads, ncores=2)
    assert (b.stage, b.kind) == ("capture", "source")
    assert "waits on it 96 %" in b.headline


def test_cpu_starved_and_idle_verdicts():
    loads = [StageLoad("capture", busy=0.3, cpu_percent=60, main_thread_cpu_percent=25),
             StageLoad("detection", busy=0.6, cpu_percent=70), StageLoad("inference", busy=0.7, cpu_percent=60)]
    assert find_bottleneck(loads, ncores=2).kind == "cpu"
    assert find_bottleneck(loads, ncores=16).kind == "none"
    assert find_bottleneck([StageLoad("capture")], ncores=2).kind == "unknown"


def frame(i, spans_ms=(1, 2, 5, 1, 40, 1), period_ms=50):
    t = 1_000_000_000 + i * int(period_ms * 1e6)
    stamps = {"capture": t}
    for name, ms in zip(STAGES[1:], spans_ms):
        t += int(ms * 1e6)
        stamps[name] = t
    return FrameStamps(i, 1, stamps)


def test_stamps_load_and_latency_table():
    frames = [frame(i) for i in range(40)]
    load = stamps_load("inference", frames)
    assert load.basis == "stamps" and load.ms_per_item == pytest.approx(40, abs=0.01)
    assert load.busy == pytest.approx(0.8, abs=0.03)         # 40 ms of every 50 ms
    table = latency_table(frames)
    assert table["inference"][50] == pytest.approx(40, abs=0.01)
    assert table["end_to_end"][99] == pytest.approx(50, abs=0.01)


def test_falling_behind_the_source_names_the_busiest_stage():
    loads = [StageLoad("capture", busy=0.98, cpu_percent=3, items_per_s=30),
             StageLoad("detection", busy=0.05, items_per_s=24), StageLoad("inference", busy=0.7, items_per_s=13),
             StageLoad("publisher", busy=0.01, items_per_s=13)]
    b = find_bottleneck(loads, ncores=2)
    assert (b.stage, b.kind) == ("inference", "stage")
    assert "published 13.0/s of 30.0/s captured" in b.evidence and "frames/s are published" in b.headline
    loads[3].items_per_s = loads[2].items_per_s = 29.5   # keeps up: the source sets the pace
    assert find_bottleneck(loads, ncores=2).kind == "source"
