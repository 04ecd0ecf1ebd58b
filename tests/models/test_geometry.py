import math

import cv2
import numpy as np
import pytest
import torch

from pipeline.models.geometry import (
    axis_angle_to_quaternion, axis_angle_to_rotmat, full_image_translation, quaternion_to_axis_angle,
    quaternion_to_rotmat, rot6d_to_rotmat, rotmat_to_axis_angle, rotmat_to_quaternion, rotmat_to_rot6d,
)

torch.set_default_dtype(torch.float32)


def _random_aa(n, seed=0, max_angle=math.pi):
    g = torch.Generator().manual_seed(seed)
    axis = torch.nn.functional.normalize(torch.randn(n, 3, generator=g, dtype=torch.float64), dim=1)
    angle = torch.rand(n, 1, generator=g, dtype=torch.float64) * max_angle
    return axis * angle


def test_rot6d_gives_orthonormal_det_plus_one():
    x = torch.randn(500, 6, generator=torch.Generator().manual_seed(1))
    r = rot6d_to_rotmat(x)
    eye = torch.eye(3).expand(500, 3, 3)
    assert torch.allclose(r.transpose(1, 2) @ r, eye, atol=1e-5)
    assert torch.allclose(torch.linalg.det(r), torch.ones(500), atol=1e-5)


def test_rot6d_layout_is_view_3x2_columns():
    # column 0 is (x0, x2, x4), column 1 is (x1, x3, x5) before Gram-Schmidt
    x = torch.tensor([[2.0, 0.0, 0.0, 3.0, 0.0, 0.0]])
    assert torch.allclose(rot6d_to_rotmat(x)[0], torch.eye(3))
    x = torch.tensor([[0.0, 1.0, 5.0, 0.0, 0.0, 0.0]])  # a1 = (0,5,0), a2 = (1,0,0)
    r = rot6d_to_rotmat(x)[0]
    assert torch.allclose(r[:, 0], torch.tensor([0.0, 1.0, 0.0]))
    assert torch.allclose(r[:, 1], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(r[:, 2], torch.tensor([0.0, 0.0, -1.0]))
    # Gram-Schmidt: the second column loses its component along the first
    x = torch.tensor([[1.0, 1.0, 0.0, 1.0, 0.0, 0.0]])
    r = rot6d_to_rotmat(x)[0]
    assert torch.allclose(r[:, 1], torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)


def test_rot6d_round_trip():
    r = axis_angle_to_rotmat(_random_aa(100)).float()
    assert torch.allclose(rot6d_to_rotmat(rotmat_to_rot6d(r)), r, atol=1e-5)


def test_axis_angle_matches_cv2_rodrigues():
    aa = _random_aa(50, seed=3)
    r = axis_angle_to_rotmat(aa).numpy()
    for v, m in zip(aa.numpy(), r):
        ref, _ = cv2.Rodrigues(v)
        np.testing.assert_allclose(m, ref, atol=1e-9)


@pytest.mark.parametrize("max_angle", [math.pi * 0.999, 1e-3])
def test_rotmat_axis_angle_round_trip(max_angle):
    aa = _random_aa(300, seed=2, max_angle=max_angle)
    back = rotmat_to_axis_angle(axis_angle_to_rotmat(aa))
    assert torch.allclose(back, aa, atol=1e-7)


@pytest.mark.parametrize("angle", [0.0, 1e-9, 1e-6, 1e-4])
def test_axis_angle_near_zero(angle):
    aa = torch.tensor([[angle, -angle, 0.5 * angle]], dtype=torch.float64)
    r = axis_angle_to_rotmat(aa)
    assert torch.isfinite(r).all()
    back = rotmat_to_axis_angle(r)
    assert torch.isfinite(back).all()
    assert torch.allclose(back, aa, atol=1e-12)
    # float32 too
    assert torch.isfinite(rotmat_to_axis_angle(r.float())).all()


@pytest.mark.parametrize("eps", [0.0, 1e-7, 1e-4])
def test_axis_angle_near_pi(eps):
    axes = torch.nn.functional.normalize(torch.tensor(
        [[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 1.0, 0], [0.3, -0.5, 0.8], [-1.0, 2.0, 3.0]],
        dtype=torch.float64), dim=1)
    aa = axes * (math.pi - eps)
    r = axis_angle_to_rotmat(aa)
    back = rotmat_to_axis_angle(r)
    assert torch.isfinite(back).all()
    assert torch.allclose(back.norm(dim=1), torch.full((6,), math.pi - eps, dtype=torch.float64), atol=1e-6)
    # at pi the sign of the axis is ambiguous; the rotation must be the same
    assert torch.allclose(axis_angle_to_rotmat(back), r, atol=1e-7)
    for m, v in zip(r.numpy(), back.numpy()):
        ref, _ = cv2.Rodrigues(v)
        np.testing.assert_allclose(ref, m, atol=1e-6)


def test_quaternion_helpers_round_trip():
    aa = _random_aa(200, seed=5)
    q = axis_angle_to_quaternion(aa)
    assert torch.allclose(q.norm(dim=1), torch.ones(200, dtype=torch.float64))
    r = quaternion_to_rotmat(q)
    q2 = rotmat_to_quaternion(r)
    assert torch.allclose(q2, q * torch.sign(q[:, :1]), atol=1e-9)
    assert torch.allclose(quaternion_to_axis_angle(q2), aa, atol=1e-9)


def test_batched_leading_dims():
    aa = _random_aa(24 * 4).reshape(4, 24, 3)
    r = axis_angle_to_rotmat(aa)
    assert r.shape == (4, 24, 3, 3)
    assert rotmat_to_axis_angle(r).shape == (4, 24, 3)


def test_full_image_translation_formula():
    cam = torch.tensor([[0.8, 0.1, -0.2]], dtype=torch.float64)
    centre = torch.tensor([[400.0, 300.0]], dtype=torch.float64)
    side = torch.tensor([250.0], dtype=torch.float64)
    wh = torch.tensor([640.0, 480.0], dtype=torch.float64)
    f = torch.tensor([800.0], dtype=torch.float64)
    t = full_image_translation(cam, centre, side, wh, f)[0]
    sb = 0.8 * 250.0
    expected = [0.1 + 2 * (400 - 320) / sb, -0.2 + 2 * (300 - 240) / sb, 2 * 800 / sb]
    assert np.allclose(t.numpy(), expected)
    assert np.allclose(expected, [0.9, 0.4, 8.0])
