"""Inverse kinematics from BlazePose landmarks to SMPL rotations (pipeline/pose/landmark_ik.py) on
synthetic landmark sets with known poses: exact recovery, joint limits, bad input."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.pose import landmark_ik as ik
from pipeline.pose.rotations import axis_angle_to_rotmat, rotation_angle_between, rotmat_to_axis_angle
from pipeline.pose.skeleton import DEFAULT_REST_JOINTS, forward_kinematics, forward_kinematics_batch
from pipeline.testing.landmarks import global_rotations, landmarks_from_pose, random_poses

LIMB_LMS = [ik.LIMB_LANDMARKS[j] for j in ik.LIMB_JOINTS]
MEASURED = [0, 1, 2, 4, 5, 7, 8, 9, 15, 16, 17, 18, 19, 20, 21]   # joints the landmarks pin down


def straight_skeleton():
    """The template with limbs exactly along the axes and a straight spine: no rest bend for the
    hinges to correct, and the shoulders' midpoint right above the pelvis."""
    J = DEFAULT_REST_JOINTS.copy()
    J[:, 2] = 0.0
    J[[0, 3, 6, 9, 12, 15], 0] = 0.0
    J[[2, 14, 17], 0] = -J[[1, 13, 16], 0]
    J[[2, 14, 17], 1] = J[[1, 13, 16], 1]
    for chain, direction in (((1, 4, 7), (0, -1, 0)), ((2, 5, 8), (0, -1, 0)),
                             ((16, 18, 20, 22), (1, 0, 0)), ((17, 19, 21, 23), (-1, 0, 0))):
        for a, b in zip(chain, chain[1:]):
            J[b] = J[a] + np.array(direction) * np.linalg.norm(DEFAULT_REST_JOINTS[b] - DEFAULT_REST_JOINTS[a])
    J[10], J[11] = J[7] + (0, -0.06, 0.12), J[8] + (0, -0.06, 0.12)
    return J


def angles_deg(rotmats_a, rest_a, rotmats_b, rest_b):
    return np.degrees(rotation_angle_between(global_rotations(rotmats_a, rest_a), global_rotations(rotmats_b, rest_b)))


def test_forward_kinematics_of_the_result_lands_on_the_limb_landmarks():
    truth = random_poses(64, seed=1)
    world = landmarks_from_pose(truth)
    res = ik.solve(world)
    err = np.linalg.norm(res.joints[:, ik.LIMB_JOINTS] - world[:, LIMB_LMS], axis=-1)
    assert err.max() < 1e-3, err.max(axis=0)
    # the skeleton it reports is the one those joints come from
    _, pos = forward_kinematics_batch(res.rotmats, res.rest_joints)
    np.testing.assert_allclose(pos - res.rest_joints[:, :1] + res.pelvis[:, None], res.joints, atol=1e-9)


def test_recovers_every_measured_rotation_exactly_on_a_straight_skeleton():
    J = straight_skeleton()
    truth = random_poses(64, seed=2, rest_joints=J, spine_bend=False)
    res = ik.solve(landmarks_from_pose(truth, J), rest_joints=J)
    err = angles_deg(truth, J, res.rotmats, res.rest_joints)[:, MEASURED]
    assert err.max() < 0.5, err.max(axis=0)


def test_on_the_template_twists_are_close_and_a_bent_spine_is_shared():
    truth = random_poses(64, seed=3)   # spine bent too: the landmarks cannot tell pelvis from spine
    res = ik.solve(landmarks_from_pose(truth))
    err = angles_deg(truth, None, res.rotmats, res.rest_joints)
    limbs = err[:, [1, 2, 4, 5, 7, 8, 16, 17, 18, 19, 20, 21]]
    assert limbs.mean() < 4.0 and np.percentile(limbs, 95) < 12.0, limbs.mean(axis=0)
    assert err[:, [0, 9, 15]].mean() < 8.0 and err[:, [0, 9, 15]].max() < 25.0


def test_results_are_rotations_and_persons_do_not_mix():
    world = landmarks_from_pose(random_poses(5, seed=4))
    res = ik.solve(world)
    R = res.rotmats
    np.testing.assert_allclose(R @ np.swapaxes(R, -1, -2), np.broadcast_to(np.eye(3), R.shape), atol=1e-9)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-9)
    for i in range(5):
        alone = ik.solve(world[i:i + 1])
        np.testing.assert_allclose(alone.rotmats[0], R[i], atol=1e-12)
        np.testing.assert_allclose(alone.joints[0], res.joints[i], atol=1e-12)


def test_facing_the_camera_is_the_smpl_camera_convention():
    """A T-pose facing the camera: SMPL's root is 180 degrees about x (docs/architecture.md §6)."""
    world = landmarks_from_pose(random_poses(1, spread=0.0))
    res = ik.solve(world)
    np.testing.assert_allclose(res.rotmats[0, 0], np.diag([1.0, -1.0, -1.0]), atol=1e-3)
    assert res.joints[0, 15, 1] < res.joints[0, 0, 1] < res.joints[0, 7, 1]   # head up (y down), feet down
    assert res.joints[0, 16, 0] > 0 > res.joints[0, 17, 0]   # the person's left is the image's right


def test_knees_and_elbows_bend_only_the_anatomical_way():
    J = straight_skeleton()
    truth = random_poses(32, seed=5, rest_joints=J, spine_bend=False)
    res = ik.solve(landmarks_from_pose(truth, J), rest_joints=J)
    aa = rotmat_to_axis_angle(res.rotmats)
    for knee in (4, 5):   # flexion: positive about the body's x axis
        assert np.all(aa[:, knee, 0] > np.radians(20)), aa[:, knee]
    assert np.all(aa[:, 18, 1] < -np.radians(20)) and np.all(aa[:, 19, 1] > np.radians(20))


def test_twists_beyond_the_limits_are_clamped():
    J = straight_skeleton()
    truth = random_poses(1, seed=6, rest_joints=J, spine_bend=False)
    thigh = (J[4] - J[1]) / np.linalg.norm(J[4] - J[1])
    truth[0, 1] = truth[0, 1] @ axis_angle_to_rotmat(thigh * np.radians(120))   # 120 deg of hip twist
    res = ik.solve(landmarks_from_pose(truth, J), rest_joints=J)
    R_hip = res.rotmats[0, 1]
    swing_twist = np.swapaxes(axis_angle_to_rotmat(np.zeros(3)), 0, 1) @ R_hip
    # the twist left about the thigh is the limit, not 120 degrees
    twist = np.degrees(np.abs(rotmat_to_axis_angle(swing_twist) @ thigh))
    assert twist < ik.TWIST_LIMITS_DEG[1][1] + 15
    err = np.linalg.norm(res.joints[0, ik.LIMB_JOINTS] - landmarks_from_pose(truth, J)[0, LIMB_LMS], axis=-1)
    assert err.max() < 1e-3   # a clamped twist does not move any joint


def test_invisible_landmarks_mark_their_joints_uncertain_and_change_nothing_else():
    world = landmarks_from_pose(random_poses(1, seed=7))
    conf = np.ones((1, 33))
    conf[0, [ik.L_ELBOW, ik.L_WRIST]] = 0.0
    res = ik.solve(world, conf)
    unc = res.uncertainty[0]
    assert unc[16] == 1.0 and unc[18] == 1.0 and unc[20] == 1.0
    assert np.all(unc[[0, 1, 2, 4, 5, 17, 19, 21]] == 0.0)
    assert np.all(unc[list(ik.LEAF_JOINTS)] == 1.0)
    assert np.all(np.isfinite(res.rotmats))


@pytest.mark.parametrize("case", ["all_zero", "collinear", "nan", "inf", "huge"])
def test_degenerate_landmarks_give_finite_rotations_and_say_so(case):
    rng = np.random.default_rng(0)
    world = landmarks_from_pose(random_poses(3, seed=8))
    if case == "all_zero":
        world[1] = 0.0
    elif case == "collinear":   # everything on one vertical line
        world[1] = np.outer(rng.uniform(-0.8, 0.8, 33), [0.0, 1.0, 0.0])
    elif case == "nan":
        world[1, [ik.L_KNEE, ik.NOSE, ik.R_SHOULDER]] = np.nan
    elif case == "inf":
        world[1, ik.L_ANKLE] = np.inf
    else:
        world[1] *= 1e12
    res = ik.solve(world)
    for field in (res.rotmats, res.joints, res.pelvis, res.uncertainty):
        assert np.all(np.isfinite(field)), case
    np.testing.assert_allclose(np.linalg.det(res.rotmats), 1.0, atol=1e-6)
    assert np.all((res.uncertainty >= 0) & (res.uncertainty <= 1))
    if case == "all_zero":
        assert res.uncertainty[1].min() == 1.0
    if case == "collinear":   # no frame for pelvis, spine and head; limbs straight up and down
        assert res.uncertainty[1, [0, 3, 6, 9, 12, 15]].min() == 1.0
    if case == "nan":
        assert res.uncertainty[1, [4, 12, 15, 17]].min() == 1.0
    # the other persons of the batch are untouched
    clean = ik.solve(world[[0, 2]])
    np.testing.assert_allclose(res.rotmats[[0, 2]], clean.rotmats, atol=1e-12)


def test_swing_handles_opposite_and_equal_vectors():
    a = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    b = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.6, 0.0, 0.8]])
    R = ik.swing(a, b)
    np.testing.assert_allclose(np.einsum("nij,nj->ni", R, a), b, atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-12)


def test_fraction_of_a_rotation_near_a_half_turn():
    axis = np.array([0.0, 0.6, 0.8])
    for deg in (10.0, 170.0, 179.9):
        R = axis_angle_to_rotmat(axis * np.radians(deg))
        third = ik.fraction_of(R, 1.0 / 3.0)
        np.testing.assert_allclose(third @ third @ third, R, atol=1e-9)


def test_forward_kinematics_batch_matches_the_single_person_one():
    rot = random_poses(3, seed=9)
    aa = rotmat_to_axis_angle(rot)
    _, pos = forward_kinematics_batch(rot, DEFAULT_REST_JOINTS)
    for i in range(3):
        single, _ = forward_kinematics(aa[i, 0], aa[i, 1:].reshape(69))
        np.testing.assert_allclose(pos[i], single, atol=1e-9)
