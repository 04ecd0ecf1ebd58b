"""The publisher hands variant B's frames (A/B test, ring `poses_b`) to the sinks that draw
variants, in-process with real rings: before the ring exists nothing happens, once the
supervisor creates it B's newest frame reaches the viewer as variant "B", the published ring
and the ordinary send() path stay A's, and B's skeletons are cleared when B stops."""
from __future__ import annotations

import time

import numpy as np
import pytest

import workers.publisher as publisher_module
from pipeline.runtime.records import poses_dtype
from pipeline.runtime.ring import ReadItem, Ring
from pipeline.runtime.worker import WROTE


class VariantSink:
    name = "variants"          # draws A/B variants like the viewer, without a server
    wants_image = False

    def __init__(self):
        self.a, self.b = [], []

    def open(self):
        pass

    def close(self):
        pass

    def stats(self):
        return {}

    def send(self, frame, image=None):
        self.a.append(frame)

    def send_variant(self, frame, image=None, variant="A"):
        assert variant == "B"
        self.b.append(frame)


@pytest.fixture
def setup(monkeypatch):
    from publisher_harness import InProcessPublisher

    sink = VariantSink()
    import pipeline.sinks
    monkeypatch.setattr(pipeline.sinks, "build_sink", lambda name, options: sink)
    monkeypatch.setattr(publisher_module, "B_ATTACH_EVERY_S", 0.0)
    monkeypatch.setattr(publisher_module, "B_IDLE_S", 0.2)
    harness = InProcessPublisher({"variants": {}})
    pub = harness.pub
    pub.setup()
    created = []

    def make_b():
        ring = Ring.create("poses_b", poses_dtype(2), 8, harness.run)
        created.append(ring)
        ring.set_owner(1)
        return ring.writer(1)

    yield pub, sink, make_b
    harness.close(created)


def record(frame_id, count, transl_z=5.0):
    rec = np.zeros((), poses_dtype(2))
    rec["frame_id"] = frame_id
    rec["t_capture_ns"] = time.monotonic_ns()
    rec["count"] = count
    rec["track_ids"][:] = -1
    rec["track_ids"][:count] = np.arange(count)
    rec["transl"][:count, 2] = transl_z
    return rec


def item(rec):
    return ReadItem(seq=2 * (int(rec["frame_id"]) + 1), slot=0, record=rec)


def test_variant_b_is_drawn_beside_a_and_cleared_when_it_stops(setup):
    pub, sink, make_b = setup
    assert pub.process(item(record(1, 1))) is WROTE
    assert len(sink.a) == 1 and sink.b == []           # no A/B test: nothing for B

    b = make_b()                                       # `pipeline ab start` creates poses_b
    assert pub.process(item(record(2, 1))) is WROTE    # the publisher finds and attaches to it
    rec = b.begin()
    rec[...] = record(3, 2, transl_z=7.0)
    b.commit()
    assert pub.process(item(record(3, 1))) is WROTE
    assert len(sink.b) == 1 and sink.b[0].frame_id == 3 and len(sink.b[0].persons) == 2
    assert sink.b[0].persons[0].transl[2] == pytest.approx(7.0)
    assert len(sink.a) == 3 and len(sink.a[-1].persons) == 1    # A's stream is untouched
    assert pub.variant_b_frames == 1

    # Nothing new from B: B's last frame is not sent again ...
    assert pub.process(item(record(4, 1))) is WROTE and len(sink.b) == 1
    # ... and after B_IDLE_S and B_IDLE_FRAMES A frames without B frames, an empty B frame
    # clears its skeletons, once.
    time.sleep(0.25)
    for fid in range(5, 5 + publisher_module.B_IDLE_FRAMES - 2):
        assert pub.process(item(record(fid, 1))) is WROTE
    assert len(sink.b) == 1, "one slow B frame at a low frame rate is not B stopping"
    assert pub.process(item(record(10, 1))) is WROTE
    assert len(sink.b) == 2 and sink.b[-1].persons == []
    assert pub.process(item(record(11, 1))) is WROTE and len(sink.b) == 2
