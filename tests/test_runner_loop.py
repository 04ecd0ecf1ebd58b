"""The runner's loop around a pipelined worker, in-process: a worker that holds its newest
item back (as the inference worker does while the GPU works) gets flush() as soon as no new
item is waiting, before a pause and when stopping, and per-item counts and timings stay right."""
from __future__ import annotations

import threading
import time

from pipeline.runtime.runner import Runner
from pipeline.runtime.worker import WROTE, Worker, WorkerContext


class _Reader:
    policy = "latest"
    member = None  # not registered in a ring's member table

    def __init__(self, items):
        self.items = list(items)
        self.timeouts = []
        self.done_items = []

    def done(self, item, frame_id=None):
        self.done_items.append(item.record)

    def read(self, timeout=0.1, copy=True):
        self.timeouts.append(timeout)
        if self.items:
            return _Item(self.items.pop(0))
        time.sleep(min(timeout, 0.01))
        return None


class _Item:
    def __init__(self, value):
        self.record, self.overwritten_before = value, 0


class _Out:
    forced_releases = suppressed = 0

    def release_holds(self, everything=False):
        pass


class _HoldOne(Worker):
    def __init__(self):
        super().__init__(None, WorkerContext("held", 1, {}, {}))
        self.held = None
        self.written = []
        self.out = _Out()  # writes in place (WROTE); not a terminal stage

    def process(self, item):
        done = self.flush()
        self.held = item.record
        time.sleep(0.002)
        return done

    def pending(self):
        return self.held is not None

    def flush(self):
        if self.held is None:
            return None
        self.written.append(self.held)
        self.held = None
        time.sleep(0.002)
        return WROTE


def _runner(worker, reader):
    spec = {k: None for k in ("name", "module", "control", "rings", "input", "policy", "output",
                              "reads", "params", "shared")}
    spec.update(name="held", generation=1, parent_pid=0)
    runner = Runner(spec)
    runner.worker, runner.reader = worker, reader
    return runner


def _loop_until(runner, cond, timeout=5.0):
    thread = threading.Thread(target=runner._loop)
    thread.start()
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.005)
    runner.stop_event.set()
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_held_item_is_flushed_when_no_new_item_waits():
    worker, reader = _HoldOne(), _Reader([1, 2, 3])
    runner = _runner(worker, reader)
    _loop_until(runner, lambda: worker.written == [1, 2, 3])
    assert worker.written == [1, 2, 3] and runner.frames_in == 3 and runner.frames_out == 3
    # every item is marked done once its process() returned (its claim and, lossless, its frame go)
    assert reader.done_items == [1, 2, 3]
    # a held item makes the runner poll (timeout 0) instead of blocking on the ring
    assert 0 in reader.timeouts
    # a flush's time goes onto the last timing, not a new one: 3 items, 3 timings, all the work
    assert len(runner.timings.values) == 3
    assert sum(runner.timings.values) >= 11.5, list(runner.timings.values)


def test_stop_writes_the_held_item():
    worker = _HoldOne()
    runner = _runner(worker, _Reader([]))
    worker.held = 9
    runner.stop_event.set()
    assert runner._loop() == 0
    assert worker.written == [9] and runner.frames_out == 1


def test_pause_flushes_first():
    worker = _HoldOne()
    runner = _runner(worker, _Reader([]))
    worker.held = 4
    runner.paused = True
    _loop_until(runner, lambda: worker.written == [4], timeout=2.0)
    assert worker.written == [4]


def test_a_crash_in_flush_stops_the_worker_as_a_crash():
    class Broken(_HoldOne):
        def flush(self):
            if self.held is not None:
                raise RuntimeError("device lost")
            return None

    worker = Broken()
    runner = _runner(worker, _Reader([1]))
    assert runner._loop() == 1 and runner.stop_reason == "crashed"


def test_setup_objects_are_frozen_out_of_the_collector(monkeypatch):
    import gc

    from pipeline.runtime.runner import freeze_setup_objects
    try:
        monkeypatch.setenv("POSEPIPE_GC_FREEZE", "0")
        assert freeze_setup_objects() is False
        monkeypatch.setenv("POSEPIPE_GC_FREEZE", "1")
        assert freeze_setup_objects() is True and gc.get_freeze_count() > 1000
    finally:
        gc.unfreeze()


def test_heartbeat_carries_the_workers_device_stats_only_when_it_has_them():
    class _Stats:
        def sample(self):
            return {"gpu_util_percent": 12.0, "gpu_mem_bytes": 5 << 20}

    worker = Worker(None, WorkerContext("gpu", 1, {}, {}))
    runner = _runner(worker, None)
    assert not {k for k in runner._stats(None).extras if k.startswith("gpu_")}  # on the CPU: not measured
    worker.device_stats = _Stats()
    extras = runner._stats(None).extras
    assert extras["gpu_util_percent"] == 12.0 and extras["gpu_mem_bytes"] == 5 << 20


def test_stretch_sleeps_or_computes_for_the_time_asked(monkeypatch):
    """`min_process_ms` sleeps by default; with POSEPIPE_STRETCH_SPIN=1 (tools/bench_lead.py) it
    computes, so two stages on one core take turns as two processes do on one GPU."""
    from pipeline.runtime.worker import stretch_to
    for spin, busy in (("0", False), ("1", True)):
        monkeypatch.setenv("POSEPIPE_STRETCH_SPIN", spin)
        cpu0, t0 = time.process_time(), time.monotonic_ns()
        stretch_to(t0, 60.0)
        wall, cpu = (time.monotonic_ns() - t0) / 1e6, (time.process_time() - cpu0) * 1e3
        assert wall >= 60.0
        assert (cpu > 10.0) == busy, (spin, cpu)   # a loaded box may still take the spinner off the core
