"""On-demand torch profiler traces for the inference worker (`pipeline set inference profile=50`).

The worker owns one recorder and calls `step()` once per processed item; nothing is profiled
until `start(n)` is called (from the worker's `on_set`), so the cost is one attribute check per
item otherwise. After n steps the profiler stops and a Chrome trace is written into `out_dir`::

    rec = TorchTraceRecorder(out_dir)
    ...
    def on_set(self, key, value):
        if key == "profile":
            n, out_dir = parse_profile_request(value, self.default_dir)
            return str(self.recorder.start(n, out_dir))
    def process(self, item):
        ...
        self.recorder.step()

torch is imported on `start`, never at module import.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)

MAX_ITERATIONS = 10_000


class TorchTraceError(ValueError):
    """A profile request was malformed or cannot be honoured; the message says why."""


def parse_profile_request(value, default_dir) -> tuple[int, Path]:
    """`profile=50` or `profile={"iterations": 50, "out_dir": "..."}` -> (iterations, directory)."""
    out_dir = default_dir
    if isinstance(value, dict):
        unknown = set(value) - {"iterations", "out_dir"}
        if unknown:
            raise TorchTraceError(f"profile: unknown key(s) {sorted(unknown)}; allowed: iterations, out_dir")
        out_dir = value.get("out_dir", default_dir)
        value = value.get("iterations")
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ITERATIONS:
        raise TorchTraceError(f"profile = {value!r}: expected a number of iterations in 1..{MAX_ITERATIONS}")
    if not isinstance(out_dir, (str, Path)) or not str(out_dir):
        raise TorchTraceError(f"profile: out_dir must be a directory path, got {out_dir!r}")
    return value, Path(out_dir)


class TorchTraceRecorder:
    def __init__(self, out_dir, record_shapes: bool = False, with_stack: bool = False):
        self.out_dir = Path(out_dir)
        self.record_shapes = record_shapes
        self.with_stack = with_stack
        self._prof = None
        self._left = 0
        self._target_dir = self.out_dir
        self._path: Path | None = None
        self.last_trace: Path | None = None

    @property
    def active(self) -> bool:
        return self._prof is not None

    def start(self, n_iters: int, out_dir=None) -> Path:
        """Profile the next n_iters steps; returns the path the trace will be written to."""
        if isinstance(n_iters, bool) or not isinstance(n_iters, int) or not 1 <= n_iters <= MAX_ITERATIONS:
            raise TorchTraceError(f"iterations must be in 1..{MAX_ITERATIONS}, got {n_iters!r}")
        if self.active:
            raise TorchTraceError(f"a torch profiler trace is already being recorded ({self._left} iterations "
                                  f"left, into {self._path}); wait for it to finish")
        target = Path(out_dir) if out_dir is not None else self.out_dir
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TorchTraceError(f"cannot create trace directory {target}: {exc}") from exc
        import torch
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(ProfilerActivity.CUDA)
        self._target_dir = target
        self._path = target / f"torch_trace_{time.strftime('%Y%m%d-%H%M%S')}_{n_iters}it.json"
        self._prof = profile(activities=activities, record_shapes=self.record_shapes, with_stack=self.with_stack)
        self._prof.__enter__()
        self._left = n_iters
        log.info("torch profiler: recording %d iterations into %s", n_iters, self._path)
        return self._path

    def step(self) -> Path | None:
        """Call once per processed item; returns the trace path on the step that finished it."""
        if self._prof is None:
            return None
        self._prof.step()
        self._left -= 1
        if self._left > 0:
            return None
        return self.finish()

    def finish(self) -> Path | None:
        """Stop now (also on worker stop) and write what was recorded."""
        prof, self._prof = self._prof, None
        if prof is None:
            return None
        prof.__exit__(None, None, None)
        try:
            prof.export_chrome_trace(str(self._path))
        except Exception as exc:  # a full disk must not take the worker down
            log.warning("torch profiler trace could not be written to %s: %s", self._path, exc)
            return None
        self.last_trace = self._path
        log.info("torch profiler trace written: %s", self._path)
        return self._path
