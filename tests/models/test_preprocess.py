import cv2
import numpy as np
import pytest
import torch

from pipeline.models.init import synthetic_images
from pipeline.models.postprocess import to_smpl_params
from pipeline.models.preprocess import (
    IMG_MEAN, IMG_STD, bbox_info, crop_affine, crop_batch, crop_cv2, crop_torch, focal_length, normalise,
    square_boxes,
)


def test_square_box_centre_and_side():
    c, s = square_boxes([[100, 50, 300, 450]])
    assert np.allclose(c, [[200, 250]])
    assert np.allclose(s, [1.2 * 400])
    c, s = square_boxes(np.array([10, 20, 110, 60.0]))  # wide box, single row
    assert np.allclose(c, [[60, 40]]) and np.allclose(s, [120])


@pytest.mark.parametrize("bad", [[[0, 0, 0, 10]], [[5, 5, 1, 10]], [[0, 0, np.nan, 4]], [[1, 2, 3]]])
def test_bad_boxes_rejected(bad):
    with pytest.raises(ValueError):
        square_boxes(bad)


def test_focal_and_bbox_info_hand_computed():
    assert focal_length(640, 480) == 800.0
    info = bbox_info([[200, 250]], [480], (640, 480))
    # [(200-320)/800*2.8, (250-240)/800*2.8, (480-0.24*800)/(0.06*800)]
    assert info.dtype == np.float32
    assert np.allclose(info, [[-0.42, 0.035, 6.0]], atol=1e-6)


def test_crop_affine_matches_official_three_point_construction():
    cx, cy, b = 321.7, 188.2, 233.0
    m = crop_affine((cx, cy), b)
    # official: centre, centre + (0, b/2), centre + (b/2, 0) -> 112,112 / 112,224 / 224,112
    src = np.float32([[cx, cy], [cx, cy + b / 2], [cx + b / 2, cy]])
    dst = np.float32([[112, 112], [112, 224], [224, 112]])
    assert np.allclose(m, cv2.getAffineTransform(src, dst), atol=1e-3)
    assert np.allclose(m @ [cx, cy, 1], [112, 112])
    assert np.allclose(m @ [cx - b / 2, cy - b / 2, 1], [0, 0])


def test_crop_places_box_centre_at_112_and_pads_with_zeros():
    frame = np.full((100, 200, 3), 50, np.uint8)
    frame[40, 150] = (255, 0, 0)
    crop = crop_cv2(frame, (150, 40), 224.0)   # side 224 -> scale 1, box reaches outside the frame
    assert tuple(crop[112, 112]) == (255, 0, 0)
    assert crop[0, 0].sum() == 0           # above the frame: zero padding
    assert crop[223, 223].sum() == 0       # right of / below the frame
    assert tuple(crop[112, 100]) == (50, 50, 50)


def test_normalise_imagenet():
    px = np.zeros((1, 2, 2, 3), np.uint8)
    px[..., 0] = 255
    x = normalise(px)
    assert x.shape == (1, 3, 2, 2) and x.dtype == np.float32
    assert np.allclose(x[0, :, 0, 0], (np.array([1.0, 0, 0]) - IMG_MEAN) / IMG_STD)


def test_torch_crop_agrees_with_cv2():
    frame = cv2.resize(synthetic_images(1, seed=3)[0], (640, 480), interpolation=cv2.INTER_LINEAR)
    boxes = np.array([[100.3, 50.7, 300.2, 420.9], [500, 300, 700, 520], [-30, -20, 90, 200],
                      [250.5, 100.25, 280.75, 160.125]])
    centres, sides = square_boxes(boxes)
    ref = np.stack([crop_cv2(frame, c, s) for c, s in zip(centres, sides)]).astype(np.float32)
    t = torch.from_numpy(frame).permute(2, 0, 1)
    out = crop_torch(t, centres, sides, normalize=False).permute(0, 2, 3, 1).numpy()
    diff = np.abs(out - ref)
    # cv2 uses 1/32-pixel fixed-point interpolation; grid_sample is exact bilinear
    assert diff.mean() < 0.5, diff.mean()
    assert np.percentile(diff, 99.9) < 4.0
    # normalised path equals normalise() of the cv2 crops within the same tolerance
    norm = crop_torch(t.unsqueeze(0), centres, sides, frame_index=[0, 0, 0, 0]).numpy()
    assert np.abs(norm - normalise(np.round(ref).astype(np.uint8))).mean() < 0.01


def test_crop_batch_outputs():
    frame = np.random.default_rng(1).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    img, info, centres, sides = crop_batch(frame, [[100, 50, 300, 450], [10, 10, 60, 60]])
    assert isinstance(img, torch.Tensor) and img.shape == (2, 3, 224, 224) and img.dtype == torch.float32
    assert info.shape == (2, 3)
    assert np.allclose(info[0].numpy(), [-0.42, 0.035, 6.0], atol=1e-6)
    assert centres.shape == (2, 2) and sides.shape == (2,)


@pytest.mark.parametrize("frame", [np.zeros((0, 10, 3), np.uint8), np.zeros((10, 10), np.uint8),
                                   np.zeros((10, 10, 3), np.float32)])
def test_crop_batch_rejects_bad_frames(frame):
    with pytest.raises(ValueError):
        crop_batch(frame, [[0, 0, 5, 5]])


def test_to_smpl_params_shapes_and_translation():
    b = 2
    rot = torch.eye(3).expand(b, 24, 3, 3).clone()
    rot[1, 0] = torch.tensor([[1.0, 0, 0], [0, -1.0, 0], [0, 0, -1.0]])  # 180 deg about X
    out = {"pred_pose": rot, "pred_shape": torch.zeros(b, 10), "pred_cam": torch.tensor([[0.8, 0.1, -0.2]] * b),
           "var_pose": torch.full((b, 24), 0.3)}
    p = to_smpl_params(out, np.array([[400.0, 300.0]] * b), np.array([250.0] * b), (640, 480))
    assert p["global_orient"].shape == (b, 3) and p["body_pose"].shape == (b, 69)
    assert p["betas"].shape == (b, 10) and p["joint_uncertainty"].shape == (b, 24)
    assert all(v.dtype == np.float32 for v in p.values())
    assert np.allclose(p["global_orient"][0], 0) and np.allclose(p["body_pose"], 0)
    assert np.allclose(np.abs(p["global_orient"][1]), [np.pi, 0, 0], atol=1e-5)
    assert np.allclose(p["transl"], [[0.9, 0.4, 8.0]] * b, atol=1e-5)
