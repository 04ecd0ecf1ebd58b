"""Built-in `sample` source (architecture.md §8): a looping clip with real people, made from nothing downloaded.

The two photos bundled inside the installed ultralytics package (`assets/bus.jpg`,
`assets/zidane.jpg`) are shown one after the other, each for `scene_seconds`, with a slow
pan and zoom so detectors see people moving; the switch between them is a scene cut and
bumps `source_epoch`. Frame k is a pure function of k, rendered on demand, so the clip
costs no memory beyond the two photos.
"""
from __future__ import annotations

import importlib.util
import math
import os
import time

import cv2
import numpy as np

from pipeline.sources.base import Frame, Pacer, Source, SourceError

PHOTOS = ("bus.jpg", "zidane.jpg")


def assets_dir() -> str:
    spec = importlib.util.find_spec("ultralytics")
    if spec is None or not spec.origin:
        raise SourceError("the sample source needs the photos bundled with the ultralytics package, which "
                          "is not installed: pip install 'ultralytics>=8.3,<9'")
    return os.path.join(os.path.dirname(spec.origin), "assets")


def load_photos() -> list[np.ndarray]:
    folder = assets_dir()
    photos = []
    for name in PHOTOS:
        path = os.path.join(folder, name)
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        if img is None:
            raise SourceError(f"the sample source cannot read {path}: the ultralytics installation is "
                              f"incomplete; reinstall it (pip install --force-reinstall ultralytics)")
        photos.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))  # the one BGR->RGB conversion
    return photos


class SampleSource(Source):
    kind = "sample"
    is_live = False

    def __init__(self, width: int = 1280, height: int = 720, fps: float = 30.0, scene_seconds: float = 4.0,
                 realtime: bool = True, loop: bool = True):
        super().__init__()
        if not (16 <= int(width) <= 7680 and 16 <= int(height) <= 4320):
            raise SourceError(f"sample size must be within 16x16..7680x4320, got {width}x{height}")
        if not scene_seconds > 0:
            raise SourceError(f"sample scene_seconds must be > 0, got {scene_seconds}")
        self.width, self.height = int(width), int(height)
        self.fps = float(fps)
        self.realtime = bool(realtime)
        self.loop = bool(loop)
        self._pacer = Pacer(self.fps)
        self._photos = load_photos()
        self.scene_frames = max(int(round(scene_seconds * self.fps)), 1)
        self.clip_frames = self.scene_frames * len(self._photos)
        self._k = 0
        self._scene: int | None = None

    def describe(self) -> str:
        return f"sample clip {self.width}x{self.height} {self.fps:g} fps ({', '.join(PHOTOS)})"

    def render(self, k: int) -> np.ndarray:
        """Frame k of the clip (RGB). A slow zoom in and out plus a sideways sway."""
        scene, m = self.view(k)
        return cv2.warpAffine(self._photos[scene], m, (self.width, self.height), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))

    def view(self, k: int) -> tuple[int, np.ndarray]:
        """Which photo frame k shows (index into PHOTOS) and the 2x3 affine map from photo pixels
        to frame pixels (tools/detect_quality.py moves the photos' person boxes with it)."""
        scene, j = divmod(k % self.clip_frames, self.scene_frames)
        img = self._photos[scene]
        h, w = img.shape[:2]
        u = j / self.scene_frames
        fit = min(self.width / w, self.height / h)
        s = fit * (1.0 + 0.3 * math.sin(math.pi * u))
        view_w = self.width / s
        sway_x = max((w - view_w) / 2, 0.06 * w)
        cx = w / 2 + sway_x * math.sin(2 * math.pi * u)
        cy = h / 2 + 0.04 * h * math.sin(4 * math.pi * u)
        m = np.array([[s, 0, self.width / 2 - s * cx], [0, s, self.height / 2 - s * cy]], dtype=np.float64)
        return scene, m

    def read(self) -> Frame | None:
        if self._closed:
            raise SourceError(f"{self.describe()} is closed")
        if self.realtime:
            due = self._pacer.due_index()
            if due > self._k:  # late consumer: skip to the frame due now
                self.dropped += due - self._k
                self._k = due
            self._pacer.sleep_until(self._k)
        k = self._k
        if not self.loop and k >= self.clip_frames:
            return None
        scene = k // self.scene_frames  # counts on through loops, so the wrap is a cut too
        cut = self._scene is not None and scene != self._scene
        self._scene = scene
        t_ns = time.monotonic_ns()
        rgb = self.render(k)
        self._k += 1
        return self._make_frame(rgb, t_ns, k % self.clip_frames, is_bgr=False, cut=cut)
