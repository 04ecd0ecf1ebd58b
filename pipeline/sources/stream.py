"""RTSP/RTMP/HTTP stream source via OpenCV's FFmpeg backend, with timeouts and reconnect backoff."""
from __future__ import annotations

import logging
import re
import time
from typing import Callable

import cv2

from pipeline.sources.base import Frame, Source, SourceError, decoder_params

log = logging.getLogger(__name__)

SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "rtmps://", "http://", "https://")


def redact(url: str) -> str:
    """The URL without its password, for logs and error messages."""
    return re.sub(r"(://[^/:@]+):[^/@]*@", r"\1:***@", url)


class StreamSource(Source):
    kind = "stream"
    is_live = True

    def __init__(self, url: str, open_timeout: float = 5.0, read_timeout: float = 5.0, retries: int = 5,
                 backoff: float = 0.5, max_backoff: float = 8.0,
                 capture_factory: Callable[[str], object] | None = None):
        super().__init__()
        if not url.lower().startswith(SCHEMES):
            raise SourceError(f"stream URL {redact(url)!r} must start with one of {', '.join(SCHEMES)}")
        self.url = url
        self.open_timeout = float(open_timeout)
        self.read_timeout = float(read_timeout)
        self.retries = max(int(retries), 1)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self._factory = capture_factory or self._ffmpeg_capture
        self._count = 0
        self.reconnects = 0
        self._cap = self._connect(first=True)
        got = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(got) if got and 0 < got <= 1000 else None

    def _ffmpeg_capture(self, url: str):
        # The timeouts make a dead server or a stalled stream fail a call instead of blocking forever.
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.open_timeout * 1000),
                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.read_timeout * 1000), *decoder_params()]
        return cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)

    def _connect(self, first: bool = False):
        delay = self.backoff
        for attempt in range(1, self.retries + 1):
            cap = self._factory(self.url)
            if cap.isOpened():
                if not first:
                    log.info("%s: reconnected (attempt %d)", self.describe(), attempt)
                return cap
            cap.release()
            if attempt < self.retries:
                log.warning("%s: cannot connect (attempt %d/%d), retrying in %.1f s",
                            self.describe(), attempt, self.retries, delay)
                time.sleep(delay)
                delay = min(delay * 2, self.max_backoff)
        what = "connect to" if first else "reconnect to"
        raise SourceError(f"could not {what} stream {redact(self.url)} after {self.retries} attempts "
                          f"(open timeout {self.open_timeout:g} s): check the URL, that the server is "
                          f"running and reachable, and any firewall")

    def describe(self) -> str:
        return f"stream {redact(self.url)}"

    def read(self) -> Frame | None:
        if self._closed:
            raise SourceError(f"{self.describe()} is closed")
        while True:
            t_start = time.monotonic()
            ok, frame = self._read_capture(self._cap)
            if ok:
                if frame is not None:
                    return frame
                continue
            stalled = time.monotonic() - t_start >= self.read_timeout * 0.9
            log.warning("%s: %s; reconnecting", self.describe(),
                        f"no frame for {self.read_timeout:g} s (stalled)" if stalled else "read failed")
            self._cap.release()
            self._cap = self._connect()
            self.reconnects += 1
            self.bump_epoch()  # frames after a reconnect do not continue the old motion

    def close(self) -> None:
        if not self._closed:
            self._cap.release()
        super().close()
