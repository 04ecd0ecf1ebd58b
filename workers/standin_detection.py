"""STAND-IN detection worker — replaced by the detection/inference issue (workers/detection.py).

It really reads the frames ring (newest frame, zero-copy) and writes a well-formed detections
record: one full-frame box per frame, so the rest of the pipeline can run end to end before
a person detector exists. Swap it out by config: ``workers.detection.module: workers.detection``.
"""
from __future__ import annotations

import time

from pipeline.records import stamp
from pipeline.worker import WROTE, Worker

STANDIN = "stand-in, replaced by the detection/inference issue"


class StandinDetection(Worker):
    input = "frames"
    policy = "latest"
    output = "detections"
    copy_input = False  # only the header is needed; never copy the pixels
    description = STANDIN

    def process(self, item):
        t0 = time.monotonic_ns()
        frame = item.record
        height, width = int(frame["height"]), int(frame["width"])
        rec = self.out.begin()
        if rec is None:
            return None
        rec["frame_id"] = frame["frame_id"]
        rec["t_capture_ns"] = frame["t_capture_ns"]
        rec["source_epoch"] = frame["source_epoch"]
        rec["stamps_ns"] = frame["stamps_ns"]
        rec["frame_slot"] = item.slot
        rec["frame_seq"] = item.seq
        rec["frame_height"] = height
        rec["frame_width"] = width
        if not self.input_valid(item):
            # The frame slot was overwritten while we read its header: drop, never pass torn data.
            self.out.abort()
            self.drops += 1
            return None
        rec["count"] = 1
        rec["n_found"] = 1
        rec["boxes"][0] = (0.0, 0.0, float(width), float(height))
        rec["scores"][0] = 1.0
        rec["track_ids"][0] = 0
        stamp(rec, "detect_start", t0)
        stamp(rec, "detect_end", time.monotonic_ns())
        return WROTE if self.out.commit() is not None else None

    def info(self) -> dict:
        return {"description": STANDIN, "detector": "full-frame box"}
