"""Random initialisation for untrained POCO runs: the official init scheme plus BatchNorm
statistics calibrated on synthetic images (uncalibrated BN makes fp16 overflow to NaN)."""
from __future__ import annotations

import numpy as np


def synthetic_images(n: int, seed: int = 0, res: int = 224) -> np.ndarray:
    """(n,res,res,3) uint8 images with image-like statistics: smooth colour fields, a bright
    person-sized blob and some fine noise. Needs only numpy and torch (no OpenCV)."""
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(seed)
    low = torch.from_numpy(rng.uniform(0, 255, (n, 3, 8, 8)).astype(np.float32))
    fields = F.interpolate(low, size=(res, res), mode="bicubic", align_corners=False).permute(0, 2, 3, 1).numpy()
    yy, xx = np.mgrid[0:res, 0:res]
    imgs = []
    for img in fields:
        cx, cy = rng.uniform(0.35, 0.65, 2) * res
        blob = np.exp(-(((xx - cx) / (0.12 * res)) ** 2 + ((yy - cy) / (0.35 * res)) ** 2))
        img = img * (1 - 0.6 * blob[..., None]) + 0.6 * blob[..., None] * rng.uniform(0, 255, 3)
        img += rng.normal(0, 8, img.shape)
        imgs.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(imgs)


def official_init(model) -> None:
    """Initialisation as the official code does for a fresh network (weights, BN affine)."""
    from torch import nn

    for name, m in model.backbone.named_modules():
        if isinstance(m, nn.Conv2d):
            if model.variant == "cliff":
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            else:
                nn.init.normal_(m.weight, std=0.001)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)


def calibrate_batchnorm(model, batches: int = 1, batch_size: int = 4, seed: int = 0) -> None:
    """Set BN running_mean/var to the statistics of realistic inputs (cumulative average)."""
    import torch
    from torch import nn

    from pipeline.models.preprocess import bbox_info, normalise

    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for i in range(batches):
            img = torch.from_numpy(normalise(synthetic_images(batch_size, seed=seed + i)))
            centres = rng.uniform(200, 1000, (batch_size, 2))
            sides = rng.uniform(150, 700, batch_size)
            info = torch.from_numpy(bbox_info(centres, sides, (1280, 720)))
            model(img, info)
    for m, mom in zip(bns, saved):
        m.momentum = mom
    model.eval()
