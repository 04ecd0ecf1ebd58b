"""Rotation and camera geometry used around POCO (torch, batched, any leading shape).

Conventions: rotation matrices act on column vectors; quaternions are (w, x, y, z);
axis-angle vectors have the angle (radians) as their norm.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def rot6d_to_rotmat(x: torch.Tensor) -> torch.Tensor:
    """6D rotation representation -> (N, 3, 3) by Gram-Schmidt.

    The 6 numbers of one rotation are read as a 3x2 matrix in row-major order
    (``view(-1, 3, 2)``): column 0 = (x0, x2, x4) gives the first basis vector, column 1 =
    (x1, x3, x5) the second; the third is their cross product. The result has the three
    vectors as its columns. This is the layout of the official POCO/SPIN/CLIFF code, so it
    must not change.
    """
    x = x.reshape(-1, 3, 2)
    a1 = x[:, :, 0]
    a2 = x[:, :, 1]
    b1 = F.normalize(a1, dim=1)
    b2 = F.normalize(a2 - torch.einsum("bi,bi->b", b1, a2).unsqueeze(-1) * b1, dim=1)
    b3 = torch.linalg.cross(b1, b2, dim=1)
    return torch.stack((b1, b2, b3), dim=-1)


def rotmat_to_rot6d(rotmat: torch.Tensor) -> torch.Tensor:
    """(…, 3, 3) -> (…, 6): first two columns, in the layout read by `rot6d_to_rotmat`."""
    return rotmat[..., :, :2].reshape(*rotmat.shape[:-2], 6)


def axis_angle_to_quaternion(aa: torch.Tensor) -> torch.Tensor:
    angle = aa.norm(dim=-1, keepdim=True)
    half = 0.5 * angle
    small = angle < 1e-4
    # sin(a/2)/a ~ 1/2 - a^2/48 near zero avoids 0/0
    safe = torch.where(small, torch.ones_like(angle), angle)
    k = torch.where(small, 0.5 - angle * angle / 48.0, torch.sin(half) / safe)
    return torch.cat([torch.cos(half), aa * k], dim=-1)


def quaternion_to_axis_angle(q: torch.Tensor) -> torch.Tensor:
    # the sign flip keeps w >= 0 so the angle stays in [0, pi]
    q = torch.where(q[..., :1] < 0, -q, q)
    vec = q[..., 1:]
    sin_half = vec.norm(dim=-1, keepdim=True)
    angle = 2.0 * torch.atan2(sin_half, q[..., :1])
    small = sin_half < 1e-6
    safe = torch.where(small, torch.ones_like(sin_half), sin_half)
    # angle / sin(angle/2) -> 2 / w as the angle goes to 0
    k = torch.where(small, 2.0 / q[..., :1].clamp_min(1e-12), angle / safe)
    return vec * k


def quaternion_to_rotmat(q: torch.Tensor) -> torch.Tensor:
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    m = torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1)
    return m.reshape(*q.shape[:-1], 3, 3)


def rotmat_to_quaternion(m: torch.Tensor) -> torch.Tensor:
    """Robust for every rotation (incl. 180 degrees): each of the four candidate formulas
    divides by its own largest component, and the best-conditioned one is picked."""
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    sq = torch.stack([
        1 + m00 + m11 + m22,
        1 + m00 - m11 - m22,
        1 - m00 + m11 - m22,
        1 - m00 - m11 + m22,
    ], dim=-1)
    root = torch.sqrt(sq.clamp_min(0.0))  # = 2*|w|, 2*|x|, 2*|y|, 2*|z|
    cands = torch.stack([
        torch.stack([root[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], dim=-1),
        torch.stack([m21 - m12, root[..., 1] ** 2, m10 + m01, m02 + m20], dim=-1),
        torch.stack([m02 - m20, m10 + m01, root[..., 2] ** 2, m12 + m21], dim=-1),
        torch.stack([m10 - m01, m20 + m02, m21 + m12, root[..., 3] ** 2], dim=-1),
    ], dim=-2)
    cands = cands / (2.0 * root.clamp_min(0.1)[..., None])
    best = sq.argmax(dim=-1)
    q = torch.gather(cands, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


def axis_angle_to_rotmat(aa: torch.Tensor) -> torch.Tensor:
    return quaternion_to_rotmat(axis_angle_to_quaternion(aa))


def rotmat_to_axis_angle(m: torch.Tensor) -> torch.Tensor:
    """(…, 3, 3) -> (…, 3); stable near 0 and near pi (goes through the quaternion)."""
    return quaternion_to_axis_angle(rotmat_to_quaternion(m))


def full_image_translation(pred_cam: torch.Tensor, centres: torch.Tensor, sides: torch.Tensor,
                           img_wh: torch.Tensor, focal: torch.Tensor) -> torch.Tensor:
    """Weak-perspective crop camera [s, tx, ty] -> camera translation in the full image (metres).

    transl = [tx + 2(cx - W/2)/(s b), ty + 2(cy - H/2)/(s b), 2 f/(s b)]  (architecture.md §6), where b
    is the side of the square crop box in pixels and f the full-image focal length.
    """
    s, tx, ty = pred_cam[..., 0], pred_cam[..., 1], pred_cam[..., 2]
    sb = s * sides
    cx, cy = centres[..., 0], centres[..., 1]
    w, h = img_wh[..., 0], img_wh[..., 1]
    return torch.stack([
        tx + 2.0 * (cx - w / 2.0) / sb,
        ty + 2.0 * (cy - h / 2.0) / sb,
        2.0 * focal / sb,
    ], dim=-1)
