"""Video file source: paced at the file's native fps (dropping, never delaying) or as fast as possible."""
from __future__ import annotations

import logging
import math
import os
import time

import cv2

from pipeline.sources.base import Frame, Pacer, Source, SourceError, decoder_params

log = logging.getLogger(__name__)

DEFAULT_FPS = 30.0


class VideoFileSource(Source):
    kind = "video"
    is_live = False

    def __init__(self, path: str, realtime: bool = True, loop: bool = False, fps: float | None = None):
        super().__init__()
        self.path = str(path)
        self.realtime = bool(realtime)
        self.loop = bool(loop)
        if not os.path.exists(self.path):
            raise SourceError(f"video file {self.path!r} does not exist")
        if not os.path.isfile(self.path):
            raise SourceError(f"video source {self.path!r} is not a file")
        if os.path.getsize(self.path) == 0:
            raise SourceError(f"video file {self.path!r} is empty (0 bytes); the recording or copy did not "
                              f"finish — copy it again or choose another file")
        self._cap = self._open()
        native = self._cap.get(cv2.CAP_PROP_FPS)
        if fps is not None:
            self.fps = float(fps)
        elif native and math.isfinite(native) and 0 < native <= 1000:
            self.fps = float(native)
        else:
            log.warning("video file %s reports no frame rate; playing it at %g fps", self.path, DEFAULT_FPS)
            self.fps = DEFAULT_FPS
        self._pacer = Pacer(self.fps)
        self._next = 0  # index of the next frame the decoder will return
        # Decode the first frame now so a file that opens but holds no frames fails here, clearly.
        if not self._cap.grab():
            self._cap.release()
            raise SourceError(f"video file {self.path!r} contains no readable frames (corrupt or truncated?); "
                              f"re-encode it or choose another file")
        self._pending_grab = True

    def _open(self):
        cap = cv2.VideoCapture(self.path, cv2.CAP_ANY, decoder_params())
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open video file {self.path!r}: not a video OpenCV/FFmpeg can decode, "
                              f"or the file is corrupt/truncated; re-encode it (e.g. ffmpeg -i IN -c:v libx264 "
                              f"OUT.mp4) or choose another file")
        return cap

    def describe(self) -> str:
        mode = f"{self.fps:g} fps" if self.realtime else "as fast as possible"
        return f"video {self.path} ({mode}{', loop' if self.loop else ''})"

    def _grab(self) -> bool:
        if self._pending_grab:
            self._pending_grab = False
            return True
        return self._cap.grab()

    def _restart(self) -> bool:
        """At the end: reopen for another loop (True) or report the end (False)."""
        if not self.loop:
            return False
        self._cap.release()
        self._cap = self._open()
        self._next = 0
        self._pacer.reset()
        self.bump_epoch()
        return True

    def read(self) -> Frame | None:
        if self._closed:
            raise SourceError(f"{self.describe()} is closed")
        restarted = False
        while True:
            if self.realtime:
                due = self._pacer.due_index()
                while self._next < due:  # the consumer is late: drop frames to stay on the clock
                    if not self._grab():
                        break
                    self._next += 1
                    self.dropped += 1
                self._pacer.sleep_until(self._next)
            if not self._grab():
                if restarted or not self._restart():
                    return None
                restarted = True  # a file that yields nothing after reopening must not loop forever
                continue
            t_ns = time.monotonic_ns()
            index = self._next
            self._next += 1
            ok, img = self._cap.retrieve()
            frame = self._make_frame(img if ok else None, t_ns, index)
            if frame is not None:
                return frame

    def close(self) -> None:
        if not self._closed:
            self._cap.release()
        super().close()
