"""Decode BlazePose's person detector: SSD anchors, box/keypoint regression, weighted NMS.

The facts come from MediaPipe's published graph for this model (`PoseDetectionCpu`):
5 anchor layers with strides 8, 16, 32, 32, 32 on a 224x224 input, one aspect ratio (1.0)
plus the interpolated one per layer, fixed anchor size (so every anchor is 1x1 and only its
centre matters), anchor offset 0.5; 12 regressed values per anchor in x-first order (box
centre x, y, width, height, then 4 keypoints as x, y), all divided by 224 and added to the
anchor centre; score = sigmoid of the raw logit clipped to +-100; weighted NMS at IoU 0.3.
The 4 keypoints are: 0 mid-hip centre, 1 a point whose distance from the hip centre is the
radius of the circle around the whole body (and whose direction is the body's tilt),
2 mid-shoulder centre, 3 the same for the upper body. The box is the FACE box.

Everything here is plain numpy on normalised coordinates of the 224x224 letterboxed input.
"""
from __future__ import annotations

import numpy as np

INPUT_SIZE = 224
STRIDES = (8, 16, 32, 32, 32)
ANCHORS_PER_LAYER = 2          # aspect ratio 1.0 + the interpolated-scale anchor
NUM_ANCHORS = 2254
NUM_COORDS = 12
NUM_KEYPOINTS = 4
SCORE_CLIP = 100.0
HIP, BODY_SCALE, SHOULDER, UPPER_SCALE = range(4)


def anchor_centres(input_size: int = INPUT_SIZE, strides=STRIDES, per_layer: int = ANCHORS_PER_LAYER) -> np.ndarray:
    """(N, 2) anchor centres x, y in [0, 1], in the order the model emits its candidates.

    Consecutive layers with the same stride share one feature map: their anchors are emitted
    together, location by location (row-major), all anchors of a location in a row.
    """
    out = []
    i = 0
    while i < len(strides):
        stride = strides[i]
        j = i
        while j < len(strides) and strides[j] == stride:
            j += 1
        per_location = per_layer * (j - i)
        side = int(np.ceil(input_size / stride))
        ys, xs = np.meshgrid((np.arange(side) + 0.5) / side, (np.arange(side) + 0.5) / side, indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        out.append(np.repeat(grid, per_location, axis=0))
        i = j
    return np.concatenate(out).astype(np.float32)


def decode(raw: np.ndarray, logits: np.ndarray, anchors: np.ndarray, min_score: float,
           input_size: int = INPUT_SIZE, num_keypoints: int = NUM_KEYPOINTS):
    """Candidates above `min_score`: (boxes (K,4) x1,y1,x2,y2, keypoints (K,P,2), scores (K,)).

    raw (N, 4 + 2P) regressors and logits (N,) or (N, 1), in input pixels; results normalised.
    """
    coords = 4 + 2 * num_keypoints
    raw = np.asarray(raw, np.float32).reshape(-1, coords)
    logits = np.asarray(logits, np.float32).reshape(-1)
    if len(raw) != len(anchors) or len(logits) != len(anchors):
        raise ValueError(f"expected {len(anchors)} candidates, got {len(raw)} boxes and {len(logits)} scores")
    # exp(-(-100)) is finite in float32; the clip is the model's, the float64 keeps numpy quiet
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -SCORE_CLIP, SCORE_CLIP)))
    keep = np.flatnonzero(scores >= min_score)
    if not len(keep):
        return (np.zeros((0, 4), np.float32), np.zeros((0, num_keypoints, 2), np.float32),
                np.zeros(0, np.float32))
    r = raw[keep] / input_size
    a = anchors[keep]
    centre = r[:, 0:2] + a
    half = r[:, 2:4] / 2
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    kps = r[:, 4:].reshape(-1, num_keypoints, 2) + a[:, None, :]
    return boxes.astype(np.float32), kps.astype(np.float32), scores[keep].astype(np.float32)


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, iou_threshold: float = 0.3):
    """MediaPipe-style weighted NMS: the best remaining candidate absorbs every candidate that
    overlaps it by more than `iou_threshold`; its box and keypoints become the score-weighted
    mean of the group, its score stays the best one's. Returns the same three arrays, best first."""
    from pipeline.detectors.tracker import iou_matrix

    order = np.argsort(-scores, kind="stable")
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    iou = iou_matrix(boxes, boxes)
    left = np.ones(len(boxes), bool)
    out_b, out_k, out_s = [], [], []
    for i in range(len(boxes)):
        if not left[i]:
            continue
        group = left & (iou[i] > iou_threshold)
        group[i] = True
        w = scores[group][:, None]
        out_b.append((boxes[group] * w).sum(0) / w.sum())
        out_k.append((keypoints[group].reshape(int(group.sum()), -1) * w).sum(0) / w.sum())
        out_s.append(scores[i])
        left &= ~group
    if not out_b:
        return boxes, keypoints, scores
    return (np.array(out_b, np.float32), np.array(out_k, np.float32).reshape(len(out_k), -1, 2),
            np.array(out_s, np.float32))


def person_boxes(keypoints_px: np.ndarray, width_ratio: float, height_ratio: float = 1.0) -> np.ndarray:
    """Full-body person boxes (K,4) from the keypoints in image pixels (K,4,2).

    The body circle has its centre at the mid-hip and radius |kp1 - kp0| (the body axis runs
    along kp1 - kp0). The person is an upright rectangle in that frame: `height_ratio` * radius
    along the axis each way, `width_ratio` * radius across it each way; its axis-aligned extent
    is the box. Tilted or lying people get a box that still holds the rotated body.
    """
    kp = np.asarray(keypoints_px, np.float32).reshape(-1, NUM_KEYPOINTS, 2)
    hip = kp[:, HIP]
    axis = kp[:, BODY_SCALE] - hip
    radius = np.linalg.norm(axis, axis=1)
    unit = axis / np.maximum(radius, 1e-6)[:, None]
    along = np.abs(unit) * (height_ratio * radius)[:, None]            # |u| * h for x and y
    across = np.abs(unit[:, ::-1]) * (width_ratio * radius)[:, None]   # |u_perp| * w
    half = along + across
    return np.concatenate([hip - half, hip + half], axis=1).astype(np.float32)
