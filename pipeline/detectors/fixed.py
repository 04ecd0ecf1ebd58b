"""Fixed boxes given in the config: for set-ups where people stand at known places (a capture
booth, a multi-person lab rig) and for benchmarks that must control the number of persons
exactly. Boxes are fractions of the frame (x1, y1, x2, y2 in 0..1), so they follow
resolution changes; each box keeps its index as its track id."""
from __future__ import annotations

import numpy as np

from pipeline.detectors.base import Detections, Detector, DetectorError
from pipeline.detectors.postprocess import PostConfig, postprocess


class FixedDetector(Detector):
    kind = "fixed"
    single_person = False

    def __init__(self, boxes=None, max_persons: int = 8, min_box_size: float = 16.0,
                 order: str = "area", clip: bool = False):
        super().__init__()
        self.boxes = _parse_boxes(boxes)
        self.post = PostConfig(max_persons=max_persons, min_box_size=min_box_size, order=order, clip=clip)

    def setup(self) -> None:
        self._ready = True

    def _detect(self, rgb: np.ndarray, height: int, width: int) -> Detections:
        pixels = self.boxes * np.array([width, height, width, height], np.float32)
        return postprocess(pixels, np.ones(len(pixels), np.float32), height, width, self.post,
                           track_ids=list(range(len(pixels))))

    def reset(self) -> None:
        pass

    def info(self) -> dict:
        return {"kind": self.kind, "model": None, "device": "cpu", "half": False,
                "single_person": False, "tracker": "fixed ids (box index)",
                "thresholds": {"boxes": self.boxes.tolist()}, **self.post.as_dict()}


def _parse_boxes(boxes) -> np.ndarray:
    hint = "detection boxes are [[x1, y1, x2, y2], ...] as fractions of the frame (0..1), x1 < x2, y1 < y2"
    if boxes is None or len(boxes) == 0:
        raise DetectorError(f"the fixed detector needs at least one box: {hint}")
    try:
        arr = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    except (TypeError, ValueError) as exc:
        raise DetectorError(f"bad fixed boxes {boxes!r}: {hint}") from exc
    if (not np.isfinite(arr).all() or (arr < -1).any() or (arr > 2).any()
            or (arr[:, 2] <= arr[:, 0]).any() or (arr[:, 3] <= arr[:, 1]).any()):
        raise DetectorError(f"bad fixed boxes {boxes!r}: {hint}")
    return arr
