"""The 24-joint SMPL skeleton without the SMPL model files: names, tree, rest joints, FK.

Used when the licensed SMPL files are absent (architecture.md §6): the overlay draws a skeleton,
the BVH exporter needs bone offsets, the VMC sink sends rest bone positions.

`DEFAULT_REST_JOINTS` are rest-pose joint positions (metres, SMPL body frame: x = the
person's left, y up, z forward/facing direction) for an average adult body, rounded to
centimetres. They approximate what the SMPL neutral model's joint regressor gives at zero
shape; they are good enough to draw and retarget a skeleton, not for metric evaluation.
Pass real regressed joints (`rest_joints=`) wherever you have them.
"""
from __future__ import annotations

import numpy as np

from pipeline.pose.rotations import axis_angle_to_rotmat

JOINT_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck",
    "left_collar", "right_collar", "head", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hand", "right_hand",
)
PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)
NUM_JOINTS = 24

DEFAULT_REST_JOINTS = np.array([
    [0.00, -0.23, 0.03],   # pelvis (SMPL rotates the body about this point)
    [0.06, -0.32, 0.01],   # left_hip
    [-0.06, -0.33, 0.01],  # right_hip
    [0.00, -0.12, 0.00],   # spine1
    [0.10, -0.70, 0.02],   # left_knee
    [-0.10, -0.71, 0.01],  # right_knee
    [0.01, 0.01, 0.00],    # spine2
    [0.09, -1.10, -0.02],  # left_ankle
    [-0.09, -1.10, -0.02], # right_ankle
    [0.01, 0.06, 0.03],    # spine3
    [0.12, -1.16, 0.10],   # left_foot
    [-0.11, -1.16, 0.10],  # right_foot
    [-0.01, 0.27, -0.01],  # neck
    [0.08, 0.18, 0.01],    # left_collar
    [-0.08, 0.18, 0.00],   # right_collar
    [0.00, 0.36, 0.04],    # head
    [0.19, 0.23, -0.01],   # left_shoulder
    [-0.19, 0.23, -0.01],  # right_shoulder
    [0.45, 0.22, -0.03],   # left_elbow
    [-0.45, 0.22, -0.04],  # right_elbow
    [0.71, 0.23, -0.04],   # left_wrist
    [-0.72, 0.23, -0.04],  # right_wrist
    [0.80, 0.22, -0.05],   # left_hand
    [-0.80, 0.22, -0.05],  # right_hand
], dtype=np.float64)

# Bones to draw: every joint to its parent.
BONES = tuple((j, PARENTS[j]) for j in range(1, NUM_JOINTS))


def rest_offsets(rest_joints=None) -> np.ndarray:
    """(24, 3) offset of each joint from its parent in the rest pose (row 0: pelvis position)."""
    J = DEFAULT_REST_JOINTS if rest_joints is None else check_rest_joints(rest_joints)
    off = J.copy()
    for j in range(1, NUM_JOINTS):
        off[j] = J[j] - J[PARENTS[j]]
    return off


def check_rest_joints(rest_joints) -> np.ndarray:
    J = np.asarray(rest_joints, dtype=np.float64)
    if J.shape != (NUM_JOINTS, 3) or not np.all(np.isfinite(J)):
        raise ValueError(f"rest joints must be a finite (24, 3) array, got shape {J.shape}")
    return J


def forward_kinematics(global_orient, body_pose, transl=None, rest_joints=None):
    """Posed joint positions (24, 3) and global rotations (24, 3, 3).

    Same convention as SMPL: the body rotates about the rest pelvis, then `transl` is added,
    so with POCO's outputs the result is in the camera frame (x right, y down, z forward).
    """
    J = DEFAULT_REST_JOINTS if rest_joints is None else check_rest_joints(rest_joints)
    aa = np.concatenate([np.asarray(global_orient, np.float64).reshape(1, 3),
                         np.asarray(body_pose, np.float64).reshape(23, 3)], axis=0)
    local = axis_angle_to_rotmat(aa)
    glob = np.empty_like(local)
    pos = np.empty((NUM_JOINTS, 3))
    glob[0] = local[0]
    pos[0] = J[0]
    for j in range(1, NUM_JOINTS):
        p = PARENTS[j]
        glob[j] = glob[p] @ local[j]
        pos[j] = pos[p] + glob[p] @ (J[j] - J[p])
    if transl is not None:
        pos = pos + np.asarray(transl, np.float64).reshape(1, 3)
    return pos, glob


def full_image_focal(width: int, height: int) -> float:
    """Focal length (pixels) of the full-image camera POCO/CLIFF assume (architecture.md §6)."""
    return float(np.sqrt(width * width + height * height))


def project(points, width: int, height: int, focal: float | None = None) -> np.ndarray:
    """Pinhole projection of camera-frame points (..., 3) to pixels (..., 2); principal
    point at the image centre. Points at or behind the camera come back as NaN."""
    P = np.asarray(points, dtype=np.float64)
    f = full_image_focal(width, height) if focal is None else float(focal)
    z = P[..., 2:3]
    valid = z > 1e-6
    uv = f * P[..., :2] / np.where(valid, z, 1.0) + np.array([width / 2.0, height / 2.0])
    return np.where(valid, uv, np.nan)
