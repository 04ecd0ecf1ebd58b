import math

import numpy as np
import pytest

from pipeline.metrics.engine import MetricsEngine
from pipeline.metrics.quantities import FrameQuantities
from pipeline.metrics.window import TrailingWindow, WorkerStats

S = 1_000_000_000


class Clock:
    def __init__(self, t=100 * S):
        self.t = t

    def __call__(self):
        return self.t


def q(t_ns, detected=100.0, pose=math.nan, e2e=10.0, persons=1, missed=0):
    return FrameQuantities(t_ns=t_ns, frame_id=0, persons=persons, detected=detected, pose_change=pose,
                           end_to_end_ms=e2e, stage_ms={"end_to_end": e2e}, missed=missed)


def test_fps_is_frames_over_window_seconds():
    clock = Clock(0)
    w = TrailingWindow(clock_ns=clock)
    clock.t = 20 * S
    for i in range(150):  # 150 frames spread over the last 5 s -> 30 FPS
        w.add(q(15 * S + int((i + 1) * S / 30)))
    s = w.summarize(5.0, now_ns=20 * S)
    assert s.frames == 150
    assert s.fps == pytest.approx(30.0)
    # frames older than the window are not counted; a 2 s window holds 60 of them
    assert w.summarize(2.0, now_ns=20 * S).fps == pytest.approx(30.0)


def test_fps_over_partial_window_uses_time_since_start():
    clock = Clock(10 * S)
    w = TrailingWindow(clock_ns=clock)   # started at t=10 s
    for i in range(20):
        w.add(q(10 * S + (i + 1) * S // 10))
    s = w.summarize(5.0, now_ns=12 * S)  # only 2 s observed
    assert s.fps == pytest.approx(10.0)


def test_fps_is_not_mean_of_instantaneous_fps():
    clock = Clock(0)
    w = TrailingWindow(clock_ns=clock)
    # 9 fast frames 10 ms apart then a 4 s stall then one frame: 10 frames in 5 s = 2 FPS
    times = [S + i * S // 100 for i in range(9)] + [5 * S]
    for t in times:
        w.add(q(t))
    s = w.summarize(5.0, now_ns=5 * S)
    assert s.fps == pytest.approx(2.0)


def test_nan_omitting_means_but_detection_counts_zeros():
    clock = Clock(0)
    w = TrailingWindow(clock_ns=clock)
    w.add(q(1 * S, detected=100.0, pose=math.nan))
    w.add(q(2 * S, detected=100.0, pose=1.0))
    w.add(q(3 * S, detected=0.0, pose=math.nan, e2e=math.nan, persons=0))
    w.add(q(4 * S, detected=100.0, pose=3.0))
    s = w.summarize(5.0, now_ns=5 * S)
    assert s.pose_change == pytest.approx(2.0)            # NaNs omitted
    assert s.detection_rate == pytest.approx(75.0)        # zero frame counted
    assert s.end_to_end_ms == pytest.approx(10.0)
    assert s.persons_mean == pytest.approx(0.75)
    assert math.isnan(s.translation_change_mm)            # no finite value at all


def test_window_is_trailing_and_excludes_old_frames():
    clock = Clock(0)
    w = TrailingWindow(clock_ns=clock)
    w.add(q(1 * S, pose=100.0))
    w.add(q(7 * S, pose=2.0))
    s = w.summarize(5.0, now_ns=8 * S)
    assert s.frames == 1 and s.pose_change == 2.0


def test_empty_window_is_nan_and_zero_fps():
    clock = Clock(0)
    w = TrailingWindow(clock_ns=clock)
    s = w.summarize(5.0, now_ns=10 * S)
    assert s.frames == 0 and s.fps == 0.0
    assert math.isnan(s.detection_rate) and math.isnan(s.end_to_end_ms)


def test_bad_window_lengths_rejected():
    w = TrailingWindow(max_seconds=60)
    for bad in (0, -1, 61, math.nan, "5"):
        with pytest.raises(ValueError):
            w.summarize(bad)


def test_worker_drops_are_growth_within_window_and_survive_restart():
    clock = Clock(0)
    w = TrailingWindow(clock_ns=clock)
    w.add_worker("detection", WorkerStats(drops=10, skipped=100), t_ns=1 * S)
    w.add_worker("detection", WorkerStats(drops=14, overruns=1, skipped=160), t_ns=6 * S)
    w.add_worker("detection", WorkerStats(drops=20, overruns=1, skipped=250, cpu_percent=55.0), t_ns=9 * S)
    s = w.summarize(5.0, now_ns=10 * S)   # baseline = newest sample at/before t=5 s -> drops 10
    assert s.worker_drops["detection"] == 11
    assert s.worker_skipped["detection"] == 150  # by design, counted apart from the losses
    assert s.workers["detection"].cpu_percent == 55.0
    w.add_worker("detection", WorkerStats(drops=3), t_ns=10 * S)   # restarted: counters reset
    assert w.summarize(5.0, now_ns=10 * S).worker_drops["detection"] == 3


def test_gpu_numbers_sum_memory_and_take_the_busiest_device():
    clock = Clock(10 * S)
    w = TrailingWindow(clock_ns=clock)
    w.add_worker("capture", WorkerStats(cpu_percent=10.0), t_ns=9 * S)   # on the CPU: no GPU numbers
    assert math.isnan(w.summarize(5.0).gpu_util_percent) and math.isnan(w.summarize(5.0).gpu_mem_bytes)
    w.add_worker("inference", WorkerStats(gpu_util_percent=60.0, gpu_mem_bytes=3e9), t_ns=9 * S)
    w.add_worker("detection", WorkerStats(gpu_util_percent=75.0, gpu_mem_bytes=1e9), t_ns=9 * S)
    w.add_worker("inference", WorkerStats(gpu_util_percent=70.0, gpu_mem_bytes=2e9), t_ns=10 * S)  # newest
    s = w.summarize(5.0)
    assert s.gpu_util_percent == 75.0 and s.gpu_mem_bytes == 3e9


def test_heartbeat_parsing_is_tolerant_and_validates():
    st = WorkerStats.from_heartbeat({"fps": 29.5, "drops": 4, "cpu_percent": "x", "rss_bytes": -5,
                                     "extras": {"gpu_util": 40, "gpu_mem_bytes": 2 ** 30}})
    assert st.fps == 29.5 and st.drops == 4
    assert math.isnan(st.cpu_percent) and math.isnan(st.rss_bytes)
    assert st.gpu_util_percent == 40.0 and st.gpu_mem_bytes == 2 ** 30
    with pytest.raises(TypeError):
        WorkerStats.from_heartbeat(["fps", 3])


def test_engine_percentiles_ordered_and_live_numbers(make_frame, make_person):
    clock = Clock(0)
    eng = MetricsEngine(clock_ns=clock)
    rng = np.random.default_rng(1)
    for i in range(200):
        ms = tuple(float(x) for x in rng.uniform(0.1, 30.0, size=6))
        f = make_frame(i, [make_person()], t_capture_ns=S + i * S // 50, stage_ms=ms)
        clock.t = f.stamps_ns["publish"]
        eng.observe(f)
    s = eng.summary(5.0)
    for span, pct in s.stage_ms.items():
        assert pct[50] <= pct[95] <= pct[99], span
    live = eng.live()
    assert live["e2e_p50_ms"] <= live["e2e_p99_ms"] and live["persons"] == 1.0
