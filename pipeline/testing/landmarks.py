"""Synthetic BlazePose landmark sets with a known SMPL pose, for the inverse-kinematics tests and
`tools/bench_landmarks.py`.

`random_poses` draws anatomically plausible local rotations (knees and elbows bent the
anatomical way, twists inside the solver's limits, the spine and neck rotation shared the way
the solver shares it); `landmarks_from_pose` poses a skeleton and places the 33 landmarks on it
(limb joints exactly on SMPL's joints, ears/nose on the head, knuckles on the hand, heel and
toe on the foot), hip-centred, in the camera-oriented frame of MediaPipe's world landmarks.
"""
from __future__ import annotations

import numpy as np

from pipeline.pose import landmark_ik as ik
from pipeline.pose.rotations import axis_angle_to_rotmat
from pipeline.pose.skeleton import DEFAULT_REST_JOINTS, NUM_JOINTS, PARENTS, forward_kinematics_batch

_X, _Y, _Z = np.eye(3)
CAMERA_FROM_BODY = np.diag([1.0, -1.0, -1.0])   # a person facing the camera (docs/architecture.md §6)


def _rot(axis, deg):
    axis = np.asarray(axis, np.float64)
    return axis_angle_to_rotmat(axis / np.linalg.norm(axis, axis=-1, keepdims=True) * np.radians(deg)[..., None])


def _unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def random_poses(n: int, seed: int = 0, rest_joints=None, spread: float = 1.0, spine_bend: bool = True) -> np.ndarray:
    """(n, 24, 3, 3) local rotations; `spread` scales every angle range (0: a T-pose facing the
    camera). spine_bend=False turns the spine about its own axis only, which is the one spine
    motion the landmarks pin down exactly (a bend could be the pelvis's or the spine's)."""
    rng = np.random.default_rng(seed)
    J = DEFAULT_REST_JOINTS if rest_joints is None else np.asarray(rest_joints, np.float64)
    u = lambda lo, hi: rng.uniform(lo, hi, n) * spread  # noqa: E731
    R = np.broadcast_to(np.eye(3), (n, NUM_JOINTS, 3, 3)).copy()
    R[:, 0] = CAMERA_FROM_BODY @ _rot(_Y, u(-70, 70)) @ _rot(_X, u(-15, 30)) @ _rot(_Z, u(-10, 10))
    spine = _rot(_Y, u(-10, 10))
    if spine_bend:
        spine = _rot(_X, u(-5, 10)) @ spine @ _rot(_Z, u(-5, 5))
    for j in (3, 6, 9):
        R[:, j] = spine
    neck = _rot(_Y, u(-20, 20)) @ _rot(_X, u(-10, 15))
    R[:, 12] = R[:, 15] = neck
    for side, (hip, knee, ankle, sh, elbow, wrist) in enumerate(((1, 4, 7, 16, 18, 20), (2, 5, 8, 17, 19, 21))):
        sign = 1.0 if side == 0 else -1.0
        thigh0 = _unit(J[knee] - J[hip])
        R[:, hip] = _rot(_X, u(-80, 20)) @ _rot(_Z, sign * u(-5, 30)) @ _rot(thigh0, u(-30, 30))
        R[:, knee] = _rot(_X, u(25, 110))
        foot0 = _unit(J[ankle + 3] - J[ankle])
        R[:, ankle] = _rot(_X, u(-20, 20)) @ _rot(foot0, u(-20, 20))
        upper0 = _unit(J[elbow] - J[sh])
        R[:, sh] = _rot(_Z, sign * u(-70, 10)) @ _rot(_Y, u(-30, 30)) @ _rot(upper0, u(-40, 40))
        fore0 = _unit(J[wrist] - J[elbow])
        pronation = u(-80, 80)
        R[:, elbow] = _rot(-sign * _Y, u(25, 110)) @ _rot(fore0, pronation / 2)
        R[:, wrist] = _rot(_unit(J[wrist + 2] - J[wrist]), pronation / 2)
    return R


def landmarks_from_pose(rotmats, rest_joints=None) -> np.ndarray:
    """(n, 33, 3) world landmarks (metres, hip midpoint at the origin) of posed skeletons."""
    J = DEFAULT_REST_JOINTS if rest_joints is None else np.asarray(rest_joints, np.float64)
    G, pos = forward_kinematics_batch(rotmats, J)
    n = pos.shape[0]
    L = np.zeros((n, ik.NUM_LANDMARKS, 3))
    for j, lm in ik.LIMB_LANDMARKS.items():
        L[:, lm] = pos[:, j]
    mv = lambda R, v: np.einsum("nij,...j->ni", R, v)  # noqa: E731
    # head: ears either side of the head joint, nose in front along the solver's rest face direction
    ear_mid = pos[:, 15]
    L[:, ik.L_EAR] = ear_mid + mv(G[:, 15], 0.075 * _X)
    L[:, ik.R_EAR] = ear_mid - mv(G[:, 15], 0.075 * _X)
    L[:, ik.NOSE] = ear_mid + mv(G[:, 15], 0.10 * ik.REST_FACE_FORWARD)
    for k in (1, 2, 3, 4, 5, 6, 9, 10):   # eyes and mouth near the nose (unused by the solver)
        L[:, k] = L[:, ik.NOSE] + mv(G[:, 15], 0.01 * k * _Y)
    # hands: knuckle midpoint on SMPL's hand joint, index - pinky along the hand's rest +z
    for wrist, hand, idx, pinky, thumb in ((20, 22, ik.L_INDEX, ik.L_PINKY, 21), (21, 23, ik.R_INDEX, ik.R_PINKY, 22)):
        L[:, idx] = pos[:, hand] + mv(G[:, wrist], 0.025 * _Z)
        L[:, pinky] = pos[:, hand] - mv(G[:, wrist], 0.025 * _Z)
        L[:, thumb] = pos[:, wrist] + mv(G[:, wrist], 0.03 * _Z)
    # feet: toe along the ankle -> foot bone, heel behind and below so the sole plane's
    # normal is the foot's lateral axis
    for ankle, foot, heel, toe in ((7, 10, ik.L_HEEL, ik.L_TOE), (8, 11, ik.R_HEEL, ik.R_TOE)):
        f = _unit(J[foot] - J[ankle])
        e = _unit(_X - np.dot(_X, f) * f)
        L[:, toe] = pos[:, ankle] + mv(G[:, ankle], 1.3 * (J[foot] - J[ankle]))
        L[:, heel] = pos[:, ankle] + mv(G[:, ankle], -0.04 * f + 0.07 * np.cross(e, f))
    return L - 0.5 * (L[:, ik.L_HIP] + L[:, ik.R_HIP])[:, None]


def global_rotations(rotmats, rest_joints=None) -> np.ndarray:
    return forward_kinematics_batch(rotmats, DEFAULT_REST_JOINTS if rest_joints is None else rest_joints)[0]


__all__ = ["random_poses", "landmarks_from_pose", "global_rotations", "CAMERA_FROM_BODY", "PARENTS"]
