"""A fixed centred square: the seed's IPMAN-R webcam behaviour, for one person who stands
in front of the camera when no detector is wanted."""
from __future__ import annotations

import numpy as np

from pipeline.detectors.base import Detections, Detector, DetectorError
from pipeline.detectors.postprocess import PostConfig, postprocess


class CenterDetector(Detector):
    kind = "center"
    single_person = True

    def __init__(self, size: float = 1.0, max_persons: int = 8, min_box_size: float = 16.0,
                 order: str = "area", clip: bool = False):
        super().__init__()
        if not isinstance(size, (int, float)) or not 0.0 < size <= 1.0:
            raise DetectorError(f"center size is a fraction of min(height, width) in (0, 1], got {size!r}")
        self.size = float(size)
        self.post = PostConfig(max_persons=max_persons, min_box_size=min_box_size, order=order, clip=clip)

    def setup(self) -> None:
        self._ready = True

    def _detect(self, rgb: np.ndarray, height: int, width: int) -> Detections:
        side = self.size * min(height, width)
        cx, cy = width / 2.0, height / 2.0
        box = np.array([[cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]], np.float32)
        # always the same person, so the id is fixed rather than tracked
        return postprocess(box, [1.0], height, width, self.post, track_ids=[0])

    def reset(self) -> None:
        pass

    def info(self) -> dict:
        return {"kind": self.kind, "model": None, "device": "cpu", "half": False,
                "single_person": True, "tracker": "fixed id 0",
                "thresholds": {"size": self.size}, **self.post.as_dict()}
