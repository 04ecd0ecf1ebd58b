"""Small host arrays to the GPU without waiting for the work queued before them.

A copy from ordinary (pageable) host memory may make CUDA wait for everything already queued
on the stream before it starts. In the inference worker that is the previous frame's network,
so each small upload (crop matrices, bbox_info) would undo the overlap of frames. Copies from
page-locked memory are truly asynchronous; `PinnedUploader` keeps a few page-locked buffers in
rotation and reuses one only after the copy that last read it has run (an event per buffer).
"""
from __future__ import annotations

import numpy as np


class PinnedUploader:
    def __init__(self, device, depth: int = 4):
        import torch
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.depth = max(1, int(depth))
        self._bufs: list = [None] * self.depth
        self._events = [torch.cuda.Event() for _ in range(self.depth)] if self.cuda else []
        self._turn = 0

    def upload(self, array: np.ndarray, dtype=np.float32):
        """`array` as a tensor on the device (queued on the current stream)."""
        import torch
        array = np.ascontiguousarray(array, dtype=dtype)
        if not self.cuda:
            return torch.from_numpy(array.copy()).to(self.device)
        self._turn = (self._turn + 1) % self.depth
        i = self._turn
        self._events[i].synchronize()  # the copy that last read this buffer has run (no-op if never)
        buf, dtype = self._bufs[i], torch.from_numpy(array[:0]).dtype
        if buf is None or buf.numel() < array.size or buf.dtype != dtype:
            buf = self._bufs[i] = torch.empty(max(array.size, 64), dtype=dtype, pin_memory=True)
        staged = buf[:array.size]
        staged.numpy()[:] = array.reshape(-1)
        out = staged.view(array.shape).to(self.device, non_blocking=True)
        self._events[i].record(torch.cuda.current_stream(self.device))
        return out


class PageLocked:
    """Caller memory (a shared-memory frames ring) page-locked with cudaHostRegister, so a frame
    in it goes to the GPU by DMA straight from the ring slot, with no host copy.

    Registering is a one-off (milliseconds per ring); `contains` tells per frame whether the
    fast path applies (the frame must be one contiguous block inside a registered region).
    Everything registered must be unregistered before the ring is unmapped (`release`)."""

    def __init__(self, device) -> None:
        import torch
        self.cuda = torch.device(device).type == "cuda"
        self.regions: list[tuple[int, int]] = []

    def register(self, address: int, size: int) -> bool:
        """Page-lock [address, address+size). False (the caller keeps its staging copy) when
        there is no GPU or CUDA refuses."""
        import logging

        import torch
        log = logging.getLogger(__name__)
        if not self.cuda or size <= 0:
            return False
        if any(start == int(address) for start, _ in self.regions):
            return True
        try:
            rc = torch.cuda.cudart().cudaHostRegister(int(address), int(size), 0)
        except Exception as exc:  # noqa: BLE001 - an optional fast path
            log.info("cudaHostRegister unavailable (%s): frames go through a pinned staging buffer", exc)
            return False
        if int(rc) != 0:
            log.info("cudaHostRegister refused (error %s): frames go through a pinned staging buffer", int(rc))
            return False
        self.regions.append((int(address), int(size)))
        return True

    def contains(self, frame: np.ndarray) -> bool:
        if not self.regions or not frame.flags.c_contiguous:
            return False
        a, n = frame.ctypes.data, frame.nbytes
        return any(start <= a and a + n <= start + size for start, size in self.regions)

    def release(self) -> None:
        regions, self.regions = self.regions, []
        if regions:
            import torch
            for address, _ in regions:
                try:
                    torch.cuda.cudart().cudaHostUnregister(address)
                except Exception:  # noqa: BLE001 - teardown
                    pass
