"""The CPU budget: how many threads each worker process may use, and no spinning
(docs/architecture.md §1, §5).

Every worker is its own process, and every library in it (torch's OpenMP pool, MKL, OpenBLAS,
onnxruntime, OpenCV's parallel loops, FFmpeg's decoder, LiteRT) would otherwise start one
thread per core and, between jobs, spin on it. On a 2-core box that is five processes x
several busy-waiting pools fighting over two cores: the model, which needs them most, gets
the least. The supervisor therefore gives each worker a thread count from the cores the
machine has and the worker's `cpu_role` (the model gets the most), and starts it with

- ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` /
  ``OPENCV_FOR_THREADS_NUM`` = its threads (read by those libraries when they load: they
  must be in the environment before the worker imports them, hence set at spawn), and
  ``POSEPIPE_THREADS`` for our own code (onnxruntime sessions, LiteRT, FFmpeg decoders);
- ``OMP_WAIT_POLICY=PASSIVE`` (+ ``GOMP_SPINCOUNT=0``, ``KMP_BLOCKTIME=0``): idle OpenMP
  threads sleep at once instead of spinning, so an idle worker takes no core. onnxruntime's
  pools are told the same per session (`ort_spinning_entries`).

`cpu.threads.<worker>` in the config overrides a worker's count; `cpu.spin: true` lets pools
spin again (for a dedicated box where the lower wake-up latency is worth the burnt cycles).
"""
from __future__ import annotations

import os

THREADS_ENV = "POSEPIPE_THREADS"
SPIN_ENV = "POSEPIPE_SPIN"
# Libraries that size their thread pools from these when they are first loaded.
POOL_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENCV_FOR_THREADS_NUM")
PASSIVE_ENV = {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "0", "KMP_BLOCKTIME": "0"}
ROLES = ("model", "detector", "decoder", "light")


def machine_cores() -> int:
    """Cores this process may run on (affinity / cgroup cpusets respected where Linux shows them)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def threads_for(role: str, cores: int) -> int:
    """Threads for a worker of `role` on a machine with `cores` cores.

    light (publisher, metrics, ...): 1. detector / decoder: 1 up to 7 cores, then a quarter
    of the cores (at most 4): their per-frame work is small and mostly single-threaded.
    model: every core on up to 4 cores (the others sleep most of the time, and a model that
    leaves a core idle is slower than one that shares it briefly), else what the detector
    and decoder do not take."""
    if role not in ROLES:
        raise ValueError(f"unknown CPU role {role!r}; allowed: {', '.join(ROLES)}")
    cores = max(1, int(cores))
    small = min(4, max(1, cores // 4))
    if role == "light":
        return 1
    if role in ("detector", "decoder"):
        return small
    return cores if cores <= 4 else max(1, cores - 2 * small)


def plan(roles: dict[str, str], cores: int, overrides: dict | None = None) -> dict[str, int]:
    """Threads per worker name: `roles` maps name -> role; `overrides` (cpu.threads) win."""
    overrides = overrides or {}
    return {name: int(overrides.get(name) or threads_for(role, cores)) for name, role in roles.items()}


def worker_env(threads: int, spin: bool = False) -> dict[str, str]:
    """Environment for a worker process with `threads` threads (see the module docstring)."""
    env = {key: str(int(threads)) for key in POOL_ENV}
    env[THREADS_ENV] = str(int(threads))
    env[SPIN_ENV] = "1" if spin else "0"
    if not spin:
        env.update(PASSIVE_ENV)
    return env


def worker_threads() -> int | None:
    """This worker's thread budget (None when not started by a supervisor)."""
    value = os.environ.get(THREADS_ENV, "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def spinning_allowed() -> bool:
    return os.environ.get(SPIN_ENV, "0") == "1"


def ort_spinning_entries(spin: bool | None = None) -> dict[str, str]:
    """onnxruntime session config entries: its intra/inter-op pools spin between runs by
    default; on a shared few-core host that burns the CPU other stages need. `spin` None:
    this worker's setting (cpu.spin)."""
    allow = "1" if (spinning_allowed() if spin is None else spin) else "0"
    return {"session.intra_op.allow_spinning": allow, "session.inter_op.allow_spinning": allow}
