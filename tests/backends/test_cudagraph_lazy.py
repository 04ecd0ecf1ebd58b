"""The cudagraph backend's warm-up plan without a GPU (issue 18): the sizes the first frames need
are captured before `warmup()` returns, the others on a background thread; a batch runs on the
sizes captured so far; a failed background capture leaves the served sizes working.
The captures themselves are replaced by a recorder here; tests/backends/test_gpu.py runs the
real ones on the device machine."""
from __future__ import annotations

import threading

import torch

from pipeline.backends.base import BackendConfig
from pipeline.backends.cudagraph import CudaGraphBackend


def _backend(sizes, warm, fail_at=None, gate=None, background=True):
    be = CudaGraphBackend(BackendConfig(model="cliff", device="cuda", max_batch=max(sizes), warm_batches=warm,
                                        options={"background_capture": background}))
    be._module, be._device, be._sizes = object(), torch.device("cpu"), tuple(sizes)
    be.calls = []

    def capture(size, mode="global"):
        if gate is not None and mode == "thread_local":
            gate.wait(10)
        if size == fail_at:
            raise RuntimeError(f"capture of {size} failed")
        be.calls.append((size, mode, threading.current_thread() is threading.main_thread()))
        return ("graph", size)

    be._capture = capture
    return be


def test_first_sizes_before_ready_the_rest_in_the_background():
    gate = threading.Event()
    be = _backend(range(1, 9), warm=(1, 3), gate=gate)
    be.warmup()
    info = be.info()
    assert be.calls == [(1, "global", True), (3, "global", True)]
    assert info["captured"] == [1, 3] and info["background_pending"] == [2, 4, 5, 6, 7, 8]
    assert be._ready == (1, 3)     # what submit() plans with until the others exist
    gate.set()
    assert be.wait_background(10)
    info = be.info()
    assert info["captured"] == list(range(1, 9)) and info["background_pending"] == []
    assert all(mode == "thread_local" and not main for _, mode, main in be.calls[2:])


def test_failed_background_capture_keeps_the_served_sizes():
    be = _backend((1, 2, 4, 8), warm=(1,), fail_at=4)
    be.warmup()
    assert be.wait_background(10)
    info = be.info()
    assert info["captured"] == [1, 2] and "capture of 4 failed" in info["background_error"]
    assert be._ready == (1, 2)


def test_without_background_capture_every_size_is_ready_before_warmup_returns():
    be = _backend((1, 2, 3), warm=(1,), background=False)
    be.warmup()
    assert [c[0] for c in be.calls] == [1, 2, 3] and be._background is None
    assert be.info()["background_pending"] == []


def test_close_stops_further_background_captures():
    gate = threading.Event()
    be = _backend(range(1, 9), warm=(1,), gate=gate)
    be.warmup()
    be._closing.set()
    gate.set()
    assert be.wait_background(10)
    assert len(be.calls) <= 2     # batch 1, and at most the capture that was already under way
