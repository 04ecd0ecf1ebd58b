"""ProcessSampler on real processes: sane values, per-thread CPU, a pid that vanishes, a replaced pid."""
from __future__ import annotations

import math
import os
import subprocess
import sys
import time

import psutil
import pytest

from pipeline.profiling.sampler import ProcessSampler

BUSY = "import time\nt=time.time()\nwhile time.time()-t<30: pass\n"
IDLE = "import time\ntime.sleep(30)\n"


@pytest.fixture
def procs():
    started = []

    def spawn(code):
        p = subprocess.Popen([sys.executable, "-c", code])
        started.append(p)
        return p

    yield spawn
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait(5)


def test_values_are_in_sane_ranges(procs):
    busy, idle = procs(BUSY), procs(IDLE)
    sampler = ProcessSampler()
    targets = {"busy": busy.pid, "idle": idle.pid, "me": os.getpid()}
    time.sleep(0.5)  # let the interpreters start
    sampler.sample(targets)
    time.sleep(0.8)
    samples = {s.worker: s for s in sampler.sample(targets, {"busy": 3})}
    ncores = psutil.cpu_count()
    for s in samples.values():
        assert s.alive and s.pid
        assert 0 <= s.cpu_percent <= 100 * ncores + 5
        assert s.rss_bytes > 0 and s.uss_bytes > 0 and s.num_threads >= 1
        assert s.ctx_voluntary_per_s >= 0 and s.ctx_involuntary_per_s >= 0
        assert s.threads_measured
    assert samples["busy"].generation == 3
    # A spinning loop vs a sleeper; on 2 cores shared by many jobs the spinner may get little CPU.
    assert samples["busy"].cpu_percent > max(2.0, samples["idle"].cpu_percent)
    assert samples["idle"].cpu_percent < 10
    top = samples["busy"].top_thread
    assert top is not None and top.tid == busy.pid and top.name.endswith("(main)")


def test_vanished_pid_is_reported_and_sampling_goes_on(procs):
    a, b = procs(IDLE), procs(IDLE)
    sampler = ProcessSampler()
    sampler.sample({"a": a.pid, "b": b.pid})
    a.kill()
    a.wait(5)
    samples = {s.worker: s for s in sampler.sample({"a": a.pid, "b": b.pid})}
    assert not samples["a"].alive and math.isnan(samples["a"].cpu_percent)
    assert samples["b"].alive and samples["b"].rss_bytes > 0
    assert sampler.vanished == [("a", a.pid)]
    # Not running at all (the supervisor reports pid None while restarting)
    samples = {s.worker: s for s in sampler.sample({"a": None, "b": b.pid})}
    assert not samples["a"].alive and samples["b"].alive


def test_a_replaced_pid_starts_fresh(procs):
    a = procs(IDLE)
    sampler = ProcessSampler()
    sampler.sample({"w": a.pid})
    a.kill()
    a.wait(5)
    b = procs(BUSY)
    time.sleep(0.3)
    s = sampler.sample({"w": b.pid})[0]
    assert s.pid == b.pid and s.alive
    assert not s.threads_measured                     # first sight of the new pid
    assert 0 <= s.cpu_percent <= 100 * psutil.cpu_count() + 5   # averaged over its life so far


def test_threads_can_be_skipped_and_are_measured_over_the_longer_interval(procs):
    busy = procs(BUSY)
    sampler = ProcessSampler()
    time.sleep(0.3)
    sampler.sample({"w": busy.pid})
    time.sleep(0.3)
    skipped = sampler.sample({"w": busy.pid}, detail=False)[0]
    assert skipped.alive and not skipped.threads_measured and skipped.threads == []
    assert skipped.cpu_percent >= 0                    # the process itself is still measured
    time.sleep(0.3)
    s = sampler.sample({"w": busy.pid})[0]
    assert s.threads_measured and s.top_thread is not None
    assert s.top_thread.cpu_percent <= 100 * psutil.cpu_count() + 5


def test_uss_is_read_at_most_every_interval(procs):
    idle = procs(IDLE)
    sampler = ProcessSampler(uss_interval_s=100.0)
    t = time.monotonic()
    first = sampler.sample({"w": idle.pid}, now=t)[0]
    spent = sampler.uss_cpu_s
    again = sampler.sample({"w": idle.pid}, now=t + 1.0)[0]
    assert sampler.uss_cpu_s == spent and again.uss_bytes == first.uss_bytes   # carried over
    sampler.sample({"w": idle.pid}, now=t + 101.0, detail=False)
    assert sampler.uss_cpu_s == spent            # due, but the governor said no details now
    sampler.sample({"w": idle.pid}, now=t + 102.0)
    assert sampler.uss_cpu_s > spent
