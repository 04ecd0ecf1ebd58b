"""Shrinking a big frame to a small model input by area averaging, fast.

OpenCV's INTER_AREA at a non-integer factor is slow: 1080p to 256x144 takes ~9 ms on the 2-core
box, more than the selfie segmentation model it feeds (2.4 ms). A bilinear step to twice the
target first, then INTER_AREA's 2x2 average, takes ~0.5 ms and differs from the one-step result
by 0.21 grey levels on average (at most 8 of 255; zidane.jpg at 1080p to 224x224). A plain
bilinear shrink to the target aliases. (BlazePose's detector keeps the one-step INTER_AREA:
with this shrink its people found on the sample clip moved by +0.6 / -0.2 points and its false
persons by +0.8 / +1.7 per 100 frames, CPU / GPU settings, within what 240 frames resolve but
not an improvement; its CPU detect() median went from 54 to 46 ms.)
"""
from __future__ import annotations

import numpy as np


def shrink(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """img (H,W,C) uint8 resized to (height, width, C) by area averaging."""
    import cv2
    h, w = img.shape[:2]
    if w > 2 * width and h > 2 * height:
        img = cv2.resize(img, (2 * width, 2 * height), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)
