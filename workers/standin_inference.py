"""STAND-IN inference worker — replaced by the detection/inference issue (workers/inference.py).

It really reads the detections ring (newest record) and the frames-ring slot it refers to
(re-checking the slot's seq, as the real worker must before trusting a crop), and writes a
well-formed poses record: every detected person with a zero pose, mean-zero betas, flagged
``untrained`` and ``model = standin``. `delay_ms` makes it artificially slow for tests.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

from pipeline.records import stamp
from pipeline.worker import WROTE, SettingError, Worker

STANDIN = "stand-in, replaced by the detection/inference issue"


@dataclass
class Params:
    delay_ms: float = 0.0  # extra time per frame, to simulate a slow model


class StandinInference(Worker):
    input = "detections"
    policy = "latest"
    output = "poses"
    reads = ("frames",)
    Params = Params
    description = STANDIN

    def setup(self) -> None:
        if not math.isfinite(self.params.delay_ms) or self.params.delay_ms < 0:
            raise ValueError(f"workers.{self.name}.params.delay_ms = {self.params.delay_ms} — must be >= 0")
        self.frames = self.rings["frames"]

    def process(self, item):
        t0 = time.monotonic_ns()
        det = item.record
        slot, seq = int(det["frame_slot"]), int(det["frame_seq"])
        if not 0 <= slot < self.frames.slots or self.frames.slot_seq(slot) != seq:
            self.drops += 1  # the frame was overwritten before we got to it
            return None
        view = self.frames.slot_record(slot)
        height, width = int(view["height"]), int(view["width"])
        if self.frames.slot_seq(slot) != seq:
            self.drops += 1
            return None
        if self.params.delay_ms:
            time.sleep(self.params.delay_ms / 1000.0)
        rec = self.out.begin()
        if rec is None:
            return None
        rec[...] = 0
        count = int(det["count"])
        for key in ("frame_id", "t_capture_ns", "source_epoch", "stamps_ns", "n_found"):
            rec[key] = det[key]
        rec["frame_height"], rec["frame_width"] = height, width
        rec["count"] = count
        rec["untrained"] = 1
        rec["model"] = b"standin"
        rec["backend"] = b"none"
        rec["precision"] = b"fp32"
        rec["track_ids"][:count] = det["track_ids"][:count]
        rec["boxes"][:count] = det["boxes"][:count]
        rec["scores"][:count] = det["scores"][:count]
        rec["joint_uncertainty"][:count] = 1.0
        stamp(rec, "infer_start", t0)
        stamp(rec, "infer_end", time.monotonic_ns())
        return WROTE if self.out.commit() is not None else None

    def on_set(self, key, value):
        if key != "delay_ms":
            raise SettingError(f"{self.name} has one live setting, delay_ms (got {key!r})")
        # NaN/inf would pass `< 0` and then crash process() inside time.sleep (found by fuzzing).
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise SettingError(f"delay_ms = {value!r} — expected a finite number >= 0")
        self.params.delay_ms = float(value)
        return self.params.delay_ms

    def info(self) -> dict:
        return {"description": STANDIN, "model": "standin", "backend": "none", "untrained": True}
