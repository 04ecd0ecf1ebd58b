"""Capturing a CUDA graph the one way every graphed path here needs it.

Warm-up calls run first on a side stream (cuDNN picks its kernels, lazy buffers are made, none
of that may happen inside a capture), the current stream waits for them, then `run` is captured
once. What `run` returned inside the capture is the graph's output: tensors the replay rewrites.
"""
from __future__ import annotations


def capture_graph(run, device, warmup=None, warmup_calls: int = 2, capture_error_mode: str = "global"):
    """(torch.cuda.CUDAGraph, run()'s return value). `warmup` (default `run`) is called
    `warmup_calls` times before the capture; grad and inference mode are the caller's."""
    import torch

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
