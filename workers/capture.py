"""Capture worker (architecture.md §5): a source's RGB frames into the frames ring, in place.

The source comes from the top-level ``source:`` config (spec + options, see
`pipeline.sources.open_source`). Each frame is copied once, straight into the ring slot,
with a strictly increasing ``frame_id`` (continuing after a restart from the ring's last
id), ``t_capture_ns``, ``source_epoch`` and the ``capture``/``frame_written`` stamps.

Resolution changes: the ring is sized once (``rings.frames.max_height/max_width``); a frame
larger than that is downscaled (aspect kept) to fit, and every record carries its own
height/width, so a source may change resolution mid-stream without re-creating the ring.
That is also how a live source swap (`pipeline swap capture source=...`) changes resolution.

A new generation (restart or swap) starts its `source_epoch` one above the newest frame's,
and, because the old generation may keep writing until the hand-over, takes its frame ids
from the ring's last id at the moment it first holds the writer token.

End of a file or folder: ``source.at_end: loop`` reopens it (``source_epoch`` + 1),
``stop`` asks the supervisor to stop the pipeline.

Live (newest frame wins): capture never waits. The ring passes over slots that a later stage
still holds (architecture.md §2); when every slot is held the frame is read and dropped
(`no_free_slot`), so a camera never queues stale frames. A paced recorded source (the sample,
a file or folder played in real time) renders or decodes a frame only shortly before detection
will look (on demand, `demand_after_take` False): its pacer skips to the frame due then, so the
picture is the same and no CPU goes into frames nobody reads. Lossless (`source.every_frame`): capture
reads the next frame only once a slot is free, so every frame of the file is processed once.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from pipeline.runtime.records import stamp
from pipeline.runtime.worker import WROTE, Worker, WorkerError


@dataclass
class Params:
    max_fps: float = 0.0   # 0 = as delivered by the source; else drop frames above this rate


class Capture(Worker):
    input = None
    output = "frames"
    demand_after_take = False  # on demand (paced sources): a fresh frame for when detection looks
    Params = Params
    cpu_role = "decoder"

    def setup(self) -> None:
        from pipeline.sources import SourceError, open_source

        src = self.ctx.shared.get("source") or {}
        self.spec = src.get("spec", "sample")
        self.options = dict(src.get("options") or {})
        self.lossless = bool(self.ctx.shared.get("every_frame"))
        self.stream = int(self.ctx.shared.get("stream") or 0)  # several sources: this one's index
        self.at_end = src.get("at_end", "loop")
        if self.at_end == "auto":  # resolved by the config; a hand-made spec may leave it
            self.at_end = "stop" if self.lossless else "loop"
        self._open_source, self._source_error = open_source, SourceError
        if self.at_end == "loop" and "loop" not in self.options and _takes_loop(self.spec):
            # The source loops itself, keeping its pacing clock (reopening it would restart
            # the clock: a one-image folder would then replay at full speed).
            self.options["loop"] = True
        try:
            self.source = open_source(self.spec, **self.options)
        except SourceError as exc:
            raise WorkerError(str(exc)) from exc
        ring = self.out.ring
        _, self.max_h, self.max_w, _ = (None, *ring.dtype["pixels"].shape)
        self.frame_id = max(ring.last_frame_id + 1, 0)
        self.epoch = _newest_epoch(ring) + 1
        self.downscaled = 0
        self._first_write = True
        self._min_interval_ns = int(1e9 / self.params.max_fps) if self.params.max_fps > 0 else 0
        self._last_ns = 0
        self.no_free_slot = 0
        # Frames the source passed over by design (a paced source renders only what detection reads):
        # reported as `skipped`, like a `latest` reader's, not as lost.
        self._skipped_before = 0
        # Cameras and streams must be drained; a paced file or the sample can skip ahead instead.
        self.on_demand = (not self.source.is_live and bool(getattr(self.source, "realtime", False))
                          and not self.lossless)
        self.log.info("capturing from %s", self.source.describe())

    def process(self, _item):
        # The slot is opened before the read so the source converts BGR->RGB straight into it
        # (one pass over the pixels); a frame that is not published leaves the slot unpublished.
        rec = self.out.begin(timeout=0.1 if self.lossless else 0.0)
        if rec is None and self.out.full:
            if self.lossless:
                return None  # the slowest stage is behind: wait, read nothing, lose nothing
            self.no_free_slot += 1  # every slot held by a later stage: this frame is dropped
            self.drops += 1
            self.extras["no_free_slot"] = self.no_free_slot
        self.source.into = rec["pixels"] if rec is not None else None
        try:
            frame = self.source.read()
        except self._source_error as exc:
            self._abort(rec)
            raise WorkerError(str(exc)) from exc
        except BaseException:
            self._abort(rec)
            raise
        finally:
            self.source.into = None
        self.skipped = self._skipped_before + int(getattr(self.source, "dropped", 0))
        if frame is None:
            self._abort(rec)
            return self._at_end()
        rgb = frame.rgb
        if rgb is None or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
            self._abort(rec)
            self.drops += 1  # zero-size or odd-shaped frame: skip it, never crash
            return None
        t_capture = int(frame.t_capture_ns) or time.monotonic_ns()
        if self._min_interval_ns and t_capture - self._last_ns < self._min_interval_ns:
            self._abort(rec)
            self.drops += 1
            return None
        self._last_ns = t_capture
        if rec is None:
            return None  # not (or no longer) the owner of the frames ring: a swap is handing over
        self.frame_id = max(self.frame_id, self.out.ring.last_frame_id + 1)
        h, w = rgb.shape[:2]
        # bounds check only: rgb is either a view into the slot or a fresh array
        if not np.may_share_memory(rgb, rec["pixels"]):  # did not fit in place (larger than the ring)
            if h > self.max_h or w > self.max_w:
                rgb = self._fit(rgb)
                h, w = rgb.shape[:2]
            rec["pixels"][:h, :w] = rgb
        rec["height"], rec["width"] = h, w
        rec["frame_id"] = self.frame_id
        rec["stream"] = self.stream
        rec["t_capture_ns"] = t_capture
        epoch = self.epoch + int(getattr(frame, "source_epoch", 0) or 0)
        if self._first_write:
            # Like the frame ids: the old generation may have moved on (looped) between our setup
            # and the hand-over, so our source starts one epoch above the newest frame written.
            last = _newest_epoch(self.out.ring)
            if epoch <= last:
                self.epoch += last + 1 - epoch
                epoch = last + 1
        rec["source_epoch"] = epoch
        rec["stamps_ns"] = 0
        stamp(rec, "capture", t_capture)
        stamp(rec, "frame_written", time.monotonic_ns())
        self.frame_id += 1
        if self.out.commit() is None:
            return None
        self._first_write = False
        return WROTE

    def _abort(self, rec) -> None:
        if rec is not None:
            self.out.abort()

    def _fit(self, rgb):
        import cv2

        scale = min(self.max_h / rgb.shape[0], self.max_w / rgb.shape[1])
        size = (max(1, int(rgb.shape[1] * scale)), max(1, int(rgb.shape[0] * scale)))
        self.downscaled += 1
        self.extras["downscaled"] = self.downscaled
        return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)

    def _at_end(self):
        if self.at_end == "loop" and not self.source.is_live:
            self._skipped_before = self.skipped  # a reopened source counts from 0 again
            self.source.close()
            try:
                self.source = self._open_source(self.spec, **self.options)
            except self._source_error as exc:
                raise WorkerError(str(exc)) from exc
            self.epoch += 1
            return None
        self.finish(f"end of source {self.source.describe()}")
        return None

    def _stream_name(self) -> str:
        names = self.ctx.shared.get("streams") or ["main"]
        i = getattr(self, "stream", 0)
        return str(names[i]) if 0 <= i < len(names) else str(i)

    def stop(self) -> None:
        source = getattr(self, "source", None)
        if source is not None:
            source.close()

    def info(self) -> dict:
        source = getattr(self, "source", None)
        return {"source": source.describe() if source is not None else str(self.spec),
                "stream": self._stream_name(),
                "fps": getattr(source, "fps", None), "live": getattr(source, "is_live", None),
                "max_size": f"{self.max_w}x{self.max_h}"}


def _newest_epoch(ring) -> int:
    """The source epoch of the newest frame in the ring, -1 when it has none."""
    newest = ring.newest_seq()
    return int(ring.slot_record(ring.slot_of(newest))["source_epoch"]) if newest else -1


def _takes_loop(spec) -> bool:
    import inspect

    from pipeline.sources import _classes, source_kind
    try:
        cls = _classes()[source_kind(spec)]
    except Exception:  # noqa: BLE001 - an unknown spec fails clearly in open_source
        return False
    return "loop" in inspect.signature(cls.__init__).parameters
