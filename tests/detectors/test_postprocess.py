import numpy as np
import pytest

from pipeline.detectors import Detections, DetectorError, IouTracker, PostConfig, check_frame, postprocess


def boxes_of(*sizes, x0=0.0):
    """Square boxes of the given sides placed side by side."""
    out, x = [], x0
    for s in sizes:
        out.append([x, 10.0, x + s, 10.0 + s])
        x += s + 5
    return np.array(out, np.float32)


def test_largest_first_by_area():
    b = boxes_of(20, 80, 50)
    d = postprocess(b, [0.9, 0.5, 0.7], 500, 500, PostConfig())
    assert d.boxes.dtype == np.float32 and d.scores.dtype == np.float32 and d.track_ids.dtype == np.int32
    np.testing.assert_array_equal(d.boxes[:, 2] - d.boxes[:, 0], [80, 50, 20])
    np.testing.assert_allclose(d.scores, [0.5, 0.7, 0.9])
    assert (d.track_ids == -1).all()


def test_order_by_score():
    d = postprocess(boxes_of(20, 80, 50), [0.9, 0.5, 0.7], 500, 500, PostConfig(order="score"))
    np.testing.assert_allclose(d.scores, [0.9, 0.7, 0.5])


def test_max_persons_keeps_largest_and_reports_n_found():
    d = postprocess(boxes_of(30, 90, 60, 40, 70), np.ones(5), 500, 900, PostConfig(max_persons=2))
    assert len(d) == 2 and d.n_found == 5
    np.testing.assert_array_equal(d.boxes[:, 2] - d.boxes[:, 0], [90, 70])


def test_min_box_size_and_unusable_boxes_dropped():
    b = np.array([
        [0, 0, 10, 10],          # too small
        [0, 0, 100, 12],         # longer side 100: kept
        [50, 50, 40, 90],        # x2 < x1
        [np.nan, 0, 30, 30],     # not finite
        [600, 600, 700, 700],    # wholly outside a 500x500 frame
        [-40, -40, 60, 60],      # partly outside: kept as is (the crop zero-pads)
    ], np.float32)
    d = postprocess(b, np.ones(6), 500, 500, PostConfig(min_box_size=20))
    assert d.n_found == 2
    assert [-40, -40, 60, 60] in d.boxes.tolist()


def test_clip_option():
    b = np.array([[-40, -30, 560, 60]], np.float32)
    d = postprocess(b, [1], 500, 500, PostConfig(clip=True))
    np.testing.assert_array_equal(d.boxes[0], [0, 0, 500, 60])


def test_empty_input():
    d = postprocess(np.zeros((0, 4)), np.zeros(0), 100, 100, PostConfig())
    assert len(d) == 0 and d.n_found == 0 and d.boxes.shape == (0, 4)


def test_tracker_runs_before_cut_so_ids_follow_boxes():
    tr = IouTracker()
    b = boxes_of(30, 90, 60)
    d1 = postprocess(b, np.ones(3), 500, 500, PostConfig(max_persons=1), tracker=tr)
    d2 = postprocess(b + 2, np.ones(3), 500, 500, PostConfig(max_persons=1), tracker=tr)
    assert d1.track_ids[0] == d2.track_ids[0] == 1   # the 90 px box was the second one seen
    assert d2.n_found == 3


def test_backend_track_ids_are_kept():
    d = postprocess(boxes_of(30, 90), [1, 1], 500, 500, PostConfig(), track_ids=[7, 3])
    np.testing.assert_array_equal(d.track_ids, [3, 7])


@pytest.mark.parametrize("kw", [dict(max_persons=0), dict(max_persons=65), dict(min_box_size=-1),
                                dict(order="size")])
def test_bad_config_rejected(kw):
    with pytest.raises(DetectorError):
        PostConfig(**kw)


def test_detections_validates_lengths():
    with pytest.raises(ValueError):
        Detections(boxes=np.zeros((2, 4)), scores=np.zeros(1), track_ids=np.zeros(2), n_found=2)
    with pytest.raises(ValueError):
        Detections(boxes=np.zeros((2, 4)), scores=np.zeros(2), track_ids=np.zeros(2), n_found=1)


@pytest.mark.parametrize("frame", [
    np.zeros((10, 10), np.uint8), np.zeros((10, 10, 4), np.uint8), np.zeros((10, 10, 3), np.float32),
    np.zeros((0, 10, 3), np.uint8), [[1, 2, 3]],
])
def test_check_frame_rejects_bad_frames(frame):
    with pytest.raises(DetectorError):
        check_frame(frame)


def test_record_round_trip_and_cut():
    from pipeline.runtime.records import detections_dtype
    rec = np.zeros((), detections_dtype(2))
    d = postprocess(boxes_of(30, 90, 60), [0.1, 0.2, 0.3], 500, 500, PostConfig(), track_ids=[4, 5, 6])
    d.to_record(rec)
    assert rec["count"] == 2 and rec["n_found"] == 3
    back = Detections.from_record(rec)
    np.testing.assert_array_equal(back.boxes, d.boxes[:2])
    np.testing.assert_array_equal(back.track_ids, [5, 6])
    Detections().to_record(rec)
    assert rec["count"] == 0 and (rec["track_ids"] == -1).all() and not rec["boxes"].any()


try:
    from hypothesis import given, settings, strategies as st

    box = st.tuples(st.floats(-100, 700), st.floats(-100, 700), st.floats(0, 400), st.floats(0, 400))

    @settings(max_examples=200, deadline=None)
    @given(st.lists(box, max_size=20), st.integers(1, 6), st.sampled_from(["area", "score"]),
           st.floats(0, 50))
    def test_postprocess_invariants(raw, max_persons, order, min_size):
        b = np.array([[x, y, x + w, y + h] for x, y, w, h in raw], np.float32).reshape(-1, 4)
        scores = np.linspace(0.1, 0.9, len(b), dtype=np.float32)
        d = postprocess(b, scores, 480, 640, PostConfig(max_persons=max_persons, order=order,
                                                        min_box_size=min_size))
        assert len(d) <= max_persons and len(d) <= d.n_found <= len(b)
        assert len(d) == min(max_persons, d.n_found)
        key = ((d.boxes[:, 2] - d.boxes[:, 0]) * (d.boxes[:, 3] - d.boxes[:, 1])
               if order == "area" else d.scores)
        assert (np.diff(key) <= 0).all()
        side = np.maximum(d.boxes[:, 2] - d.boxes[:, 0], d.boxes[:, 3] - d.boxes[:, 1])
        assert (side >= min_size).all()
        for row in d.boxes:
            assert any(np.array_equal(row, r) for r in b)
except ImportError:  # hypothesis is a test extra; the example tests above still run
    pass
