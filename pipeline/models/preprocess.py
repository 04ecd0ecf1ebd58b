"""Person crops for POCO (architecture.md §6): square box, affine warp to 224, ImageNet normalisation,
focal length and CLIFF's bbox_info.

Two equivalent crop paths: `crop_cv2` (cv2.warpAffine, CPU, the official behaviour) and
`crop_torch` (affine_grid + grid_sample from a full-frame tensor, for GPU preprocessing).
Box convention: the box centre maps to pixel (112, 112) of the crop and a box side of b pixels
to 224 pixels, exactly as the official `gen_trans_from_patch_cv` does.
"""
from __future__ import annotations

import numpy as np

CROP_RES = 224
BOX_SCALE = 1.2
IMG_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMG_STD = np.array([0.229, 0.224, 0.225], np.float32)


def _as_boxes(boxes) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64)
    if b.ndim == 1:
        b = b[None]
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4) as x1, y1, x2, y2; got {np.shape(boxes)}")
    if not np.all(np.isfinite(b)):
        raise ValueError("boxes contain NaN or infinite values")
    if np.any(b[:, 2] <= b[:, 0]) or np.any(b[:, 3] <= b[:, 1]):
        raise ValueError(f"boxes need x2 > x1 and y2 > y1; got {b.tolist()}")
    return b


def square_boxes(boxes, scale: float = BOX_SCALE) -> tuple[np.ndarray, np.ndarray]:
    """Detector boxes (N,4) x1,y1,x2,y2 -> centres (N,2) and square sides b = scale*max(w,h) (N,)."""
    b = _as_boxes(boxes)
    centres = np.stack([(b[:, 0] + b[:, 2]) / 2.0, (b[:, 1] + b[:, 3]) / 2.0], axis=1)
    sides = scale * np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
    return centres, sides


def focal_length(img_w: float, img_h: float) -> float:
    """Full-image focal length in pixels: the image diagonal (CLIFF convention)."""
    return float(np.sqrt(float(img_w) ** 2 + float(img_h) ** 2))


def bbox_info(centres, sides, img_wh) -> np.ndarray:
    """CLIFF box encoding (N,3) float32: [(cx-W/2)/f*2.8, (cy-H/2)/f*2.8, (b-0.24f)/(0.06f)]."""
    c = np.asarray(centres, np.float64).reshape(-1, 2)
    s = np.asarray(sides, np.float64).reshape(-1)
    w, h = float(img_wh[0]), float(img_wh[1])
    f = focal_length(w, h)
    info = np.stack([
        (c[:, 0] - w / 2.0) / f * 2.8,
        (c[:, 1] - h / 2.0) / f * 2.8,
        (s - 0.24 * f) / (0.06 * f),
    ], axis=1)
    return info.astype(np.float32)


def crop_affine(centre, side: float, res: int = CROP_RES, float32_points: bool = False) -> np.ndarray:
    """2x3 matrix mapping full-image pixels to crop pixels (centre -> res/2, side -> res).

    float32_points=True (needs OpenCV) reproduces the official matrix bit for bit: it is solved
    by cv2.getAffineTransform from three float32 points (centre, centre + (0, side/2),
    centre + (side/2, 0)). The rounding moves the crop by < 1e-4 px, but cv2.warpAffine samples
    on a 1/32-px fixed-point grid, so even ulp-level matrix differences gave crops up to
    3 intensity levels off the official ones at edges (about 1 box in 40).
    """
    half_res = res / 2.0
    if not float32_points:
        k = res / float(side)
        cx, cy = float(centre[0]), float(centre[1])
        return np.array([[k, 0.0, half_res - k * cx], [0.0, k, half_res - k * cy]], np.float64)
    import cv2

    c = np.array([centre[0], centre[1]], np.float64)
    half = np.float32(float(side) * 0.5)
    src = np.array([c, c + (0.0, half), c + (half, 0.0)]).astype(np.float32)
    dst = np.array([[half_res, half_res], [half_res, res], [res, half_res]], np.float32)
    return cv2.getAffineTransform(src, dst)


def crop_cv2(frame_rgb: np.ndarray, centre, side: float, res: int = CROP_RES) -> np.ndarray:
    """uint8 RGB crop (res,res,3): bilinear, zero padding outside the frame, pixel-identical to
    the official demo crop of the same square box."""
    import cv2

    return cv2.warpAffine(frame_rgb, crop_affine(centre, side, res, float32_points=True), (res, res),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def normalise(crops_rgb: np.ndarray) -> np.ndarray:
    """(N,H,W,3) uint8 RGB -> (N,3,H,W) float32: /255, ImageNet mean/std."""
    x = crops_rgb.astype(np.float32) / 255.0
    x = (x - IMG_MEAN) / IMG_STD
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _check_frame(frame_rgb) -> np.ndarray:
    if not isinstance(frame_rgb, np.ndarray) or frame_rgb.ndim != 3 or frame_rgb.shape[2] != 3:
        raise ValueError(f"frame must be an (H, W, 3) RGB numpy array; got "
                         f"{getattr(frame_rgb, 'shape', type(frame_rgb).__name__)}")
    if frame_rgb.shape[0] == 0 or frame_rgb.shape[1] == 0:
        raise ValueError(f"frame has zero size {frame_rgb.shape}")
    if frame_rgb.dtype != np.uint8:
        raise ValueError(f"frame must be uint8, got {frame_rgb.dtype}")
    return frame_rgb


def crop_batch(frame_rgb: np.ndarray, boxes, scale: float = BOX_SCALE, device="cpu"):
    """All persons of one frame -> network inputs.

    Returns (img (N,3,224,224) float32 tensor, bbox_info (N,3) float32 tensor,
    centres (N,2) float64 numpy, sides (N,) float64 numpy = square box side b in pixels;
    the official code calls b/200 the "scale").
    """
    import torch

    frame = _check_frame(frame_rgb)
    centres, sides = square_boxes(boxes, scale)
    crops = np.stack([crop_cv2(frame, c, s) for c, s in zip(centres, sides)])
    h, w = frame.shape[:2]
    img = torch.from_numpy(normalise(crops)).to(device)
    info = torch.from_numpy(bbox_info(centres, sides, (w, h))).to(device)
    return img, info, centres, sides


def crop_torch(frames, centres, sides, frame_index=None, res: int = CROP_RES, normalize: bool = True):
    """Batched crops from full-frame tensors with affine_grid/grid_sample (GPU friendly).

    frames: (F,3,H,W) or (3,H,W) tensor, uint8 0..255 or float 0..255; centres (N,2),
    sides (N,); frame_index (N,) picks the frame of each crop (default all from frame 0).
    Returns (N,3,res,res) float32, ImageNet-normalised when `normalize`. Agrees with
    `crop_cv2` up to cv2's fixed-point interpolation (a few intensity levels on hard edges).
    """
    import torch
    import torch.nn.functional as F

    if frames.dim() == 3:
        frames = frames.unsqueeze(0)
    if frames.dim() != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must be (F,3,H,W) or (3,H,W); got {tuple(frames.shape)}")
    dev = frames.device
    h, w = frames.shape[-2:]
    c = torch.as_tensor(np.asarray(centres), dtype=torch.float64, device=dev).reshape(-1, 2)
    s = torch.as_tensor(np.asarray(sides), dtype=torch.float64, device=dev).reshape(-1)
    n = c.shape[0]
    # Output pixel u (centre at u + 0.5 in grid units) samples input pixel x = (u - res/2)/k + cx
    # with k = res/side; expressed in grid_sample's normalised coordinates (align_corners=False).
    k = res / s
    theta = torch.zeros(n, 2, 3, dtype=torch.float64, device=dev)
    theta[:, 0, 0] = s / w
    theta[:, 0, 2] = (2 * c[:, 0] + 1 - 1 / k) / w - 1
    theta[:, 1, 1] = s / h
    theta[:, 1, 2] = (2 * c[:, 1] + 1 - 1 / k) / h - 1
    grid = F.affine_grid(theta.float(), [n, 3, res, res], align_corners=False)
    if frame_index is None:
        src = frames[:1].expand(n, -1, -1, -1)
    else:
        src = frames[torch.as_tensor(frame_index, dtype=torch.long, device=dev)]
    out = F.grid_sample(src.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if normalize:
        mean = torch.as_tensor(IMG_MEAN * 255.0, device=dev).view(1, 3, 1, 1)
        std = torch.as_tensor(IMG_STD * 255.0, device=dev).view(1, 3, 1, 1)
        out = (out - mean) / std
    return out
