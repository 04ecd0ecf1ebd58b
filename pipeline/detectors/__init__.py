"""Person detectors (architecture.md §5): YOLO, BlazePose (the offline multi-person default),
MediaPipe, a fixed centre box, fixed boxes, and an IoU tracker.

    det = make_detector("auto", max_persons=4)
    det.setup()
    d = det.detect(rgb)      # Detections(boxes, scores, track_ids, n_found)

Importing this package is light: torch, ultralytics and mediapipe load in `setup()`.

May import: numpy, OpenCV, `pipeline.models.tflite` (models shipped in the mediapipe wheel) and
(inside `setup()`) torch, ultralytics, mediapipe. Detectors see plain RGB arrays, never rings.
"""
from __future__ import annotations

import inspect
import logging
from pathlib import Path

from pipeline.detectors.base import Detections, Detector, DetectorError, check_frame
from pipeline.detectors.postprocess import PostConfig, postprocess
from pipeline.detectors.tracker import IouTracker, iou_matrix

log = logging.getLogger(__name__)

KINDS = ("yolo", "blazepose", "mediapipe", "center", "fixed", "auto")

__all__ = ["make_detector", "find_yolo_weights", "Detections", "Detector", "DetectorError",
           "IouTracker", "PostConfig", "postprocess", "iou_matrix", "check_frame", "KINDS"]


def _classes() -> dict:
    from pipeline.detectors.blazepose import BlazePoseDetector
    from pipeline.detectors.center import CenterDetector
    from pipeline.detectors.fixed import FixedDetector
    from pipeline.detectors.mediapipe_pose import MediaPipeDetector
    from pipeline.detectors.yolo import YoloDetector
    return {"yolo": YoloDetector, "blazepose": BlazePoseDetector, "mediapipe": MediaPipeDetector,
            "center": CenterDetector, "fixed": FixedDetector}


def find_yolo_weights(data_dir: str | Path | None = None) -> Path | None:
    """The first <data_dir>/yolo*.pt file (sorted by name), or None; data_dir defaults to the
    pipeline's (pipeline.config.default_data_dir)."""
    if data_dir is None:
        from pipeline.config import default_data_dir

        data_dir = default_data_dir()
    files = sorted(p for p in Path(data_dir).glob("yolo*.pt") if p.is_file())
    return files[0] if files else None


def make_detector(kind: str, data_dir: str | Path | None = None, **params) -> Detector:
    """Build (not yet set up) a detector of `kind` (one of KINDS).

    "auto" is yolo when a data/yolo*.pt exists (unless `model` names one), else blazepose (the
    multi-person detector whose weights ship in the mediapipe wheel);
    options the chosen kind does not have are dropped with a log line. For an explicit kind an
    unknown option is an error that lists the allowed ones.
    """
    if kind not in KINDS:
        raise DetectorError(f"unknown detector {kind!r}; choose one of {KINDS}")
    classes = _classes()
    if kind == "auto":
        weights = params.get("model") or find_yolo_weights(data_dir)
        kind = "yolo" if weights else "blazepose"
        if weights:
            params["model"] = weights
        allowed = _options(classes[kind])
        dropped = sorted(set(params) - allowed)
        if dropped:
            log.info("detector auto -> %s: ignoring options it does not have: %s", kind, dropped)
        params = {k: v for k, v in params.items() if k in allowed}
        log.info("detector auto -> %s%s", kind, f" ({weights})" if weights else " (no data/yolo*.pt found)")
    else:
        unknown = sorted(set(params) - _options(classes[kind]))
        if unknown:
            raise DetectorError(f"detector {kind!r} has no option(s) {unknown}; "
                                f"allowed: {sorted(_options(classes[kind]))}")
    return classes[kind](**params)


def _options(cls) -> set[str]:
    return {n for n in inspect.signature(cls.__init__).parameters if n != "self"}
