import numpy as np
import pytest

from pipeline.detectors import IouTracker, iou_matrix


def test_iou_matrix():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    np.testing.assert_allclose(iou_matrix(a, b), [[1.0, 50 / 150, 0.0]])
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 3)


def test_ids_follow_moving_boxes():
    tr = IouTracker(iou_threshold=0.3)
    a = np.array([100, 100, 200, 300], float)
    b = np.array([400, 100, 500, 300], float)
    first = tr.update([a, b])
    assert list(first) == [0, 1]
    for step in range(1, 30):
        # a walks right, b walks down, 6 px per frame; their order in the input swaps
        ids = tr.update([b + [0, 6 * step, 0, 6 * step], a + [6 * step, 0, 6 * step, 0]])
        assert list(ids) == [1, 0]


def test_new_person_gets_new_id():
    tr = IouTracker()
    tr.update([[0, 0, 50, 100]])
    ids = tr.update([[2, 0, 52, 100], [300, 0, 350, 100]])
    assert list(ids) == [0, 1]


def test_ids_expire_after_max_age_and_are_never_reused():
    tr = IouTracker(max_age=2)
    box = [[0, 0, 50, 100]]
    assert tr.update(box)[0] == 0
    tr.update([])
    tr.update([])
    assert tr.update(box)[0] == 0        # unseen 2 frames: still alive
    for _ in range(3):
        tr.update([])
    assert tr.active_ids == []
    assert tr.update(box)[0] == 1        # expired: a new id, not 0 again


def test_reset_drops_tracks_but_ids_keep_increasing():
    tr = IouTracker()
    tr.update([[0, 0, 50, 100]])
    tr.reset()
    assert tr.update([[0, 0, 50, 100]])[0] == 1


def test_one_track_matches_one_box():
    tr = IouTracker(iou_threshold=0.1)
    tr.update([[0, 0, 100, 100]])
    ids = tr.update([[0, 0, 100, 100], [10, 10, 110, 110]])
    assert sorted(ids) == [0, 1] and ids[0] == 0


@pytest.mark.parametrize("kw", [dict(iou_threshold=0), dict(iou_threshold=1.5), dict(max_age=-1)])
def test_bad_settings(kw):
    with pytest.raises(ValueError):
        IouTracker(**kw)
