"""Where people may be that BlazePose's face-anchored detector does not see: person segmentation.

BlazePose's detector answers from a face (or the head's position): a person walking away,
turned aside or with the face in shadow scores low or not at all. MediaPipe's selfie
segmentation model (also in the mediapipe wheel; 256x256 input, or 256x144 for wide frames)
outlines people whatever way they face. Each blob of its mask (probability >= `THRESHOLD`,
low on purpose: a person seen from behind scores weakly; closed vertically so a body split at
the waist is one blob) that the people already known do not cover becomes a *proposal*: a
square region around it in the landmark model's own region format (`keypoints_from_anchors`),
which the blazepose detector hands to the pose landmark model like a followed person. The
landmark model decides: no pose there (presence < 0.5), no person.

Measured on ultralytics' `bus.jpg`: the walker on the right, whom the detector scores below
0.47 even alone, is a blob of the mask; in the region around it the landmark model sees his
pose (presence 0.55-0.98 with the region sizes tried) and outlines him at IoU 0.91 with the
hand-drawn box. On the sample clip (tools/detect_quality.py) the same walker, at 2/3 of the
photo's scale, is no blob at 256x144 and is still missed: nothing changed there.

The model runs on LiteRT on the CPU (wide model 2.4 ms, square 4.6 ms, one thread on the
2-core box, plus ~0.5 ms to shrink a 1080p frame), only on the frames the detector runs its
masked rounds; beside a GPU detector on a thread of its own (`start`/`collect`).
"""
from __future__ import annotations

import numpy as np

from pipeline.detectors.landmark_boxes import ROI_SCALE, covered

THRESHOLD = 0.1         # mask probability from which a pixel may belong to a person
REGION_OF_BLOB = 1.5    # landmark region side / the blob's longer side (MediaPipe's regions are
                        # 1.25 x the body circle's diameter; at 1.1 the walker's presence was 0.38)
MIN_BLOB_PIXELS = 24    # blobs smaller than this (model pixels) are noise
MIN_BLOB_HEIGHT = 32.0  # frame pixels: a smaller blob is too small a person for the landmark model
CLOSE_ROWS, CLOSE_COLS = 9, 3   # closing of the mask (model pixels) before the blobs: a body split at the
                                # waist (bus.jpg's walker: torso and legs apart at THRESHOLD) is one blob
KNOWN_COVERED = 0.6     # a blob this much inside the boxes of known people adds nobody
WIDE = 1.3              # width / height from which the wide (256x144) model fits the frame better
MODELS = {"square": "selfie_segmentation", "wide": "selfie_segmentation_landscape"}


class SegmentProposals:
    """Person-shaped blobs of MediaPipe's selfie segmentation, as landmark regions.

    `blobs` runs the model here; `start`/`collect` run it on a thread of its own (LiteRT lets go
    of the GIL while it runs), for a caller that can take the blobs of a frame one frame later."""

    def __init__(self, threads: int = 1, threshold: float = THRESHOLD):
        import cv2

        from pipeline.models.tflite import TfliteError, TfliteModel, mediapipe_model_path
        self._cv2 = cv2
        self.threshold = float(threshold)
        self._models = {}
        for kind, name in MODELS.items():
            model = TfliteModel(mediapipe_model_path(name), threads=threads, outputs=1)
            shapes = model.input_shapes
            if len(shapes) != 1 or len(shapes[0]) != 4 or shapes[0][0] != 1 or shapes[0][3] != 3:
                raise TfliteError(f"{model.path} has inputs {shapes}, expected one (1, H, W, 3) image")
            self._models[kind] = model
        self._pool = None
        self._pending = None

    def _input(self, rgb: np.ndarray):
        """The model for the frame's shape and the frame resized to its input, [0, 1]."""
        from pipeline.detectors.shrink import shrink
        h, w = rgb.shape[:2]
        model = self._models["wide" if w > WIDE * h else "square"]
        _, mh, mw, _ = model.input_shapes[0]
        x = shrink(rgb, mw, mh).astype(np.float32)
        x *= 1.0 / 255.0
        return model, x[None], (h, w)

    def _blobs(self, model, x, size) -> np.ndarray:
        prob = model(x)[0][0, ..., 0]
        return blob_boxes(prob >= self.threshold, size, self._cv2)

    def blobs(self, rgb: np.ndarray) -> np.ndarray:
        """(B,4) frame-pixel boxes of the mask's blobs, largest first."""
        return self._blobs(*self._input(rgb))

    def start(self, rgb: np.ndarray) -> None:
        """Start `blobs` of this frame on the thread; a result not collected yet is dropped."""
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="segment")
        self._pending = self._pool.submit(self._blobs, *self._input(rgb))

    def collect(self):
        """The blobs of the frame last started once they are ready (once), else None."""
        if self._pending is None or not self._pending.done():
            return None
        future, self._pending = self._pending, None
        return future.result()

    def drop(self) -> None:
        """Forget a started frame (a scene cut)."""
        self._pending = None

    def select(self, boxes: np.ndarray, known: np.ndarray, limit: int):
        """Up to `limit` of the blobs (B,4) the `known` boxes (K,4) do not cover: (P,2,2)
        landmark region points (centre, end of the body radius) and (P,4) their boxes."""
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        if len(boxes) and len(known):
            boxes = boxes[covered(boxes, known) < KNOWN_COVERED]
        boxes = boxes[:max(0, limit)]
        return blob_regions(boxes), boxes

    def close(self) -> None:
        self._pending = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def blob_boxes(binary: np.ndarray, size, cv2) -> np.ndarray:
    """(B,4) frame-pixel boxes of the connected blobs of a (h, w) mask of a frame of `size`
    (height, width), largest first; small or short blobs are left out."""
    h, w = size
    mh, mw = binary.shape
    binary = cv2.morphologyEx(binary.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((CLOSE_ROWS, CLOSE_COLS), np.uint8))
    _, _, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    stats = stats[1:]                                   # 0 is the background
    stats = stats[stats[:, 4] >= MIN_BLOB_PIXELS]
    stats = stats[np.argsort(-stats[:, 4], kind="stable")]
    sx, sy = w / mw, h / mh
    boxes = np.stack([stats[:, 0] * sx, stats[:, 1] * sy, (stats[:, 0] + stats[:, 2]) * sx,
                      (stats[:, 1] + stats[:, 3]) * sy], axis=1).astype(np.float32).reshape(-1, 4)
    return boxes[boxes[:, 3] - boxes[:, 1] >= MIN_BLOB_HEIGHT]


def blob_regions(boxes: np.ndarray) -> np.ndarray:
    """(B,2,2) landmark region points of a square `REGION_OF_BLOB` x each box's longer side,
    centred on the box: the centre and a point one body radius above it."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2.0
    side = REGION_OF_BLOB * np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    radius = side / (2.0 * ROI_SCALE)
    top = centres - np.stack([np.zeros_like(radius), radius], axis=1)
    return np.stack([centres, top], axis=1)
