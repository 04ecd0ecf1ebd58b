"""What every person detector returns and the small interface it implements (architecture.md §5).

A detector is a plain library object: no rings, no processes. Heavy imports happen in
`setup()`, never at import time, so `import pipeline.detectors` stays light.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np


class DetectorError(RuntimeError):
    """A detector cannot be built or cannot use its input; the message says what to do."""


@dataclass
class Detections:
    """Person boxes of one frame, largest (or best) first.

    boxes are the raw detector boxes x1, y1, x2, y2 in frame pixels; the inference stage
    squares them itself (side 1.2 * max(w, h), architecture.md §6). `n_found` counts the persons
    found before the `max_persons` cut, so a crowded scene is visible downstream.
    """

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))
    track_ids: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int32))
    n_found: int = 0

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        n = len(self.boxes)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.track_ids = np.asarray(self.track_ids, dtype=np.int32).reshape(-1)
        if len(self.scores) != n or len(self.track_ids) != n:
            raise ValueError(
                f"Detections arrays disagree: {n} boxes, {len(self.scores)} scores, "
                f"{len(self.track_ids)} track ids")
        if self.n_found < n:
            raise ValueError(f"n_found ({self.n_found}) is smaller than the {n} boxes kept")

    def __len__(self) -> int:
        return len(self.boxes)

    @property
    def count(self) -> int:
        return len(self.boxes)

    def to_record(self, rec) -> None:
        """Write into a detections-ring record (`records.detections_dtype`) in place.

        Only the person fields are touched (count, n_found, boxes, scores, track_ids); the
        header and frame reference belong to the caller. Unused slots are zeroed, ids -1.
        """
        cap = rec["boxes"].shape[0]
        n = min(len(self), cap)
        rec["count"] = n
        rec["n_found"] = max(self.n_found, n)
        rec["boxes"][:n] = self.boxes[:n]
        rec["boxes"][n:] = 0
        rec["scores"][:n] = self.scores[:n]
        rec["scores"][n:] = 0
        rec["track_ids"][:n] = self.track_ids[:n]
        rec["track_ids"][n:] = -1

    @classmethod
    def from_record(cls, rec) -> "Detections":
        """Copy the persons out of a detections-ring record (no view into the ring is kept)."""
        n = int(rec["count"])
        if not 0 <= n <= rec["boxes"].shape[0]:
            raise ValueError(f"detections record count {n} outside 0..{rec['boxes'].shape[0]}")
        return cls(boxes=np.array(rec["boxes"][:n]), scores=np.array(rec["scores"][:n]),
                   track_ids=np.array(rec["track_ids"][:n]), n_found=max(int(rec["n_found"]), n))


def check_frame(rgb) -> tuple[int, int]:
    """Reject anything that is not an HxWx3 uint8 image; return (H, W)."""
    if not isinstance(rgb, np.ndarray):
        raise DetectorError(f"frame must be a numpy array, got {type(rgb).__name__}")
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise DetectorError(f"frame must be HxWx3 RGB, got shape {rgb.shape}")
    if rgb.dtype != np.uint8:
        raise DetectorError(f"frame must be uint8, got {rgb.dtype}")
    h, w = rgb.shape[:2]
    if h == 0 or w == 0:
        raise DetectorError(f"frame is empty ({h}x{w}); the source produced no pixels")
    return h, w


class Detector(ABC):
    """setup() -> detect(rgb)* -> reset() on a new source or scene cut -> close()."""

    kind: str = "base"
    single_person: bool = False

    def __init__(self) -> None:
        self._ready = False

    @abstractmethod
    def setup(self) -> None:
        """Load the model (heavy imports happen here). Raise DetectorError when impossible."""

    @abstractmethod
    def _detect(self, rgb: np.ndarray, height: int, width: int) -> Detections:
        """Detect on a checked frame. Must not keep a reference to `rgb`."""

    def detect(self, rgb: np.ndarray) -> Detections:
        """Person boxes in an HxWx3 uint8 RGB frame (a view into shared memory is fine)."""
        if not self._ready:
            raise DetectorError(f"{self.kind} detector: call setup() before detect()")
        h, w = check_frame(rgb)
        return self._detect(rgb, h, w)

    @abstractmethod
    def reset(self) -> None:
        """Forget everything learnt from earlier frames (new source, scene cut)."""

    @abstractmethod
    def info(self) -> dict:
        """kind, model file, device, half, single_person, thresholds, tracker."""

    def warming(self) -> str:
        """What the detector still prepares while it serves frames ('' when nothing), e.g. a
        faster engine being compiled; its frames until then run a slower way."""
        return ""

    def register_host(self, address: int, size: int) -> bool:
        """Page-lock caller memory the frames will live in (a frames ring), so a GPU detector
        uploads them by DMA straight from it. False: not used (a CPU detector, or CUDA refused)."""
        return False

    def unregister_host(self) -> None:
        """Undo `register_host`; call before that memory is unmapped."""

    def close(self) -> None:
        self._ready = False

    def __enter__(self):
        self.setup()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
