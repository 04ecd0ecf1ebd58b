"""Eager PyTorch backend: fp32 (CPU/CUDA) or fp16 (CUDA), optional channels-last, any batch size."""
from __future__ import annotations

import logging
import time

import numpy as np

from pipeline.backends.base import Backend, BackendConfig, BackendUnavailable

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16")
OUTPUT_KEYS = ("pred_pose", "pred_shape", "pred_cam", "var_pose")


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, config: BackendConfig):
        super().__init__(config)
        self.model = None
        self.device = None
        self.dtype = None
        self._load_s = 0.0
        self._warmup_s = 0.0
        self._warm_batches: list[int] = []

    def load(self) -> None:
        try:
            import torch
        except ImportError as exc:  # pragma: no cover - torch is a hard dependency
            raise BackendUnavailable("the torch backend needs PyTorch: pip install torch") from exc
        from pipeline.models import load_poco

        cfg = self.config
        if cfg.precision not in PRECISIONS:
            raise ValueError(f"precision {cfg.precision!r} not supported by the torch backend; "
                             f"allowed: {', '.join(PRECISIONS)}")
        device = torch.device(cfg.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable(f"device {cfg.device!r} asked for but CUDA is not available here; "
                                     f"use device=cpu or install a CUDA build of PyTorch on a GPU machine")
        if cfg.precision == "fp16" and device.type != "cuda":
            raise BackendUnavailable("fp16 is only supported on CUDA by the torch backend (CPU half "
                                     "convolutions are slow and inexact); use precision=fp32 on CPU")
        if cfg.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {cfg.max_batch}")
        t0 = time.perf_counter()
        model = load_poco(cfg.model, checkpoint=cfg.checkpoint, device=device,
                          mean_params=cfg.data_path("smpl_mean_params.npz"),
                          allow_unsafe_checkpoint=bool(cfg.options.get("allow_unsafe_checkpoint", False)),
                          calibrate_bn=bool(cfg.options.get("calibrate_bn", True)),
                          seed=cfg.options.get("seed"))
        self.dtype = torch.float16 if cfg.precision == "fp16" else torch.float32
        model = model.to(dtype=self.dtype)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.device = device
        self._load_s = time.perf_counter() - t0
        log.info("torch backend: POCO-%s on %s %s%s (%.1f s)", model.variant.upper(), device, cfg.precision,
                 ", channels-last" if cfg.channels_last else "", self._load_s)

    def _require_loaded(self):
        if self.model is None:
            raise RuntimeError("TorchBackend.load() must be called before warmup()/infer()")

    def warmup(self) -> None:
        """Runs the batch sizes the first frames need (config.warm_batches); eager torch
        takes any other size as it comes."""
        from pipeline.backends.batching import warm_sizes

        self._require_loaded()
        t0 = time.perf_counter()
        sizes = list(warm_sizes(self.config.warm_batches, range(1, self.config.max_batch + 1)))
        for b in sizes:
            img = np.zeros((b, 3, 224, 224), np.float32)
            info = np.zeros((b, 3), np.float32)
            self.infer(img, info)
        self._warm_batches = sizes
        self._warmup_s = time.perf_counter() - t0

    def infer(self, img, bbox_info) -> dict:
        import torch

        self._require_loaded()
        x = torch.as_tensor(img)
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, 224, 224):
            raise ValueError(f"img must be (B,3,224,224), got {tuple(x.shape)}")
        b = x.shape[0]
        if b == 0:
            return {"pred_pose": np.zeros((0, 24, 3, 3), np.float32), "pred_shape": np.zeros((0, 10), np.float32),
                    "pred_cam": np.zeros((0, 3), np.float32), "var_pose": np.zeros((0, 24), np.float32)}
        info = torch.as_tensor(bbox_info if bbox_info is not None else np.zeros((b, 3), np.float32))
        if tuple(info.shape) != (b, 3):
            raise ValueError(f"bbox_info must be ({b},3), got {tuple(info.shape)}")
        x = x.to(self.device, dtype=self.dtype, non_blocking=True)
        if self.config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        info = info.to(self.device, dtype=self.dtype)
        with torch.inference_mode():
            out = self.model(x, info)
        return {k: out[k].float().cpu().numpy() for k in OUTPUT_KEYS}

    def info(self) -> dict:
        m = self.model
        return {
            "name": self.name,
            "model": f"poco-{self.config.model}" if m is None else f"poco-{m.variant}",
            "device": str(self.device or self.config.device),
            "precision": self.config.precision,
            "channels_last": bool(self.config.channels_last),
            "untrained": True if m is None else bool(m.untrained),
            "checkpoint": None if m is None else m.checkpoint_path,
            "params": 0 if m is None else sum(p.numel() for p in m.parameters()),
            "batch_sizes": f"1..{self.config.max_batch} (any)",
            "warm_batches": list(self._warm_batches),
            "load_s": round(self._load_s, 3),
            "warmup_s": round(self._warmup_s, 3),
        }

    def close(self) -> None:
        self.model = None
        try:
            import torch
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover
            pass
