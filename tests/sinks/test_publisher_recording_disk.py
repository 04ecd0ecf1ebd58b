"""The publisher keeps its rate while the recording sink's disk hangs and fails (issue 22 item
15): the real Publisher worker and RecordingSink in-process with real rings; the disk is
os.fsync made to hang 0.2 s and fail with ENOSPC. Writing in send(), as the sink once did,
would hold the publisher 0.2 s per chunk of 10 frames (<= 50 frames/s)."""
from __future__ import annotations

import errno
import time

import numpy as np
import pytest

from pipeline.runtime.records import poses_dtype
from pipeline.runtime.ring import ReadItem
from pipeline.runtime.worker import WROTE
from pipeline.sinks import recording as rec_mod
from pipeline.sinks.recording import load_recording


@pytest.fixture
def publisher(tmp_path):
    from publisher_harness import InProcessPublisher

    harness = InProcessPublisher({"recording": {"path": str(tmp_path / "rec.npz"), "chunk_frames": 10,
                                                "retry_initial": 0.05, "retry_max": 0.2, "close_timeout": 2.0}})
    harness.pub.setup()
    yield harness.pub
    harness.close()


def _publish(pub, first, n):
    """Publish n one-person records; returns frames per second."""
    rec = np.zeros((), poses_dtype(2))
    rec["count"] = 1
    rec["track_ids"][:] = [0, -1]
    rec["transl"][0, 2] = 3.0
    t0 = time.perf_counter()
    for fid in range(first, first + n):
        rec["frame_id"] = fid
        rec["t_capture_ns"] = time.monotonic_ns()
        assert pub.process(ReadItem(seq=2 * (fid + 1), slot=0, record=rec.copy())) is WROTE
    return n / (time.perf_counter() - t0)


def test_publisher_keeps_its_rate_while_the_recording_disk_fails(publisher, monkeypatch, tmp_path):
    healthy = _publish(publisher, 0, 200)
    sink = next(s for s in publisher.sinks if s.name == "recording")
    assert sink.wait_written(10)

    def dying_disk(fd):
        time.sleep(0.2)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rec_mod.os, "fsync", dying_disk)
    failing = _publish(publisher, 200, 200)
    print(f"\npublisher: {healthy:.0f} frames/s with a healthy disk, {failing:.0f} frames/s while the disk "
          f"hangs 0.2 s and fails on every write (ratio {failing / healthy:.2f}); sink {sink.stats()}")
    assert failing > 0.3 * healthy and failing > 100, (healthy, failing)
    deadline = time.monotonic() + 5
    while sink.stats()["write_errors"] < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sink.stats()["write_errors"] >= 1     # the disk really failed meanwhile
    monkeypatch.undo()                 # the disk recovers: nothing waiting is lost
    publisher.stop()
    rec = load_recording(tmp_path / "rec.npz")
    assert rec.complete and len(rec) == 400 - sink.stats()["dropped"]
