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


def _tree_levels(parents=PARENTS) -> tuple[np.ndarray, ...]:
    depth = [0] * len(parents)
    for j in range(1, len(parents)):
        depth[j] = depth[parents[j]] + 1
    return tuple(np.flatnonzero(np.array(depth) == d) for d in range(1, max(depth) + 1))


# Joints grouped by depth in the tree (pelvis excluded): every joint of a level has its parent
# in an earlier level, so one vectorised step per level poses all of them.
LEVELS = _tree_levels()
_PARENT_INDEX = np.array(PARENTS[1:])


def forward_kinematics_batch(local_rotmats, rest_joints=None) -> tuple[np.ndarray, np.ndarray]:
    """Global rotations (..., 24, 3, 3) and joint positions (..., 24, 3) of posed skeletons.

    local_rotmats (..., 24, 3, 3); rest_joints (24, 3) or (..., 24, 3) per skeleton. As in
    SMPL the pelvis stays at its rest position (add `transl` for the camera frame). One
    vectorised step per tree level, not per joint.
    """
    local = np.asarray(local_rotmats, np.float64)
    J = DEFAULT_REST_JOINTS if rest_joints is None else np.asarray(rest_joints, np.float64)
    if local.shape[-3:] != (NUM_JOINTS, 3, 3) or J.shape[-2:] != (NUM_JOINTS, 3):
        raise ValueError(f"local rotations must be (..., 24, 3, 3) and rest joints (..., 24, 3); got "
                         f"{local.shape} and {J.shape}")
    offsets = J.copy()
    offsets[..., 1:, :] = J[..., 1:, :] - J[..., _PARENT_INDEX, :]
    shape = np.broadcast_shapes(local.shape[:-3], J.shape[:-2])
    glob = np.empty(shape + (NUM_JOINTS, 3, 3))
    pos = np.empty(shape + (NUM_JOINTS, 3))
    glob[..., 0, :, :] = local[..., 0, :, :]
    pos[..., 0, :] = J[..., 0, :]
    for idx in LEVELS:
        par = _PARENT_INDEX[idx - 1]
        glob[..., idx, :, :] = glob[..., par, :, :] @ local[..., idx, :, :]
        pos[..., idx, :] = pos[..., par, :] + np.einsum("...ij,...j->...i", glob[..., par, :, :],
                                                        offsets[..., idx, :])
    return glob, pos


def joints_from_offsets(offsets) -> np.ndarray:
    """Rest joint positions (..., 24, 3) from parent-relative offsets (row 0: the pelvis)."""
    out = np.array(offsets, np.float64)
    for idx in LEVELS:
        out[..., idx, :] += out[..., _PARENT_INDEX[idx - 1], :]
    return out


def repose_joints(joints, local_before, local_after, transl_before=None, transl_after=None) -> np.ndarray:
    """Posed joints (..., 24, 3) moved from one set of local rotations (and translation) to
    another on the same skeleton. The skeleton is recovered from the joints and the rotations
    that posed them, which is exact for joints made by forward kinematics (SMPL's included):
    smoothing the rotations can then move the joints along with them."""
    P = np.asarray(joints, np.float64)
    glob, _ = forward_kinematics_batch(local_before)   # global rotations do not depend on the rest joints
    off = np.empty_like(P)
    off[..., 0, :] = P[..., 0, :] - (0.0 if transl_before is None else np.asarray(transl_before, np.float64))
    off[..., 1:, :] = np.einsum("...ji,...j->...i", glob[..., _PARENT_INDEX, :, :],
                                P[..., 1:, :] - P[..., _PARENT_INDEX, :])
    _, pos = forward_kinematics_batch(local_after, joints_from_offsets(off))
    return pos + (0.0 if transl_after is None else np.asarray(transl_after, np.float64)[..., None, :])


def forward_kinematics(global_orient, body_pose, transl=None, rest_joints=None):
    """Posed joint positions (24, 3) and global rotations (24, 3, 3).

    Same convention as SMPL: the body rotates about the rest pelvis, then `transl` is added,
    so with POCO's outputs the result is in the camera frame (x right, y down, z forward).
    """
    J = DEFAULT_REST_JOINTS if rest_joints is None else check_rest_joints(rest_joints)
    aa = np.concatenate([np.asarray(global_orient, np.float64).reshape(1, 3),
                         np.asarray(body_pose, np.float64).reshape(23, 3)], axis=0)
    glob, pos = forward_kinematics_batch(axis_angle_to_rotmat(aa), J)
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
