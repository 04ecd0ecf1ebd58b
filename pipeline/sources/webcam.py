"""Webcam source: `cv2.VideoCapture(index)` with optional resolution/fps and bounded re-tries."""
from __future__ import annotations

import logging
import time
from typing import Callable

import cv2

from pipeline.sources.base import Frame, Source, SourceError

log = logging.getLogger(__name__)

LIST_HINT = "list cameras with `v4l2-ctl --list-devices` or `ls /dev/video*`"


class WebcamSource(Source):
    kind = "webcam"
    is_live = True

    def __init__(self, index: int, width: int | None = None, height: int | None = None,
                 fps: float | None = None, retries: int = 10, retry_delay: float = 0.1,
                 capture_factory: Callable[[int], object] | None = None):
        super().__init__()
        if int(index) < 0:
            raise SourceError(f"camera index must be >= 0, got {index}")
        self.index = int(index)
        self.retries = max(int(retries), 1)
        self.retry_delay = float(retry_delay)
        self._want = (width, height, fps)
        self._factory = capture_factory or cv2.VideoCapture
        self._count = 0
        self._cap = self._open()
        got = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(got) if got and got > 0 else None

    def _open(self):
        cap = self._factory(self.index)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"camera {self.index} could not be opened (no such device, or in use by another "
                              f"program); {LIST_HINT}")
        width, height, fps = self._want
        for prop, value, label in ((cv2.CAP_PROP_FRAME_WIDTH, width, "width"),
                                   (cv2.CAP_PROP_FRAME_HEIGHT, height, "height"),
                                   (cv2.CAP_PROP_FPS, fps, "fps")):
            if value is not None:
                cap.set(prop, float(value))
                actual = cap.get(prop)
                if actual and abs(actual - float(value)) > 0.5:
                    log.warning("camera %d: asked for %s %s, the driver gives %s", self.index, label, value, actual)
        return cap

    def describe(self) -> str:
        return f"camera {self.index}"

    def read(self) -> Frame | None:
        if self._closed:
            raise SourceError(f"{self.describe()} is closed")
        failures = 0
        while True:
            ok, frame = self._read_capture(self._cap)
            if ok:
                if frame is not None:
                    return frame
                continue
            failures += 1
            if failures >= self.retries:
                raise SourceError(f"camera {self.index} stopped delivering frames ({failures} failed reads): "
                                  f"unplugged or taken by another program? {LIST_HINT}")
            log.warning("camera %d: read failed (%d/%d), retrying", self.index, failures, self.retries)
            time.sleep(self.retry_delay)
            if failures == self.retries // 2:
                self._cap.release()  # half-way: a USB camera that re-enumerated needs a fresh handle
                try:
                    self._cap = self._open()
                except SourceError:
                    pass  # the released handle keeps failing; the retry budget ends it

    def close(self) -> None:
        if not self._closed:
            self._cap.release()
        super().close()

