"""Geometry for the browser viewer: SMPL kinematic tree, forward kinematics, colours, frames.

Pure numpy, no viser, so it is cheap to import and easy to test.

Coordinate frames
-----------------
* **SMPL body frame**: y up, x towards the body's left, z towards the body's front; the rest
  pose is a T-pose. Rest joint positions/offsets below are in this frame.
* **Camera frame** (what POCO outputs, `Person.transl`, `Person.joints`): x right, y down,
  z forward (into the scene), metres. `global_orient` rotates the SMPL body frame into it.
* **View frame** (what the viewer draws): x right, y up, z towards the viewer. It is the camera
  frame turned 180 degrees about x, i.e. ``p_view = diag(1, -1, -1) @ p_cam``. The real camera
  sits at the view-frame origin looking down -z, so the default browser view matches the image.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NUM_JOINTS = 24

JOINT_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck",
    "left_collar", "right_collar", "head", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hand", "right_hand",
)

# Parent of each joint in the SMPL kinematic tree (-1 = root).
SMPL_PARENTS = np.array(
    [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21],
    dtype=np.int64,
)

# Default rest skeleton used when no SMPL file is available: offset of each joint from its
# parent in the SMPL body frame (metres); row 0 is the pelvis relative to the model origin.
# These are rounded, hand-entered approximations of an average adult T-pose (left side +x),
# good enough to draw a recognisable skeleton; with SMPL data the real rest joints are used.
DEFAULT_REST_OFFSETS = np.array([
    [0.00, -0.22, 0.03],    # pelvis (from model origin)
    [0.06, -0.09, -0.01],   # left_hip
    [-0.06, -0.09, -0.01],  # right_hip
    [0.00, 0.11, -0.02],    # spine1
    [0.04, -0.38, 0.00],    # left_knee
    [-0.04, -0.38, 0.00],   # right_knee
    [0.00, 0.13, 0.00],     # spine2
    [-0.01, -0.40, -0.04],  # left_ankle
    [0.01, -0.40, -0.04],   # right_ankle
    [0.00, 0.05, 0.02],     # spine3
    [0.04, -0.06, 0.12],    # left_foot
    [-0.04, -0.06, 0.12],   # right_foot
    [0.00, 0.22, -0.03],    # neck
    [0.08, 0.12, -0.01],    # left_collar
    [-0.08, 0.12, -0.01],   # right_collar
    [0.00, 0.09, 0.05],     # head
    [0.12, 0.04, -0.02],    # left_shoulder
    [-0.12, 0.04, -0.02],   # right_shoulder
    [0.26, 0.00, -0.02],    # left_elbow
    [-0.26, 0.00, -0.02],   # right_elbow
    [0.25, 0.00, 0.00],     # left_wrist
    [-0.25, 0.00, 0.00],    # right_wrist
    [0.09, -0.01, -0.01],   # left_hand
    [-0.09, -0.01, -0.01],  # right_hand
], dtype=np.float64)

CAM_TO_VIEW = np.diag([1.0, -1.0, -1.0])
# The same 180-degree turn about x as a scalar-first quaternion (viser's wxyz convention).
CAM_TO_VIEW_WXYZ = np.array([0.0, 1.0, 0.0, 0.0])

# Bone list of the tree: (parent, child) for every non-root joint.
BONES = np.array([(int(SMPL_PARENTS[j]), j) for j in range(1, NUM_JOINTS)], dtype=np.int64)


def rest_joints_from_offsets(offsets: np.ndarray, parents: np.ndarray = SMPL_PARENTS) -> np.ndarray:
    """Absolute rest joint positions (24, 3) from parent-relative offsets."""
    joints = np.zeros_like(np.asarray(offsets, dtype=np.float64))
    for j, p in enumerate(parents):
        joints[j] = offsets[j] if p < 0 else joints[p] + offsets[j]
    return joints


def offsets_from_rest_joints(rest_joints: np.ndarray, parents: np.ndarray = SMPL_PARENTS) -> np.ndarray:
    """Parent-relative offsets from absolute rest joint positions (inverse of the above)."""
    rest_joints = np.asarray(rest_joints, dtype=np.float64)
    offsets = rest_joints.copy()
    for j, p in enumerate(parents):
        if p >= 0:
            offsets[j] = rest_joints[j] - rest_joints[p]
    return offsets


def axis_angle_to_matrix(aa: np.ndarray) -> np.ndarray:
    """Rodrigues' formula for a batch of axis-angle vectors (..., 3) -> (..., 3, 3)."""
    aa = np.asarray(aa, dtype=np.float64)
    angle = np.linalg.norm(aa, axis=-1, keepdims=True)
    # Tiny angles: the axis is ill-defined but the rotation is ~identity either way.
    safe = np.where(angle < 1e-12, 1.0, angle)
    axis = aa / safe
    x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
    zeros = np.zeros_like(x)
    k = np.stack([zeros, -z, y, z, zeros, -x, -y, x, zeros], axis=-1).reshape(aa.shape[:-1] + (3, 3))
    s = np.sin(angle)[..., None]
    c = np.cos(angle)[..., None]
    eye = np.broadcast_to(np.eye(3), k.shape)
    return eye + s * k + (1.0 - c) * (k @ k)


def matrix_to_wxyz(rot: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) -> unit quaternions (..., 4), scalar first, w >= 0."""
    rot = np.asarray(rot, dtype=np.float64)
    m = rot.reshape(-1, 3, 3)
    r00, r01, r02 = m[:, 0, 0], m[:, 0, 1], m[:, 0, 2]
    r10, r11, r12 = m[:, 1, 0], m[:, 1, 1], m[:, 1, 2]
    r20, r21, r22 = m[:, 2, 0], m[:, 2, 1], m[:, 2, 2]
    # Four equivalent formulas, each stable when its pivot (4*w^2, 4*x^2, ...) is large;
    # pick the largest pivot per matrix (Shepperd's method), all vectorised.
    pivots = np.stack([1 + r00 + r11 + r22, 1 + r00 - r11 - r22,
                       1 - r00 + r11 - r22, 1 - r00 - r11 + r22], axis=1)
    s = 2.0 * np.sqrt(np.maximum(pivots, 1e-12))
    cands = np.stack([
        np.stack([s[:, 0] / 4, (r21 - r12) / s[:, 0], (r02 - r20) / s[:, 0], (r10 - r01) / s[:, 0]], 1),
        np.stack([(r21 - r12) / s[:, 1], s[:, 1] / 4, (r01 + r10) / s[:, 1], (r02 + r20) / s[:, 1]], 1),
        np.stack([(r02 - r20) / s[:, 2], (r01 + r10) / s[:, 2], s[:, 2] / 4, (r12 + r21) / s[:, 2]], 1),
        np.stack([(r10 - r01) / s[:, 3], (r02 + r20) / s[:, 3], (r12 + r21) / s[:, 3], s[:, 3] / 4], 1),
    ], axis=1)
    out = cands[np.arange(len(m)), np.argmax(pivots, axis=1)]
    out *= np.where(out[:, :1] < 0, -1.0, 1.0)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out.reshape(rot.shape[:-2] + (4,))


def local_rotations(global_orient: np.ndarray, body_pose: np.ndarray) -> np.ndarray:
    """Per-joint local rotation matrices (24, 3, 3) from smplx axis-angle fields."""
    aa = np.concatenate([np.asarray(global_orient, dtype=np.float64).reshape(1, 3),
                         np.asarray(body_pose, dtype=np.float64).reshape(NUM_JOINTS - 1, 3)])
    return axis_angle_to_matrix(aa)


def forward_kinematics(
    local_rots: np.ndarray,
    rest_offsets: np.ndarray = DEFAULT_REST_OFFSETS,
    parents: np.ndarray = SMPL_PARENTS,
) -> tuple[np.ndarray, np.ndarray]:
    """Pose the rest skeleton: returns (world rotations (24,3,3), joint positions (24,3)).

    Positions are in the frame that the root rotation maps into (for POCO: the camera frame,
    before adding `transl`), like SMPL's joints without translation: the root joint stays at
    its rest position and every child is placed by its parent's world rotation.
    """
    n = len(parents)
    world = np.empty((n, 3, 3))
    pos = np.empty((n, 3))
    for j in range(n):
        p = parents[j]
        if p < 0:
            world[j] = local_rots[j]
            pos[j] = rest_offsets[j]
        else:
            world[j] = world[p] @ local_rots[j]
            pos[j] = pos[p] + world[p] @ rest_offsets[j]
    return world, pos


@dataclass
class SkeletonPose:
    """One person's skeleton in the view frame."""
    joints: np.ndarray        # (24, 3) view-frame positions, metres
    world_rots: np.ndarray | None  # (24, 3, 3) joint rotations in the camera frame, None if from joints


def person_skeleton(person, rest_offsets: np.ndarray = DEFAULT_REST_OFFSETS) -> SkeletonPose:
    """View-frame joints of a `pipeline.pose.frame.Person`.

    Uses `person.joints` (camera frame, translation included) when present, otherwise forward
    kinematics of the rotations on `rest_offsets`, placed at `person.transl`.
    """
    if person.joints is not None:
        joints_cam = np.asarray(person.joints, dtype=np.float64).reshape(NUM_JOINTS, 3)
        return SkeletonPose(joints=joints_cam @ CAM_TO_VIEW.T, world_rots=None)
    world, pos = forward_kinematics(local_rotations(person.global_orient, person.body_pose), rest_offsets)
    joints_cam = pos + np.asarray(person.transl, dtype=np.float64).reshape(1, 3)
    return SkeletonPose(joints=joints_cam @ CAM_TO_VIEW.T, world_rots=world)


def uncertainty_colors(uncertainty: np.ndarray, low: float = 0.0, high: float = 1.0) -> np.ndarray:
    """uint8 RGB per joint: green at `low` (confident) through yellow to red at `high`."""
    u = np.asarray(uncertainty, dtype=np.float64).reshape(-1)
    u = np.nan_to_num(u, nan=high)
    t = np.clip((u - low) / max(high - low, 1e-9), 0.0, 1.0)
    red = np.clip(2.0 * t, 0.0, 1.0)
    green = np.clip(2.0 * (1.0 - t), 0.0, 1.0)
    return (np.stack([red, green, np.zeros_like(t)], axis=1) * 220 + 20).astype(np.uint8)


def bone_segments(joints: np.ndarray) -> np.ndarray:
    """(23, 2, 3) start/end points of every bone, for a line-segment node."""
    return np.stack([joints[BONES[:, 0]], joints[BONES[:, 1]]], axis=1)


def box_figure_mesh(rest_joints: np.ndarray | None = None, half_width: float = 0.03):
    """A small SMPL-like skinned mesh for demos and tests when no SMPL file is available.

    One box per bone, running from the parent joint to the child joint and fully weighted to
    the parent (so it turns with the parent's rotation, like a limb). Returns
    (vertices (V,3), faces (F,3), skin_weights (V,24), rest_joints (24,3)).
    """
    joints = rest_joints_from_offsets(DEFAULT_REST_OFFSETS) if rest_joints is None else np.asarray(rest_joints, np.float64)
    corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float64)
    # Two triangles per box side, outward-facing, over the corner numbering above.
    box_faces = np.array([
        [0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
        [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3],
    ])
    verts, faces, weights = [], [], []
    for parent, child in BONES:
        a, b = joints[parent], joints[child]
        lo = np.minimum(a, b) - half_width
        hi = np.maximum(a, b) + half_width
        box = lo + (corners + 1.0) / 2.0 * (hi - lo)
        faces.append(box_faces + 8 * len(verts))
        verts.append(box)
        w = np.zeros((8, NUM_JOINTS))
        w[:, parent] = 1.0
        weights.append(w)
    return (np.concatenate(verts).astype(np.float32), np.concatenate(faces).astype(np.int64),
            np.concatenate(weights).astype(np.float32), joints)
