"""Image folder / glob / single image source: each image shown for one frame at a chosen fps."""
from __future__ import annotations

import glob
import logging
import os
import time

import cv2

from pipeline.sources.base import Frame, Pacer, Source, SourceError

log = logging.getLogger(__name__)

DEFAULT_FPS = 10.0


def _list_files(spec: str) -> list[str]:
    if os.path.isdir(spec):
        entries = [os.path.join(spec, e) for e in os.listdir(spec)]
    elif os.path.isfile(spec):
        entries = [spec]
    else:
        entries = glob.glob(spec)
    return sorted(e for e in entries if os.path.isfile(e))


class ImageSource(Source):
    kind = "images"
    is_live = False

    def __init__(self, spec: str, fps: float = DEFAULT_FPS, realtime: bool = True, loop: bool = False):
        super().__init__()
        self.spec = str(spec)
        self.fps = float(fps)
        self.realtime = bool(realtime)
        self.loop = bool(loop)
        self._pacer = Pacer(self.fps)
        self._files = _list_files(self.spec)
        if not self._files:
            raise SourceError(f"image source {self.spec!r} matches no files (give a folder, an image, "
                              f"or a glob such as 'frames/*.png')")
        self._bad: set[str] = set()
        self._pos = 0
        self._count = 0
        self._last_file: str | None = None
        # Find the first readable image now, so a folder with none fails at open.
        for i, path in enumerate(self._files):
            img = self._load(path)
            if img is not None:
                self._pos = i
                self._first = img
                break
        else:
            raise SourceError(f"image source {self.spec!r}: none of its {len(self._files)} file(s) is a "
                              f"readable image (OpenCV formats: jpg, png, bmp, tiff, webp, ...)")

    def _load(self, path: str):
        if path in self._bad:
            return None
        img = cv2.imread(path, cv2.IMREAD_UNCHANGED)  # keep 16-bit/alpha; normalised in _make_frame
        if img is None:
            self._bad.add(path)
            log.warning("skipping %s: not a readable image", path)
        return img

    def describe(self) -> str:
        return f"images {self.spec} ({len(self._files)} files, {self.fps:g} fps{', loop' if self.loop else ''})"

    def read(self) -> Frame | None:
        if self._closed:
            raise SourceError(f"{self.describe()} is closed")
        misses = 0
        while True:
            if self._pos >= len(self._files):
                if not self.loop or len(self._bad) >= len(self._files):
                    return None
                self._pos = 0
            path = self._files[self._pos]
            img = self._first if self._first is not None else self._load(path)
            self._first = None
            self._pos += 1
            if img is None:
                misses += 1
                if misses > len(self._files):
                    return None
                continue
            if self.realtime:
                self._pacer.sleep_until(self._count)
            t_ns = time.monotonic_ns()
            # Every new photo is a scene cut for trackers and smoothers.
            cut = self._last_file is not None and path != self._last_file
            frame = self._make_frame(img, t_ns, self._count, cut=cut)
            self._count += 1
            if frame is not None:
                self._last_file = path
                return frame
