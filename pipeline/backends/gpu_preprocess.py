"""Frame -> normalised POCO crops on the inference device (architecture.md §5 inference, issue 11).

Per frame: one upload of the frame. When the caller page-locked the memory the frame lives
in (`register_host`: the inference worker registers the whole frames ring once), the frame
goes to the GPU by DMA straight from the ring slot, with no host copy at all; otherwise it is
copied into a pinned staging buffer and uploaded from there on a side stream. Then one uint8->float HWC->CHW conversion, then ONE grid_sample for all
persons: the N crop grids are laid side by side in a single (1, res, N*res) grid over the
single frame, so the frame is never replicated per person (expanding a 1080p frame to N
float copies would move 25 MB per person). ImageNet normalisation runs on the small crops.

Same geometry as `pipeline.models.preprocess.crop_torch` (square box centre/side -> res x res,
bilinear, zero padding); tests check the two agree.
"""
from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class GpuCropper:
    def __init__(self, device="cuda", max_height: int = 2160, max_width: int = 3840, res: int = 224):
        import torch
        if max_height <= 0 or max_width <= 0 or res <= 0:
            raise ValueError(f"sizes must be positive, got {max_height}x{max_width}, res {res}")
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"GpuCropper on {device!r}: torch {torch.__version__} sees no CUDA GPU; "
                               f"use device='cpu'")
        cuda = self.device.type == "cuda"
        self.res = res
        self.max_hw = (max_height, max_width)
        # Two device frame buffers: frame N uploads while frame N-1's crop may still be queued
        # behind the network on the compute stream (the inference worker pipelines frames).
        # An event per buffer says when its last crop has read it.
        n_bytes = max_height * max_width * 3
        self._staging = torch.empty(n_bytes, dtype=torch.uint8, pin_memory=cuda) if cuda else None
        self._staging_np = self._staging.numpy() if cuda else None
        self._frames = [torch.empty(n_bytes, dtype=torch.uint8, device=self.device) for _ in range(2)] if cuda else []
        self._consumed = [torch.cuda.Event() for _ in range(2)] if cuda else []
        self._turn = 0
        self._upload_stream = torch.cuda.Stream(self.device) if cuda else None
        from pipeline.backends.pinned import PageLocked, PinnedUploader
        self._small = PinnedUploader(self.device)  # crop matrices, without waiting for queued work
        self._locked = PageLocked(self.device)     # caller memory (one frames ring per stream)
        self._mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1) * 255.0
        self._inv_std = 1.0 / (torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1) * 255.0)

    def register_host(self, address: int, size: int) -> bool:
        """Page-lock [address, address+size) (e.g. a shared-memory ring) for direct DMA uploads.
        Returns False (and keeps the staging path) when CUDA refuses or there is no GPU."""
        return self._locked.register(address, size)

    def unregister_host(self) -> None:
        """Unlock every region `register_host` locked."""
        self._locked.release()

    def _in_registered(self, frame: np.ndarray) -> bool:
        return self._locked.contains(frame)

    def crops(self, frame_rgb: np.ndarray, centres, sides, width: int | None = None):
        """frame_rgb (H,W,3) uint8 RGB; centres (N,2), sides (N,) in frame pixels ->
        (N,3,res,res) float32 ImageNet-normalised tensor on the device.

        `width`: the frame's real width when `frame_rgb` holds whole rows of a wider buffer
        (a ring slot's `pixels[:h]`): whole rows are one contiguous block, so they can be
        uploaded by DMA from registered memory and cut to the width on the GPU.
        When this returns, the host frame has been fully read (the upload is complete)."""
        import torch
        import torch.nn.functional as F
        frame_rgb = self._check_frame(frame_rgb)
        centres = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
        sides = np.asarray(sides, dtype=np.float64).reshape(-1)
        n = centres.shape[0]
        if n == 0 or sides.shape[0] != n:
            raise ValueError(f"need N>=1 centres and N sides, got {n} centres and {sides.shape[0]} sides")
        if not (np.isfinite(centres).all() and np.isfinite(sides).all() and (sides > 0).all()):
            raise ValueError("box centres/sides must be finite and sides > 0")
        h, buf_w = frame_rgb.shape[:2]
        w = buf_w if width is None else int(width)
        if not 0 < w <= buf_w:
            raise ValueError(f"width {width} outside 1..{buf_w}")
        frame = self._upload(frame_rgb, h, w, buf_w)
        src = frame[:h, :w].permute(2, 0, 1).unsqueeze(0).float()  # (1,3,H,W)
        grid = F.affine_grid(self._theta(centres, sides, w, h), [n, 3, self.res, self.res],
                             align_corners=False)                         # (N,res,res,2)
        grid = grid.permute(1, 0, 2, 3).reshape(1, self.res, n * self.res, 2)
        out = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        out = out.reshape(3, self.res, n, self.res).permute(2, 0, 1, 3)
        out = ((out - self._mean) * self._inv_std).contiguous()
        if self._frames:
            self._consumed[self._turn].record(torch.cuda.current_stream(self.device))
        return out

    def _upload(self, frame_rgb: np.ndarray, h: int, w: int, buf_w: int):
        """The frame on the device as (h, >=w, 3) uint8; the host frame has been read when this
        returns. The compute stream waits for the upload; the CPU waits only for the copy itself,
        not for work queued before it (the previous frame's network)."""
        import torch
        if h > self.max_hw[0] or w > self.max_hw[1]:
            raise ValueError(f"frame {h}x{w} is larger than the cropper's "
                             f"{self.max_hw[0]}x{self.max_hw[1]} staging buffer")
        if not self._frames:  # CPU: nothing to upload
            return torch.from_numpy(np.ascontiguousarray(frame_rgb[:, :w]))
        self._turn = (self._turn + 1) % len(self._frames)
        dev = self._frames[self._turn]
        stream = self._upload_stream
        # The crop that last read this buffer (two frames ago) must be done before we overwrite it.
        stream.wait_event(self._consumed[self._turn])
        if self._in_registered(frame_rgb) and frame_rgb.size <= dev.numel():
            # Whole rows straight from page-locked ring memory by DMA: no host copy at all.
            src = torch.from_numpy(frame_rgb).view(-1)
            with torch.cuda.stream(stream):
                dev[:src.numel()].copy_(src, non_blocking=True)
            shape = (h, buf_w, 3)
        else:
            stream.synchronize()  # the previous upload has left the staging buffer
            staged = self._staging_np[:h * w * 3].reshape(h, w, 3)
            np.copyto(staged, frame_rgb[:, :w])
            with torch.cuda.stream(stream):
                dev[:h * w * 3].copy_(self._staging[:h * w * 3], non_blocking=True)
            shape = (h, w, 3)
        stream.synchronize()  # the caller re-checks the ring slot right after we return
        torch.cuda.current_stream(self.device).wait_stream(stream)
        return dev[:shape[0] * shape[1] * 3].view(shape)

    def _theta(self, centres, sides, w, h):
        # Output pixel u samples input x = (u + 0.5 - res/2) * side/res + cx, written in
        # grid_sample's normalised coordinates (align_corners=False) for x and y.
        k = self.res / sides
        theta = np.zeros((centres.shape[0], 2, 3), dtype=np.float64)
        theta[:, 0, 0] = sides / w
        theta[:, 0, 2] = (2 * centres[:, 0] + 1 - 1 / k) / w - 1
        theta[:, 1, 1] = sides / h
        theta[:, 1, 2] = (2 * centres[:, 1] + 1 - 1 / k) / h - 1
        return self._small.upload(theta, np.float32)

    def _check_frame(self, frame) -> np.ndarray:
        if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"frame must be an (H,W,3) RGB numpy array, got "
                             f"{getattr(frame, 'shape', type(frame).__name__)}")
        if frame.dtype != np.uint8:
            raise ValueError(f"frame must be uint8, got {frame.dtype}")
        h, w = frame.shape[:2]
        if h == 0 or w == 0:
            raise ValueError(f"frame {h}x{w} is empty")
        return frame
