"""What every capture source shares: the Frame it yields, its interface, pixel normalisation, pacing.

Odd frames (documented policy): a 16-bit frame is scaled to 8 bits (top byte); a
single-channel frame is replicated to RGB; a BGRA frame loses its alpha channel. A frame
that is empty (0x0 / None), of another dtype (float, int32, ...) or another channel count
is rejected with a warning and the source moves on to the next frame; after
`MAX_BAD_FRAMES` rejected frames in a row the source raises SourceError.
"""
from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)

MAX_BAD_FRAMES = 30


class SourceError(RuntimeError):
    """A source cannot be opened or stopped working; the message says what to do."""


@dataclass
class Frame:
    rgb: np.ndarray = field(repr=False)  # uint8 (H, W, 3), C-contiguous, RGB
    t_capture_ns: int                    # time.monotonic_ns() at grab
    index: int                           # position in the source (file frame number, image number, ...)
    source_epoch: int                    # bumps at every discontinuity: loop, scene cut, reconnect, new size

    @property
    def height(self) -> int:
        return self.rgb.shape[0]

    @property
    def width(self) -> int:
        return self.rgb.shape[1]


def to_rgb(img, is_bgr: bool = True, dst: np.ndarray | None = None) -> tuple[np.ndarray | None, str]:
    """Normalise a decoded image to uint8 RGB HxWx3 C-contiguous; (None, reason) when it cannot be.

    `dst` (optional uint8 (H,W,3) of the image's size; rows may be strided, e.g. the top-left
    corner of a ring slot): the RGB pixels are written there and `dst` is returned, so the
    colour conversion is the only pass over them."""
    import cv2

    if img is None or not isinstance(img, np.ndarray) or img.size == 0:
        return None, "empty frame (0x0)"
    if dst is not None and dst.shape != (img.shape[0], img.shape[1], 3):
        dst = None
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        return None, f"unsupported pixel type {img.dtype} (expected 8- or 16-bit integers)"
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        code = cv2.COLOR_GRAY2RGB
    elif img.ndim != 3 or img.shape[2] not in (3, 4):
        return None, f"unsupported frame shape {img.shape} (expected HxW, HxWx1, HxWx3 or HxWx4)"
    elif img.shape[2] == 4:
        code = cv2.COLOR_BGRA2RGB if is_bgr else cv2.COLOR_RGBA2RGB
    elif is_bgr:
        code = cv2.COLOR_BGR2RGB
    else:
        if dst is None:
            return np.ascontiguousarray(img), ""
        np.copyto(dst, img)
        return dst, ""
    if dst is None:
        return np.ascontiguousarray(cv2.cvtColor(img, code)), ""
    return cv2.cvtColor(img, code, dst=dst), ""


def decoder_params() -> list[int]:
    """OpenCV open-parameters that size FFmpeg's decoder thread pool from this worker's CPU budget
    (pipeline/runtime/cpu.py; by default FFmpeg starts one decoding thread per core)."""
    import cv2

    from pipeline.runtime.cpu import worker_threads

    threads = worker_threads()
    return [cv2.CAP_PROP_N_THREADS, threads] if threads else []


class Pacer:
    """Maps monotonic time to the frame index that should be showing at `fps`."""

    def __init__(self, fps: float):
        if not fps > 0:
            raise SourceError(f"playback fps must be > 0, got {fps}")
        self.period = 1.0 / fps
        self.t0: float | None = None

    def reset(self) -> None:
        self.t0 = None

    def due_index(self) -> int:
        """Index of the frame due now (starting the clock on first use)."""
        now = time.monotonic()
        if self.t0 is None:
            self.t0 = now
        return int((now - self.t0) / self.period)

    def sleep_until(self, index: int) -> None:
        if self.t0 is None:
            self.t0 = time.monotonic()
        delay = self.t0 + index * self.period - time.monotonic()
        if delay > 0:
            time.sleep(delay)


class Source(ABC):
    """A stream of RGB frames. `read()` returns None at the end of a finite source."""

    kind = "source"
    fps: float | None = None
    is_live = False

    def __init__(self) -> None:
        # Optional (H_max, W_max, 3) uint8 buffer set by the caller before read(): a frame that
        # fits is converted to RGB straight into its top-left corner (the capture worker points
        # it at the ring slot, so the frame is not copied a second time).
        self.into: np.ndarray | None = None
        self.source_epoch = 0
        self.dropped = 0        # frames skipped to keep real-time pace
        self.rejected = 0       # odd frames that could not be converted
        self._bad_in_row = 0
        self._last_shape: tuple[int, int] | None = None
        self._closed = False

    @abstractmethod
    def read(self) -> Frame | None:
        """The next frame, or None at the end of a file/folder (when not looping)."""

    @abstractmethod
    def describe(self) -> str:
        """One line for logs and `pipeline status`."""

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self):
        while True:
            frame = self.read()
            if frame is None:
                return
            yield frame

    def _read_capture(self, cap) -> tuple[bool, Frame | None]:
        """One grab + retrieve + RGB conversion from a live cv2.VideoCapture: (False, None) when
        the read failed, else (True, frame), frame None when the image was rejected."""
        ok = cap.grab()
        t_ns = time.monotonic_ns()  # the grab time, before decoding
        img = None
        if ok:
            ok, img = cap.retrieve()
        if not ok:
            return False, None
        frame = self._make_frame(img, t_ns, self._count)
        self._count += 1
        return True, frame

    def _dst_for(self, img) -> np.ndarray | None:
        into = self.into
        if into is None or not isinstance(img, np.ndarray) or img.ndim < 2:
            return None
        h, w = img.shape[:2]
        if h > into.shape[0] or w > into.shape[1] or h == 0 or w == 0:
            return None
        return into[:h, :w]

    def bump_epoch(self) -> None:
        self.source_epoch += 1

    def _make_frame(self, img, t_ns: int, index: int, is_bgr: bool = True, cut: bool = False) -> Frame | None:
        """Convert once to RGB; None (after a warning) for a rejected frame.

        The epoch bumps once when this frame starts a new scene (`cut`) or changes size.
        """
        rgb, why = to_rgb(img, is_bgr, dst=self._dst_for(img))
        if rgb is None:
            self.rejected += 1
            self._bad_in_row += 1
            log.warning("%s: frame %d rejected: %s", self.describe(), index, why)
            if self._bad_in_row >= MAX_BAD_FRAMES:
                raise SourceError(f"{self.describe()}: {self._bad_in_row} unusable frames in a row "
                                  f"(last: {why}); the source is not delivering 8/16-bit images — check the "
                                  f"camera/driver settings or the file's pixel format")
            return None
        self._bad_in_row = 0
        shape = rgb.shape[:2]
        resized = self._last_shape is not None and shape != self._last_shape
        if resized:
            log.info("%s: resolution changed %s -> %s", self.describe(), self._last_shape, shape)
        if resized or cut:
            self.bump_epoch()
        self._last_shape = shape
        return Frame(rgb=rgb, t_capture_ns=t_ns, index=index, source_epoch=self.source_epoch)
