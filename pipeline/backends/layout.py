"""What goes into and comes out of every backend, in numpy only (docs/architecture.md §6).

The accelerated backends pack the four outputs into one (B, 253) block so a graph, engine or
ONNX session has one output and the host needs one copy; `split_flat` unpacks it. Kept free
of torch so a backend that does not need torch (onnx on the CPU) never imports it: importing
torch costs a restarted worker ~3 s on a 2-core box.
"""
from __future__ import annotations

import numpy as np

OUTPUT_NAMES = ("pred_pose", "pred_shape", "pred_cam", "var_pose")
OUTPUT_SHAPES = {"pred_pose": (24, 3, 3), "pred_shape": (10,), "pred_cam": (3,), "var_pose": (24,)}
CROP = 224
VARIANTS = ("cliff", "pare")
PRECISIONS = ("fp32", "fp16")
FLAT_WIDTH = sum(int(np.prod(s)) for s in OUTPUT_SHAPES.values())


def validate_config(config, precisions=PRECISIONS) -> None:
    """Model variant, precision (one of `precisions`, what the backend can run) and batch range."""
    if config.model not in VARIANTS:
        raise ValueError(f"model must be one of {VARIANTS}, got {config.model!r}")
    if config.precision not in precisions:
        raise ValueError(f"precision must be one of {tuple(precisions)}, got {config.precision!r} "
                         f"(bf16 is too lossy for POCO: 1.6e-1 on rotations)")
    if not 1 <= int(config.max_batch) <= 64:
        raise ValueError(f"max_batch (max_persons) must be in 1..64, got {config.max_batch}")


def check_inputs(img, bbox_info) -> int:
    if tuple(img.shape[1:]) != (3, CROP, CROP) or img.ndim != 4:
        raise ValueError(f"img must be (B,3,{CROP},{CROP}), got {tuple(img.shape)}")
    if bbox_info.ndim != 2 or bbox_info.shape[1] != 3:
        raise ValueError(f"bbox_info must be (B,3), got {tuple(bbox_info.shape)}")
    if img.shape[0] != bbox_info.shape[0]:
        raise ValueError(f"img has {img.shape[0]} crops but bbox_info {bbox_info.shape[0]} rows")
    if img.shape[0] < 1:
        raise ValueError("empty batch: call infer only with at least one person")
    return int(img.shape[0])


def split_flat(flat: np.ndarray) -> dict:
    """The (B, 253) block -> the four outputs as owned float32 arrays."""
    out, col = {}, 0
    b = flat.shape[0]
    for k in OUTPUT_NAMES:
        width = int(np.prod(OUTPUT_SHAPES[k]))
        out[k] = np.array(flat[:, col:col + width], dtype=np.float32).reshape(b, *OUTPUT_SHAPES[k])
        col += width
    return out
