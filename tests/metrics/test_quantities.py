import math

import numpy as np
import pytest

from pipeline.metrics.quantities import (FrameMeasurer, axis_angle_to_matrix, pose_change, primary_index,
                                         shape_variance, translation_change_mm)


def rot_z(theta):
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def test_rodrigues_matches_known_rotations():
    for theta in (0.0, 1e-9, 0.3, math.pi / 2, 3.0):
        np.testing.assert_allclose(axis_angle_to_matrix(np.array([0, 0, theta])), rot_z(theta), atol=1e-12)
    rng = np.random.default_rng(0)
    r = axis_angle_to_matrix(rng.normal(size=(50, 3)))
    np.testing.assert_allclose(r @ np.swapaxes(r, -1, -2), np.broadcast_to(np.eye(3), r.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-12)


def test_fixed_rotation_step_gives_exact_pose_change(make_frame, make_person):
    theta = 0.1  # per frame, about z, on body joint 5 only
    m = FrameMeasurer()
    values = []
    for t in range(6):
        bp = np.zeros(69)
        bp[5 * 3 + 2] = 0.2 + theta * t
        values.append(m.measure(make_frame(t, [make_person(body_pose=bp)]), arrival_ns=0).pose_change)
    # ‖Rz(a+θ) − Rz(a)‖_F² = 2·tr(I) − 2·tr(Rz(θ)) = 6 − 2(1 + 2cosθ) = 8 sin²(θ/2)
    expected = 2 * math.sqrt(2) * abs(math.sin(theta / 2))
    assert math.isnan(values[0])
    # float32 storage of body_pose limits the agreement to ~1e-7 relative
    np.testing.assert_allclose(values[1:], expected, rtol=1e-5)


def test_pose_change_sums_over_all_23_joints():
    theta = 0.25
    prev = np.zeros(69)
    cur = np.tile([theta, 0, 0], 23)  # every joint turns by θ about x
    assert pose_change(prev, cur) == pytest.approx(23 * 2 * math.sqrt(2) * math.sin(theta / 2), rel=1e-12)


def test_known_translation_step_gives_exact_mm(make_frame, make_person):
    m = FrameMeasurer()
    out = [m.measure(make_frame(t, [make_person(transl=(0.003 * t, -0.004 * t, 3.0))]), 0) for t in range(4)]
    assert math.isnan(out[0].translation_change_mm)
    for q in out[1:]:
        assert q.translation_change_mm == pytest.approx(5.0, abs=1e-3)  # 3-4-5 mm step
    assert translation_change_mm([0, 0, 1], [0, 0, 1.25]) == pytest.approx(250.0)


def test_joint_change_mm_from_joints_and_nan_without(make_frame, make_person):
    j0 = np.zeros((24, 3))
    j1 = j0 + np.array([0.0, 0.01, 0.0])  # every joint moves 10 mm
    m = FrameMeasurer()
    m.measure(make_frame(0, [make_person(joints=j0)]), 0)
    assert m.measure(make_frame(1, [make_person(joints=j1)]), 0).joint_change_mm == pytest.approx(10.0, abs=1e-4)
    m2 = FrameMeasurer()
    m2.measure(make_frame(0, [make_person()]), 0)
    assert math.isnan(m2.measure(make_frame(1, [make_person()]), 0).joint_change_mm)


def test_vertex_change_when_vertices_present(make_frame, make_person):
    a, b = make_person(), make_person()
    a.vertices = np.zeros((6890, 3))
    b.vertices = np.full((6890, 3), 0.002)
    m = FrameMeasurer()
    m.measure(make_frame(0, [a]), 0)
    assert m.measure(make_frame(1, [b]), 0).vertex_change_mm == pytest.approx(2 * math.sqrt(3), rel=1e-9)


def test_shape_variance_is_population_variance():
    betas = np.arange(10, dtype=float)
    assert shape_variance(betas) == pytest.approx(8.25)


def test_change_only_between_same_tracked_person(make_frame, make_person):
    m = FrameMeasurer()
    m.measure(make_frame(0, [make_person(track_id=3, transl=(0, 0, 3))]), 0)
    # a different tracked person appears (largest box): no change against track 3
    q = m.measure(make_frame(1, [make_person(track_id=7, transl=(1, 0, 3))]), 0)
    assert math.isnan(q.translation_change_mm) and math.isnan(q.pose_change)
    # track 7 again -> change against frame 1's track 7
    q = m.measure(make_frame(2, [make_person(track_id=7, transl=(1, 0.002, 3))]), 0)
    assert q.translation_change_mm == pytest.approx(2.0, abs=1e-3)


def test_primary_is_largest_box_first_on_ties(make_person):
    small = make_person(box=(0, 0, 10, 10))
    big = make_person(box=(0, 0, 50, 50))
    big2 = make_person(box=(10, 10, 60, 60))
    assert primary_index([small, big, big2]) == 1
    assert primary_index([]) is None


def test_chain_breaks_on_gap_epoch_and_empty_frame(make_frame, make_person):
    m = FrameMeasurer()
    m.measure(make_frame(0, [make_person()]), 0)
    assert math.isnan(m.measure(make_frame(1, [make_person()]), 0, missed=2).pose_change)
    assert m.measure(make_frame(2, [make_person()]), 0).pose_change == 0.0
    assert math.isnan(m.measure(make_frame(3, [make_person()], epoch=1), 0).pose_change)
    q = m.measure(make_frame(4, []), 0)
    assert q.detected == 0.0 and math.isnan(q.shape_variance)
    assert math.isnan(m.measure(make_frame(5, [make_person()]), 0).pose_change)


def test_bad_inputs_rejected():
    with pytest.raises(ValueError, match="69"):
        pose_change(np.zeros(69), np.zeros(66))
    with pytest.raises(ValueError, match="3 values"):
        translation_change_mm([0, 0], [0, 0, 0])
    with pytest.raises(ValueError):
        shape_variance([])
