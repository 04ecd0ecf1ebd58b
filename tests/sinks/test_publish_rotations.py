"""Rotation helpers: round trips over the whole angle range, including near 0 and pi."""
import numpy as np
import pytest

from pipeline.pose import rotations as rot
from pipeline.pose.skeleton import DEFAULT_REST_JOINTS, forward_kinematics, project


def _random_aa(rng, n, max_angle=np.pi):
    axis = rng.normal(size=(n, 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    return axis * rng.uniform(0, max_angle, size=(n, 1))


def test_axis_angle_rotmat_round_trip_including_edges():
    rng = np.random.default_rng(0)
    aa = _random_aa(rng, 500, np.pi - 1e-6)
    edge = np.array([[0, 0, 0], [1e-9, 0, 0], [0, 1e-5, 0], [np.pi - 1e-7, 0, 0],
                     [0, 0, np.pi - 1e-7], [2.0, 1.0, -1.5]])
    aa = np.concatenate([aa, edge])
    R = rot.axis_angle_to_rotmat(aa)
    assert np.allclose(R @ np.swapaxes(R, 1, 2), np.eye(3), atol=1e-12)
    back = rot.rotmat_to_axis_angle(R)
    assert np.allclose(rot.axis_angle_to_rotmat(back), R, atol=1e-9)
    assert np.allclose(back[:-3], aa[:-3], atol=1e-6)


def test_rotmat_quat_and_sign_continuity():
    rng = np.random.default_rng(1)
    q = rot.normalize_quat(rng.normal(size=(200, 4)))
    R = rot.quat_to_rotmat(q)
    q2 = rot.rotmat_to_quat(R)
    assert np.allclose(np.abs(np.sum(q * q2, axis=1)), 1.0, atol=1e-10)
    # A rotation about X sweeping through pi: w changes sign in canonical form, not here.
    angles = np.linspace(2.8, 3.5, 50)
    qs = rot.rotmat_to_quat(rot.axis_angle_to_rotmat(np.outer(angles, [1, 0, 0])))
    cont = rot.sign_continuous(qs)
    assert np.all(np.sum(cont[1:] * cont[:-1], axis=1) > 0.99)


@pytest.mark.parametrize("order", rot.EULER_ORDERS)
def test_euler_round_trip(order):
    rng = np.random.default_rng(2)
    R = rot.axis_angle_to_rotmat(_random_aa(rng, 300))
    e = rot.rotmat_to_euler(R, order)
    assert np.allclose(rot.euler_to_rotmat(e, order), R, atol=1e-9)
    # Known value: 30 degrees about Z only.
    Rz = rot.axis_angle_to_rotmat([0, 0, np.pi / 6])
    assert np.allclose(rot.rotmat_to_euler(Rz, order), [np.pi / 6, 0, 0] if order == "ZXY" else [0, 0, np.pi / 6])


def test_euler_gimbal_lock_still_round_trips():
    for order in rot.EULER_ORDERS:
        e = np.array([0.3, np.pi / 2, 0.4])
        R = rot.euler_to_rotmat(e, order)
        assert np.allclose(rot.euler_to_rotmat(rot.rotmat_to_euler(R, order), order), R, atol=1e-7)


def test_forward_kinematics_rest_and_projection():
    pos, glob = forward_kinematics(np.zeros(3), np.zeros(69), transl=[0, 0, 5])
    assert np.allclose(pos, DEFAULT_REST_JOINTS + [0, 0, 5])
    assert np.allclose(glob, np.eye(3))
    # Bend the right elbow (joint 19 -> body_pose index 18) 90 degrees about y: the wrist
    # moves from pointing along -x to pointing along +z/-z, the elbow stays put.
    bp = np.zeros(69)
    bp[18 * 3 + 1] = np.pi / 2
    pos2, _ = forward_kinematics(np.zeros(3), bp)
    assert np.allclose(pos2[19], DEFAULT_REST_JOINTS[19])
    forearm = pos2[21] - pos2[19]
    assert abs(forearm[0]) < 1e-6 and abs(forearm[2]) > 0.2
    uv = project(pos, 640, 480)
    assert np.all(np.isfinite(uv))
    assert np.allclose(project([[0, 0, 3]], 640, 480), [[320, 240]])
