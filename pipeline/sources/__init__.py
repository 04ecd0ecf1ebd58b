"""Capture sources (architecture.md §5 capture, §8): webcam, video file, image folder/glob, stream URL, sample.

    src = open_source("clip.mp4", loop=True)      # or 0, "0", "frames/*.png", "rtsp://...", "sample"
    while (frame := src.read()) is not None:       # Frame: rgb (H,W,3) uint8, t_capture_ns, index, source_epoch
        ...
    src.close()

Each kind lives in its own module and is imported only when used (they import cv2).
Options are passed through to the kind's constructor; an option the kind does not take
is an error that names the allowed options.

May import: numpy, OpenCV. Sources know nothing of rings or workers: the capture worker
copies what `read()` returns into the frames ring.
"""
from __future__ import annotations

import inspect
import os

from pipeline.sources.base import Frame, Source, SourceError, to_rgb

__all__ = ["Frame", "Source", "SourceError", "open_source", "to_rgb", "source_kind"]

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm", ".jp2")
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "rtmps://", "http://", "https://")


def source_kind(spec: str | int) -> str:
    """Which kind of source a spec names: webcam, sample, stream, images or video."""
    if isinstance(spec, bool):
        raise SourceError(f"source must be a camera index, a path, a URL or 'sample', got {spec!r}")
    if isinstance(spec, int):
        return "webcam"
    if not isinstance(spec, str) or not spec.strip():
        raise SourceError(f"source must be a camera index, a path, a URL or 'sample', got {spec!r}")
    s = spec.strip()
    if s.isdigit():
        return "webcam"
    if s == "sample":
        return "sample"
    if s.lower().startswith(STREAM_SCHEMES):
        return "stream"
    if "://" in s:
        raise SourceError(f"unsupported URL scheme in {s!r}; use one of {', '.join(STREAM_SCHEMES)}")
    if os.path.isdir(s) or any(c in s for c in "*?["):
        return "images"
    if not os.path.exists(s):
        raise SourceError(f"source {s!r} is not a camera index, 'sample', a URL, or an existing "
                          f"file/folder (no such file)")
    return "images" if s.lower().endswith(IMAGE_EXTS) else "video"


def _classes():
    from pipeline.sources.images import ImageSource
    from pipeline.sources.sample import SampleSource
    from pipeline.sources.stream import StreamSource
    from pipeline.sources.video import VideoFileSource
    from pipeline.sources.webcam import WebcamSource
    return {"webcam": WebcamSource, "video": VideoFileSource, "images": ImageSource,
            "stream": StreamSource, "sample": SampleSource}


def open_source(spec: str | int, **opts) -> Source:
    """Open the source a spec names, with kind-specific options (see each kind's constructor)."""
    kind = source_kind(spec)
    cls = _classes()[kind]
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "capture_factory")
               and p not in ("index", "path", "spec", "url")]
    unknown = sorted(set(opts) - set(allowed) - {"capture_factory"})
    if unknown:
        raise SourceError(f"{kind} source does not take option(s) {', '.join(unknown)}; "
                          f"allowed: {', '.join(allowed)}")
    if kind == "webcam":
        return cls(int(spec), **opts)
    if kind == "sample":
        return cls(**opts)
    return cls(str(spec).strip(), **opts)
