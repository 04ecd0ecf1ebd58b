"""Capturing a CUDA graph the one way every graphed path here needs it.

Warm-up calls run first on a side stream (cuDNN picks its kernels, lazy buffers are made, none
of that may happen inside a capture), the current stream waits for them, then `run` is captured
once. What `run` returned inside the capture is the graph's output: tensors the replay rewrites.
Captures in one process are serialised.
"""
from __future__ import annotations

import threading

# One capture at a time in a process: a capture in "global" mode fails if another thread makes
# an unsafe CUDA call meanwhile, and a background capture ("thread_local") may be running.
_CAPTURE_LOCK = threading.Lock()


def capture_graph(run, device, warmup=None, warmup_calls: int = 2, capture_error_mode: str = "global",
                  cudnn_tf32: bool | None = None):
    """(torch.cuda.CUDAGraph, run()'s return value). `warmup` (default `run`) is called
    `warmup_calls` times before the capture; grad and inference mode are the caller's.
    `cudnn_tf32` set: cuDNN's TF32 flag (process-wide) has that value while the kernels are
    chosen and captured, and its old value after; under the lock, so captures on two threads
    cannot leave it wrong."""
    import torch

    with _CAPTURE_LOCK:
        old = torch.backends.cudnn.allow_tf32
        if cudnn_tf32 is not None:
            torch.backends.cudnn.allow_tf32 = bool(cudnn_tf32)
        try:
            return _capture(run, device, warmup, warmup_calls, capture_error_mode, torch)
        finally:
            torch.backends.cudnn.allow_tf32 = old


def _capture(run, device, warmup, warmup_calls, capture_error_mode, torch):
    main = torch.cuda.current_stream(device)
    if warmup_calls:
        side = torch.cuda.Stream(device)
        side.wait_stream(main)
        with torch.cuda.stream(side):
            for _ in range(warmup_calls):
                (warmup or run)()
        main.wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, capture_error_mode=capture_error_mode):
        out = run()
    return graph, out
