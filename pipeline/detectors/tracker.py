"""A small IoU tracker so a person keeps the same id from frame to frame.

Greedy matching on IoU (highest overlap first) is enough for the handful of persons a
frame holds here. Ids only ever increase, also across `reset()`, so an id is never
reused for a different person by anything downstream (smoothing filters, viewers).
"""
from __future__ import annotations

import numpy as np


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a (N,4) with every box in b (M,4), x1,y1,x2,y2."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


class IouTracker:
    """Assigns track ids to the boxes of consecutive frames.

    iou_threshold: the least overlap with a track's last box that continues the track.
    max_age: frames a track may go unseen before its id expires.
    """

    def __init__(self, iou_threshold: float = 0.3, max_age: int = 30):
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
        if max_age < 0:
            raise ValueError(f"max_age must be >= 0 frames, got {max_age}")
        self.iou_threshold = float(iou_threshold)
        self.max_age = int(max_age)
        self._next_id = 0
        self._ids: list[int] = []
        self._boxes = np.zeros((0, 4), np.float64)
        self._unseen: list[int] = []

    def reset(self) -> None:
        self._ids, self._unseen = [], []
        self._boxes = np.zeros((0, 4), np.float64)

    @property
    def active_ids(self) -> list[int]:
        return list(self._ids)

    def update(self, boxes) -> np.ndarray:
        """Ids (N,) int32 for this frame's boxes (N,4); unmatched boxes get new ids."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        out = np.full(len(boxes), -1, np.int32)
        matched_tracks: set[int] = set()
        if len(boxes) and self._ids:
            iou = iou_matrix(self._boxes, boxes)
            for flat in np.argsort(-iou, axis=None, kind="stable"):
                t, d = divmod(int(flat), len(boxes))
                if iou[t, d] < self.iou_threshold:
                    break
                if t in matched_tracks or out[d] != -1:
                    continue
                matched_tracks.add(t)
                out[d] = self._ids[t]
                self._boxes[t] = boxes[d]
                self._unseen[t] = 0
        # age the tracks nobody matched, and let the old ones go
        keep = []
        for t in range(len(self._ids)):
            if t not in matched_tracks:
                self._unseen[t] += 1
            keep.append(self._unseen[t] <= self.max_age)
        self._ids = [i for i, k in zip(self._ids, keep) if k]
        self._unseen = [u for u, k in zip(self._unseen, keep) if k]
        self._boxes = self._boxes[np.asarray(keep, bool)] if keep else self._boxes
        for d in np.flatnonzero(out == -1):
            out[d] = self._next_id
            self._ids.append(self._next_id)
            self._unseen.append(0)
            self._boxes = np.vstack([self._boxes, boxes[d:d + 1]])
            self._next_id += 1
        return out
