"""Per-frame stage spans in the Chrome trace event format (Perfetto, chrome://tracing).

Two views of the same stamps (`pipeline.runtime.records.STAGES`, `time.monotonic_ns`, one clock for
every process of the host):

* one track per stage process (capture, detection, inference, publisher): complete events
  (``ph: X``) for the work each process did on each frame. A process handles one frame at a
  time, so these never overlap; the publisher has no start stamp, so its span starts when the
  frame became available to it (``infer_end``) or when it finished the previous frame,
  whichever is later.
* one async track per frame (``ph: b/e``, id = frame id): the frame's whole life
  (capture -> publish) with its phases nested inside, queue waits included, so a user sees
  frame N being inferred while frame N+1 is detected.

Frames whose stamps are missing or out of order are left out and counted.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from pipeline.runtime.records import STAGES

# (phase name, from stamp, to stamp, track) in the order of a frame's life.
PHASES = (
    ("capture", "capture", "frame_written", "capture"),
    ("queue_detect", "frame_written", "detect_start", None),
    ("detect", "detect_start", "detect_end", "detection"),
    ("queue_infer", "detect_end", "infer_start", None),
    ("infer", "infer_start", "infer_end", "inference"),
    ("publish", "infer_end", "publish", "publisher"),
)
TRACKS = ("capture", "detection", "inference", "publisher")
_FRAMES_PID = 100  # the async frame track's process id in the trace (stage tracks use 1..4)


@dataclass
class FrameStamps:
    frame_id: int
    generation: int
    stamps_ns: dict[str, int] = field(default_factory=dict)   # stage -> monotonic ns (missing = not reached)
    overwritten_before: int = 0                               # published records lost before this one

    @classmethod
    def from_record(cls, rec, overwritten_before: int = 0) -> "FrameStamps":
        stamps = rec["stamps_ns"]
        return cls(int(rec["frame_id"]), int(rec["generation"]),
                   {name: int(stamps[i]) for i, name in enumerate(STAGES) if int(stamps[i])},
                   int(overwritten_before))

    def complete(self) -> bool:
        """Every stage stamped, in order."""
        values = [self.stamps_ns.get(s, 0) for s in STAGES]
        return all(values) and all(a <= b for a, b in zip(values, values[1:]))


def chrome_trace(frames: Iterable[FrameStamps], pids: dict[str, int] | None = None) -> dict:
    """The trace as a dict (``json.dump`` it); `pids` maps track names to real worker pids for labels."""
    frames = sorted(frames, key=lambda f: f.stamps_ns.get("capture", 0))
    good = [f for f in frames if f.complete()]
    events: list[dict] = []
    if not good:
        return {"traceEvents": events, "displayTimeUnit": "ms",
                "otherData": {"frames": 0, "skipped_frames": len(frames)}}
    t0 = min(f.stamps_ns["capture"] for f in good)
    pids = pids or {}

    def us(ns: int) -> float:
        return round((ns - t0) / 1000.0, 3)

    for i, track in enumerate(TRACKS, start=1):
        label = f"{track} (pid {pids[track]})" if pids.get(track) else track
        events.append({"ph": "M", "name": "process_name", "pid": i, "tid": 0, "args": {"name": label}})
        events.append({"ph": "M", "name": "process_sort_index", "pid": i, "tid": 0, "args": {"sort_index": i}})
    events.append({"ph": "M", "name": "process_name", "pid": _FRAMES_PID, "tid": 0, "args": {"name": "frames"}})
    events.append({"ph": "M", "name": "process_sort_index", "pid": _FRAMES_PID, "tid": 0,
                   "args": {"sort_index": len(TRACKS) + 1}})

    track_end = {t: t0 for t in TRACKS}  # end of the last span per track: spans there never overlap
    for f in good:
        s = f.stamps_ns
        args = {"frame_id": f.frame_id, "generation": f.generation}
        for name, a, b, track in PHASES:
            if track is None:
                continue
            start = max(s[a], track_end[track])
            end = max(s[b], start)
            track_end[track] = end
            events.append({"ph": "X", "name": name, "cat": "stage", "pid": TRACKS.index(track) + 1, "tid": 0,
                           "ts": us(start), "dur": round((end - start) / 1000.0, 3), "args": args})
        fid = f"frame{f.frame_id}"
        events.append({"ph": "b", "name": f"frame {f.frame_id}", "cat": "frame", "id": fid, "pid": _FRAMES_PID,
                       "tid": 0, "ts": us(s["capture"]),
                       "args": {**args, "latency_ms": (s["publish"] - s["capture"]) / 1e6}})
        for name, a, b, _ in PHASES:
            events.append({"ph": "b", "name": name, "cat": "frame", "id": fid, "pid": _FRAMES_PID, "tid": 0,
                           "ts": us(s[a])})
            events.append({"ph": "e", "name": name, "cat": "frame", "id": fid, "pid": _FRAMES_PID, "tid": 0,
                           "ts": us(s[b])})
        events.append({"ph": "e", "name": f"frame {f.frame_id}", "cat": "frame", "id": fid, "pid": _FRAMES_PID,
                       "tid": 0, "ts": us(s["publish"])})
    return {"traceEvents": events, "displayTimeUnit": "ms",
            "otherData": {"frames": len(good), "skipped_frames": len(frames) - len(good),
                          "clock": "time.monotonic_ns, microseconds from the first capture"}}


def write_chrome_trace(path: Path, frames: Iterable[FrameStamps], pids: dict[str, int] | None = None) -> int:
    """Write the trace; returns the number of frames in it."""
    trace = chrome_trace(frames, pids)
    Path(path).write_text(json.dumps(trace))
    return trace["otherData"]["frames"]
