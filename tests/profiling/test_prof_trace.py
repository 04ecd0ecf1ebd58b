"""Chrome trace from per-frame stamps: valid JSON, stage tracks never overlap, frames nest properly."""
from __future__ import annotations

import json
from collections import defaultdict

import numpy as np

from pipeline.profiling.trace import PHASES, TRACKS, FrameStamps, chrome_trace, write_chrome_trace
from pipeline.runtime.records import STAGES, poses_dtype


def pipelined_frames(n=30, period_ms=20.0, spans_ms=(1, 3, 8, 2, 35, 4)):
    """Frames arriving every period_ms whose life (54 ms) is longer than the period: they overlap."""
    frames = []
    for i in range(n):
        t = 5_000_000_000 + int(i * period_ms * 1e6)
        stamps = {"capture": t}
        for name, ms in zip(STAGES[1:], spans_ms):
            t += int(ms * 1e6)
            stamps[name] = t
        frames.append(FrameStamps(i, 1, stamps))
    return frames


def check_trace(trace):
    events = trace["traceEvents"]
    by_track = defaultdict(list)
    for e in events:
        if e["ph"] == "X":
            by_track[e["pid"]].append((e["ts"], e["ts"] + e["dur"]))
    assert set(by_track) == set(range(1, len(TRACKS) + 1))
    for spans in by_track.values():
        spans.sort()
        for (a0, a1), (b0, b1) in zip(spans, spans[1:]):
            assert a1 <= b0 + 1e-6, "spans on one track overlap"
            assert a0 <= a1
    per_frame = defaultdict(list)
    for e in events:
        if e["ph"] in "be":
            per_frame[e["id"]].append(e)
    for fid, evs in per_frame.items():
        stack = []
        outer = None
        for e in evs:  # emitted in order: begin of the frame, phases, end of the frame
            if e["ph"] == "b":
                if stack:
                    assert e["ts"] >= stack[-1][1]
                stack.append((e["name"], e["ts"]))
                outer = outer or (e["name"], e["ts"])
            else:
                name, ts = stack.pop()
                assert name == e["name"] and e["ts"] >= ts, f"{fid}: {name} not closed in order"
        assert not stack
        phases = [e for e in evs if e["ph"] == "b" and e["name"] != outer[0]]
        assert [p["name"] for p in phases] == [p[0] for p in PHASES]
        frame_end = [e for e in evs if e["ph"] == "e" and e["name"] == outer[0]][0]["ts"]
        for e in evs:
            assert outer[1] <= e["ts"] <= frame_end
    return per_frame


def test_trace_is_valid_json_with_nested_frames_and_clean_tracks(tmp_path):
    frames = pipelined_frames()
    path = tmp_path / "trace.json"
    assert write_chrome_trace(path, frames, {"inference": 1234}) == 30
    trace = json.loads(path.read_text())
    per_frame = check_trace(trace)
    assert len(per_frame) == 30
    names = {e["args"]["name"] for e in trace["traceEvents"] if e["ph"] == "M" and e["name"] == "process_name"}
    assert "inference (pid 1234)" in names
    # Frames overlap across processes: frame 1 is captured before frame 0 is published.
    f0 = [e for e in trace["traceEvents"] if e.get("id") == "frame0" and e["ph"] == "e"][-1]
    f1 = [e for e in trace["traceEvents"] if e.get("id") == "frame1" and e["ph"] == "b"][0]
    assert f1["ts"] < f0["ts"]


def test_a_slow_publisher_is_serialised_on_its_track():
    # publish takes longer than the frame period: raw spans would overlap on the publisher track
    check_trace(chrome_trace(pipelined_frames(spans_ms=(1, 1, 2, 1, 5, 40), period_ms=10)))


def test_incomplete_or_disordered_frames_are_skipped():
    frames = pipelined_frames(5)
    del frames[1].stamps_ns["detect_end"]
    frames[2].stamps_ns["publish"] = frames[2].stamps_ns["capture"] - 1
    trace = chrome_trace(frames)
    assert trace["otherData"] == {**trace["otherData"], "frames": 3, "skipped_frames": 2}
    check_trace(trace)
    assert chrome_trace([])["traceEvents"] == []


def test_from_ring_record():
    rec = np.zeros((), dtype=poses_dtype(2))
    rec["frame_id"], rec["generation"] = 7, 3
    rec["stamps_ns"][:] = np.arange(1, len(STAGES) + 1) * 1000
    rec["stamps_ns"][2] = 0
    f = FrameStamps.from_record(rec, overwritten_before=2)
    assert (f.frame_id, f.generation, f.overwritten_before) == (7, 3, 2)
    assert "detect_start" not in f.stamps_ns and f.stamps_ns["publish"] == 7000
    assert not f.complete()
