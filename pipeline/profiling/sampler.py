"""psutil sampling of a set of named processes: CPU % per process and per thread, RSS/USS, context
switches.

The caller hands `ProcessSampler.sample` the current name -> pid map on every call (the profiler
re-reads it from the supervisor's `status`), so a restarted or swapped worker is followed by its
new pid. Rates (CPU %, switches/s) are deltas between two samples of the *same* pid; the first
sample of a new pid is averaged over the process's life so far. A pid that vanished between
two samples gives one `alive=False` row and is forgotten; sampling goes on.
"""
from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Mapping

import psutil

log = logging.getLogger(__name__)

NAN = math.nan


@dataclass
class ThreadSample:
    tid: int
    name: str
    cpu_percent: float


@dataclass
class ProcessSample:
    t: float                      # time.monotonic() of the sample
    worker: str
    pid: int | None
    generation: int = 0
    alive: bool = True
    cpu_percent: float = NAN      # of one core; up to 100 * ncores
    rss_bytes: float = NAN
    uss_bytes: float = NAN
    num_threads: int = 0
    ctx_voluntary_per_s: float = NAN
    ctx_involuntary_per_s: float = NAN
    threads: list[ThreadSample] = field(default_factory=list)  # busiest first, idle ones left out
    threads_measured: bool = False  # False on the first sample of a pid (no rates yet)

    @property
    def top_thread(self) -> ThreadSample | None:
        return self.threads[0] if self.threads else None


@dataclass
class _Tracked:
    proc: psutil.Process
    t: float
    cpu_s: float
    ctx: tuple[int, int]
    thread_cpu: dict[int, float]
    thread_t: float               # when thread_cpu was read (threads may be read less often)


class ProcessSampler:
    """Stateful sampler; one instance per profiling session.

    per_thread: read per-thread CPU times (one /proc read per thread; threads under
        `thread_min_percent` are left out of the result to keep timelines small).
    uss: read USS (smaps_rollup). Measured: parsing smaps_rollup of a torch process was 80 % of
        the sampler's cost at 0.5 s intervals (more for a CUDA process: its mappings are huge),
        so USS is read at most every `uss_interval_s` per process (RSS every sample) and carried
        over in between.
    """

    def __init__(self, per_thread: bool = True, uss: bool = True, thread_min_percent: float = 0.5,
                 max_threads: int = 8, uss_interval_s: float = 10.0):
        self.per_thread = per_thread
        self.uss = uss
        self.uss_interval_s = float(uss_interval_s)
        self.uss_cpu_s = 0.0   # CPU seconds spent reading USS (it dominates on big processes)
        self._uss: dict[int, tuple[float, float]] = {}   # pid -> (when USS was read, last USS)
        self.thread_min_percent = thread_min_percent
        self.max_threads = max_threads
        self._tracked: dict[int, _Tracked] = {}
        self._thread_names: dict[tuple[int, int], str] = {}
        self.vanished: list[tuple[str, int]] = []  # (worker, pid) seen to disappear, for the summary

    def sample(self, targets: Mapping[str, int | None], generations: Mapping[str, int] | None = None,
               now: float | None = None, detail: bool = True) -> list[ProcessSample]:
        """One sample per named target; a target with pid None (not running) gives alive=False.
        detail=False skips the per-thread and USS reads this time (the profiler's cost governor):
        the next thread read measures rates over the longer interval, USS is carried over."""
        now = time.monotonic() if now is None else now
        generations = generations or {}
        out = []
        live_pids = set()
        for name, pid in targets.items():
            gen = int(generations.get(name, 0) or 0)
            if not pid:
                out.append(ProcessSample(now, name, None, gen, alive=False))
                continue
            live_pids.add(pid)
            out.append(self._sample_one(name, int(pid), gen, now, detail))
        for pid in set(self._tracked) - live_pids:  # replaced or no longer asked for
            del self._tracked[pid]
        for pid in set(self._uss) - live_pids:
            del self._uss[pid]
        if len(self._thread_names) > 4096:  # pids come and go over a long profile
            self._thread_names = {k: v for k, v in self._thread_names.items() if k[0] in live_pids}
        return out

    def _sample_one(self, name: str, pid: int, gen: int, now: float, detail: bool = True) -> ProcessSample:
        tracked = self._tracked.get(pid)
        try:
            proc = tracked.proc if tracked is not None else psutil.Process(pid)
            with proc.oneshot():
                times = proc.cpu_times()
                cpu_s = times.user + times.system
                read_at, last_uss = self._uss.get(pid, (-math.inf, NAN))
                if self.uss and (detail or tracked is None) and now - read_at >= self.uss_interval_s:
                    t0 = time.thread_time()
                    mem = proc.memory_full_info()
                    self.uss_cpu_s += time.thread_time() - t0
                    uss = float(mem.uss)
                    self._uss[pid] = (now, uss)
                else:
                    mem = proc.memory_info()
                    uss = last_uss
                ctx = proc.num_ctx_switches()
                num_threads = proc.num_threads()
                read_threads = self.per_thread and (detail or tracked is None)
                threads = proc.threads() if read_threads else []
                create = proc.create_time() if tracked is None else 0.0
                # A process being torn down (killed, not yet reaped) reads as zombie or with no memory.
                if proc.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD) or mem.rss == 0:
                    raise psutil.ZombieProcess(pid)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            self._tracked.pop(pid, None)
            self.vanished.append((name, pid))
            log.info("%s (pid %d) vanished while sampling; going on", name, pid)
            return ProcessSample(now, name, pid, gen, alive=False)
        except psutil.AccessDenied as exc:
            log.warning("cannot read %s (pid %d): %s", name, pid, exc)
            return ProcessSample(now, name, pid, gen, alive=True)
        sample = ProcessSample(now, name, pid, gen, rss_bytes=float(mem.rss),
                               uss_bytes=uss, num_threads=num_threads)
        thread_cpu = {t.id: t.user_time + t.system_time for t in threads}
        thread_t = now
        if not read_threads and tracked is not None:
            thread_cpu, thread_t = tracked.thread_cpu, tracked.thread_t  # carried to the next read
        if tracked is None:
            # First sight of this pid: average over its life so far (wall clock vs monotonic is fine
            # at this precision).
            age = max(time.time() - create, 1e-3)
            sample.cpu_percent = 100.0 * cpu_s / age
        else:
            dt = now - tracked.t
            if dt > 0:
                sample.cpu_percent = max(0.0, 100.0 * (cpu_s - tracked.cpu_s) / dt)
                sample.ctx_voluntary_per_s = max(0.0, (ctx.voluntary - tracked.ctx[0]) / dt)
                sample.ctx_involuntary_per_s = max(0.0, (ctx.involuntary - tracked.ctx[1]) / dt)
                if read_threads and now > tracked.thread_t:
                    sample.threads = self._thread_rates(pid, thread_cpu, tracked.thread_cpu, now - tracked.thread_t)
                    sample.threads_measured = True
        self._tracked[pid] = _Tracked(proc, now, cpu_s, (ctx.voluntary, ctx.involuntary), thread_cpu, thread_t)
        return sample

    def _thread_rates(self, pid: int, cur: dict, prev: dict, dt: float) -> list[ThreadSample]:
        rates = []
        for tid, cpu in cur.items():
            if tid not in prev:
                continue  # born since the last sample: its rate is unknown yet
            pct = max(0.0, 100.0 * (cpu - prev[tid]) / dt)
            if pct >= self.thread_min_percent:
                rates.append(ThreadSample(tid, self._thread_name(pid, tid), round(pct, 2)))
        rates.sort(key=lambda t: -t.cpu_percent)
        return rates[: self.max_threads]

    def _thread_name(self, pid: int, tid: int) -> str:
        key = (pid, tid)
        name = self._thread_names.get(key)
        if name is None:
            try:
                with open(f"/proc/{pid}/task/{tid}/comm") as f:
                    name = f.read().strip()
            except OSError:
                name = str(tid)
            if tid == pid:
                name = f"{name} (main)"
            self._thread_names[key] = name
        return name


def own_cpu_seconds() -> float:
    """CPU seconds (user + system) this process has used: the profiler's own cost."""
    t = os.times()
    return t.user + t.system
