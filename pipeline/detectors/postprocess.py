"""The box post-processing shared by every detector backend.

Order of operations: drop unusable boxes (non-finite, empty, wholly outside the frame,
smaller than `min_box_size`), optionally clip, track (on every surviving box, so a person
near the max_persons cut keeps its id), order, then cut to `max_persons`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.detectors.base import Detections, DetectorError

ORDERS = ("area", "score")


@dataclass
class PostConfig:
    max_persons: int = 8
    min_box_size: float = 16.0   # px; a box whose longer side is smaller is dropped
    order: str = "area"          # "area" (largest first, the seed's person 0) | "score"
    clip: bool = False           # boxes partly outside stay as they are: the crop zero-pads

    def __post_init__(self) -> None:
        if not isinstance(self.max_persons, int) or not 1 <= self.max_persons <= 64:
            raise DetectorError(f"max_persons must be an integer in 1..64, got {self.max_persons!r}")
        if not np.isfinite(self.min_box_size) or self.min_box_size < 0:
            raise DetectorError(f"min_box_size must be >= 0 pixels, got {self.min_box_size!r}")
        if self.order not in ORDERS:
            raise DetectorError(f"order must be one of {ORDERS}, got {self.order!r}")

    def as_dict(self) -> dict:
        return {"max_persons": self.max_persons, "min_box_size": self.min_box_size,
                "order": self.order, "clip": self.clip}


def postprocess(boxes, scores, height: int, width: int, cfg: PostConfig,
                track_ids=None, tracker=None) -> Detections:
    """Turn raw boxes (N,4 x1,y1,x2,y2) and scores (N,) into ordered, cut Detections.

    track_ids: ids the backend already has (e.g. ultralytics' tracker), or None.
    tracker: an object with `update(boxes) -> ids` used when track_ids is None.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    if len(scores) != len(boxes):
        raise ValueError(f"{len(boxes)} boxes but {len(scores)} scores")
    ids = (np.full(len(boxes), -1, np.int32) if track_ids is None
           else np.asarray(track_ids, dtype=np.int32).reshape(-1))

    keep = _usable(boxes, height, width, cfg.min_box_size)
    boxes, scores, ids = boxes[keep], scores[keep], ids[keep]
    if cfg.clip and len(boxes):
        boxes = boxes.copy()
        np.clip(boxes[:, 0::2], 0, width, out=boxes[:, 0::2])
        np.clip(boxes[:, 1::2], 0, height, out=boxes[:, 1::2])

    if tracker is not None and track_ids is None:
        ids = np.asarray(tracker.update(boxes), dtype=np.int32)

    n_found = len(boxes)
    if cfg.order == "area":
        key = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    else:
        key = scores
    # stable so equal keys keep the backend's order
    idx = np.argsort(-key, kind="stable")[: cfg.max_persons]
    return Detections(boxes=boxes[idx], scores=scores[idx], track_ids=ids[idx], n_found=n_found)


def _usable(boxes: np.ndarray, height: int, width: int, min_box_size: float) -> np.ndarray:
    if not len(boxes):
        return np.zeros(0, bool)
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    finite = np.isfinite(boxes).all(axis=1)
    with np.errstate(invalid="ignore"):
        inside = ((boxes[:, 0] < width) & (boxes[:, 2] > 0)
                  & (boxes[:, 1] < height) & (boxes[:, 3] > 0))
        big = (w > 0) & (h > 0) & (np.maximum(w, h) >= min_box_size)
    return finite & inside & big
