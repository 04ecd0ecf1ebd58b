"""Real people for the detection benchmarks, cut from the photos that ship inside ultralytics.

`GROUND_TRUTH` holds hand-drawn boxes (visible extent, photo pixels) of the six people in
`bus.jpg` and `zidane.jpg`. `make_people_video` writes a 1080p clip with exactly N of them
(full-height cut-outs side by side over a blurred copy of the bus photo, swaying slowly), so a
real detector has N real people to find in every frame; N = 1 is the man on the left of
bus.jpg.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

GROUND_TRUTH = {
    "bus.jpg": [(48, 398, 245, 902), (221, 405, 344, 857), (669, 392, 809, 877), (0, 550, 63, 873)],
    # Zidane's pointing arm runs from his shoulder across the front of the man on the right to
    # the fingertip at x = 1151: it is his visible extent (sessions 8-10 ended his box at 711,
    # before the arm, and counted the boxes that held it as misfits)
    "zidane.jpg": [(123, 197, 1152, 712), (747, 41, 1141, 712)],
}
# the people pasted into the clip, in order: whole bodies first; Zidane without the arm that
# crosses the other man (a cut-out of it would paste half of him too)
CUTOUTS = [("bus.jpg", GROUND_TRUTH["bus.jpg"][0]), ("bus.jpg", GROUND_TRUTH["bus.jpg"][1]),
           ("bus.jpg", GROUND_TRUTH["bus.jpg"][2]), ("zidane.jpg", GROUND_TRUTH["zidane.jpg"][1]),
           ("zidane.jpg", (123, 197, 711, 712))]


def people_boxes(persons: int, width: int = 1920, height: int = 1080, t: float = 0.0):
    """Where `make_people_video` puts each person at time t (seconds): (N, 4) pixel boxes."""
    from pipeline.sources.sample import PHOTOS, load_photos
    photos = dict(zip(PHOTOS, load_photos()))
    return np.array([b for _, b in _placed(photos, persons, width, height, t)], np.float32)


def _placed(photos, persons, width, height, t):
    if not 1 <= persons <= len(CUTOUTS):
        raise SystemExit(f"the people clip has 1..{len(CUTOUTS)} persons, not {persons}")
    slot = width / persons
    out = []
    for i, (name, (x1, y1, x2, y2)) in enumerate(CUTOUTS[:persons]):
        crop = photos[name][y1:y2, x1:x2]
        s = min(0.85 * height / crop.shape[0], 0.9 * slot / crop.shape[1])
        w, h = int(crop.shape[1] * s), int(crop.shape[0] * s)
        cx = slot * (i + 0.5) + 0.04 * slot * np.sin(2 * np.pi * (0.25 * t + i / persons))
        left = int(np.clip(cx - w / 2, 0, width - w))
        top = int(height * 0.95) - h
        out.append((crop, (left, top, left + w, top + h)))
    return out


def make_people_video(path: Path, persons: int, width: int = 1920, height: int = 1080, frames: int = 120,
                      fps: float = 30.0, codec: str = "mp4v") -> Path:
    import cv2

    from pipeline.sources.sample import PHOTOS, load_photos
    if path.exists():
        return path
    photos = dict(zip(PHOTOS, load_photos()))
    # the street above everybody's heads in bus.jpg (facades, the bus roof): no people in it
    background = cv2.GaussianBlur(cv2.resize(photos["bus.jpg"][:380], (width, height)), (0, 0), 6)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, (width, height))
    if not writer.isOpened():
        raise SystemExit(f"cannot write {path} with codec {codec}")
    for f in range(frames):
        img = background.copy()
        for crop, (x1, y1, x2, y2) in _placed(photos, persons, width, height, f / fps):
            img[y1:y2, x1:x2] = cv2.resize(crop, (x2 - x1, y2 - y1), interpolation=cv2.INTER_AREA)
        writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    writer.release()
    return path
