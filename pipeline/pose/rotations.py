"""Numpy rotation helpers: axis-angle, rotation matrices, quaternions and Euler angles.

Conventions used everywhere in posepipe:
- Quaternions are scalar-last ``(x, y, z, w)`` (the VMC/Unity order) and unit length.
  ``q`` and ``-q`` are the same rotation; functions that return a quaternion pick ``w >= 0``
  unless they are asked to stay sign-continuous with a reference (see `align_sign`).
- Axis-angle vectors are ``axis * angle`` with angle in radians (SMPL/smplx convention).
- All functions are vectorised over leading dimensions and compute in float64.

Why not plain Rodrigues/arccos everywhere: arccos of the trace loses all precision near 0
and the axis is undefined near pi, which is exactly where SMPL root rotations of a person
facing the camera live (about 180 degrees about X). Going through quaternions (Shepperd's
method, then atan2) stays accurate over the whole range.
"""
from __future__ import annotations

import numpy as np

_SMALL = 1e-8


def _as_f64(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def axis_angle_to_quat(aa) -> np.ndarray:
    aa = _as_f64(aa)
    angle = np.linalg.norm(aa, axis=-1, keepdims=True)
    half = 0.5 * angle
    # sin(angle/2)/angle, with its Taylor series where angle is tiny (no 0/0).
    small = angle < 1e-6
    safe = np.where(small, 1.0, angle)
    k = np.where(small, 0.5 - angle * angle / 48.0, np.sin(half) / safe)
    return np.concatenate([aa * k, np.cos(half)], axis=-1)


def quat_to_axis_angle(q) -> np.ndarray:
    q = normalize_quat(q)
    q = np.where(q[..., 3:4] < 0, -q, q)  # shortest rotation: angle in [0, pi]
    v = q[..., :3]
    w = q[..., 3:4]
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    angle = 2.0 * np.arctan2(n, w)
    small = n < 1e-7
    # angle / n -> 2 / w as n -> 0 (w -> 1).
    scale = np.where(small, 2.0 / np.maximum(w, _SMALL), angle / np.where(small, 1.0, n))
    return v * scale


def quat_to_rotmat(q) -> np.ndarray:
    q = normalize_quat(q)
    x, y, z, w = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    xx, yy, zz = x * x, y * y, z * z
    xy, xz, yz = x * y, x * z, y * z
    wx, wy, wz = w * x, w * y, w * z
    rows = [
        [1 - 2 * (yy + zz), 2 * (xy - wz), 2 * (xz + wy)],
        [2 * (xy + wz), 1 - 2 * (xx + zz), 2 * (yz - wx)],
        [2 * (xz - wy), 2 * (yz + wx), 1 - 2 * (xx + yy)],
    ]
    return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)


def rotmat_to_quat(R) -> np.ndarray:
    """Shepperd's method: build q from the largest of (w, x, y, z) so nothing divides by ~0."""
    R = _as_f64(R)
    m00, m01, m02 = R[..., 0, 0], R[..., 0, 1], R[..., 0, 2]
    m10, m11, m12 = R[..., 1, 0], R[..., 1, 1], R[..., 1, 2]
    m20, m21, m22 = R[..., 2, 0], R[..., 2, 1], R[..., 2, 2]
    # Each candidate equals 4 * q_k * q for its own k; the largest q_k is the stable one.
    cands = np.stack([
        np.stack([m21 - m12, m02 - m20, m10 - m01, 1 + m00 + m11 + m22], -1),
        np.stack([1 + m00 - m11 - m22, m01 + m10, m02 + m20, m21 - m12], -1),
        np.stack([m01 + m10, 1 - m00 + m11 - m22, m12 + m21, m02 - m20], -1),
        np.stack([m02 + m20, m12 + m21, 1 - m00 - m11 + m22, m10 - m01], -1),
    ], axis=-2)
    diag = np.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22,
                     1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    best = np.argmax(diag, axis=-1)
    q = np.take_along_axis(cands, best[..., None, None], axis=-2)[..., 0, :]
    q = normalize_quat(q)
    return np.where(q[..., 3:4] < 0, -q, q)


def axis_angle_to_rotmat(aa) -> np.ndarray:
    return quat_to_rotmat(axis_angle_to_quat(aa))


def rotmat_to_axis_angle(R) -> np.ndarray:
    return quat_to_axis_angle(rotmat_to_quat(R))


def normalize_quat(q) -> np.ndarray:
    q = _as_f64(q)
    n = np.linalg.norm(q, axis=-1, keepdims=True)
    bad = n < _SMALL
    # A zero quaternion (e.g. a filter fed only zeros) means "no rotation", not NaN.
    q = np.where(bad, np.array([0.0, 0.0, 0.0, 1.0]), q)
    return q / np.where(bad, 1.0, n)


def quat_multiply(a, b) -> np.ndarray:
    """Hamilton product a*b (apply b first, then a), scalar-last."""
    a, b = _as_f64(a), _as_f64(b)
    ax, ay, az, aw = a[..., 0], a[..., 1], a[..., 2], a[..., 3]
    bx, by, bz, bw = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    return np.stack([
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
        aw * bw - ax * bx - ay * by - az * bz,
    ], axis=-1)


def quat_conjugate(q) -> np.ndarray:
    q = _as_f64(q)
    return q * np.array([-1.0, -1.0, -1.0, 1.0])


def align_sign(q, reference) -> np.ndarray:
    """Flip each quaternion of `q` that points away from `reference` (dot < 0).

    Filtering/averaging quaternion components is only meaningful when consecutive values
    lie in the same hemisphere; this keeps a stream sign-continuous.
    """
    q = _as_f64(q)
    dot = np.sum(q * _as_f64(reference), axis=-1, keepdims=True)
    return np.where(dot < 0, -q, q)


def sign_continuous(qs) -> np.ndarray:
    """Make a sequence of quaternions (time on axis 0) sign-continuous."""
    qs = _as_f64(qs).copy()
    for t in range(1, len(qs)):
        qs[t] = align_sign(qs[t], qs[t - 1])
    return qs


def rotation_angle_between(R1, R2) -> np.ndarray:
    """Geodesic angle (radians) between rotation matrices."""
    q = rotmat_to_quat(np.swapaxes(_as_f64(R1), -1, -2) @ _as_f64(R2))
    return 2.0 * np.arctan2(np.linalg.norm(q[..., :3], axis=-1), np.abs(q[..., 3]))


# --- Euler angles (BVH) -------------------------------------------------------------------

def _elementary(axis: str, angle) -> np.ndarray:
    angle = _as_f64(angle)
    c, s = np.cos(angle), np.sin(angle)
    o, z = np.ones_like(angle), np.zeros_like(angle)
    if axis == "X":
        rows = [[o, z, z], [z, c, -s], [z, s, c]]
    elif axis == "Y":
        rows = [[c, z, s], [z, o, z], [-s, z, c]]
    elif axis == "Z":
        rows = [[c, -s, z], [s, c, z], [z, z, o]]
    else:
        raise ValueError(f"rotation axis must be X, Y or Z, got {axis!r}")
    return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)


EULER_ORDERS = ("ZXY", "XYZ")


def euler_to_rotmat(angles, order: str = "ZXY") -> np.ndarray:
    """Angles (..., 3) in radians, listed in `order`; R = R_order[0] @ R_order[1] @ R_order[2].

    This is the BVH meaning of a channel list such as "Zrotation Xrotation Yrotation".
    """
    _check_order(order)
    angles = _as_f64(angles)
    R = _elementary(order[0], angles[..., 0])
    R = R @ _elementary(order[1], angles[..., 1])
    return R @ _elementary(order[2], angles[..., 2])


def rotmat_to_euler(R, order: str = "ZXY") -> np.ndarray:
    """Inverse of `euler_to_rotmat`: angles (..., 3) in radians in `order`.

    The middle angle is in [-pi/2, pi/2]; at gimbal lock (middle = +-90 degrees) the last
    angle is set to 0 and the first absorbs the remaining rotation.
    """
    _check_order(order)
    R = _as_f64(R)
    if order == "ZXY":
        # R = Rz Rx Ry: R[2,1] = sin x, R[2,0] = -cos x sin y, R[2,2] = cos x cos y,
        # R[0,1] = -sin z cos x, R[1,1] = cos z cos x.
        mid = np.arcsin(np.clip(R[..., 2, 1], -1.0, 1.0))
        locked = np.abs(R[..., 2, 1]) > 1 - 1e-9
        last = np.where(locked, 0.0, np.arctan2(-R[..., 2, 0], R[..., 2, 2]))
        first = np.where(locked, np.arctan2(R[..., 1, 0], R[..., 0, 0]),
                         np.arctan2(-R[..., 0, 1], R[..., 1, 1]))
    else:  # XYZ
        # R = Rx Ry Rz: R[0,2] = sin y, R[1,2] = -sin x cos y, R[2,2] = cos x cos y,
        # R[0,1] = -cos y sin z, R[0,0] = cos y cos z.
        mid = np.arcsin(np.clip(R[..., 0, 2], -1.0, 1.0))
        locked = np.abs(R[..., 0, 2]) > 1 - 1e-9
        last = np.where(locked, 0.0, np.arctan2(-R[..., 0, 1], R[..., 0, 0]))
        first = np.where(locked, np.arctan2(R[..., 2, 1], R[..., 1, 1]),
                         np.arctan2(-R[..., 1, 2], R[..., 2, 2]))
    return np.stack([first, mid, last], axis=-1)


def _check_order(order: str) -> None:
    if order not in EULER_ORDERS:
        raise ValueError(f"Euler order must be one of {EULER_ORDERS}, got {order!r}")


# Camera frame (x right, y down, z forward) <-> y-up frame (x right, y up, z backward):
# a 180-degree rotation about X. SMPL roots predicted by POCO live in the camera frame.
FLIP_YZ = np.diag([1.0, -1.0, -1.0])
