"""Profiling tools (issue 8, architecture.md §11): sample every worker process (psutil, NVML), read per-frame
stage stamps from the `published` ring, and turn both into a timeline, plots, a Chrome trace and a
bottleneck summary.

Light to import: psutil and numpy only. matplotlib (plots), pynvml (GPU) and torch (torch_trace)
are imported inside the modules that need them.

May import: `pipeline.runtime`, `pipeline.metrics`.
"""
from pipeline.profiling.sampler import ProcessSample, ProcessSampler, ThreadSample
from pipeline.profiling.summary import Bottleneck, StageLoad, find_bottleneck
from pipeline.profiling.timeline import Timeline
from pipeline.profiling.trace import FrameStamps, chrome_trace

__all__ = [
    "Bottleneck", "FrameStamps", "ProcessSample", "ProcessSampler", "StageLoad", "ThreadSample", "Timeline",
    "chrome_trace", "find_bottleneck",
]
