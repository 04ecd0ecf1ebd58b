"""Regression tests from the numerical comparison with the official POCO code
(tools/check_official_equivalence.py, which needs a checkout of the official repository and so
does not run in CI). Only facts are pinned here: key names and shapes of the official state
dicts, parameter counts, the crop matrix construction, known preprocessing values."""
import cv2
import numpy as np
import pytest
import torch

from pipeline.models.heads import UncertHeadFeatPose, UncertHeadFeatPoseNet
from pipeline.models.preprocess import bbox_info, crop_affine, crop_batch, crop_cv2, focal_length

# Counted on the official networks built from configs/demo_poco_{cliff,pare}.yaml.
OFFICIAL_PARAMS = {"cliff": 79_393_253, "pare": 34_557_782}  # backbone + head + uncert_head
OFFICIAL_CLASSIFIER_PARAMS = 2048 * 1000 + 1000              # HRNet-W48 classifier, unused
OFFICIAL_KEYS = {"cliff": 1973, "pare": 1909}                # same parts, classifier excluded

OFFICIAL_SHAPES = {
    "cliff": {
        "backbone.conv1.weight": (64, 3, 3, 3),
        "backbone.incre_modules.0.0.conv1.weight": (32, 48, 1, 1),
        "backbone.incre_modules.3.0.downsample.0.weight": (1024, 384, 1, 1),
        "backbone.downsamp_modules.2.0.weight": (1024, 512, 3, 3),
        "backbone.downsamp_modules.2.0.bias": (1024,),
        "backbone.final_layer.0.weight": (2048, 1024, 1, 1),
        "backbone.final_layer.0.bias": (2048,),
        "backbone.stage4.2.fuse_layers.3.0.2.0.weight": (384, 48, 3, 3),
        "head.fc1.weight": (1024, 2048 + 3 + 144 + 10 + 3),
        "head.init_pose": (1, 144),
        "head.init_shape": (1, 10),
        "head.init_cam": (1, 3),
        "uncert_head.uncert_fc_poseNet.weight": (216, 216),
        "uncert_head.uncert_fc_featNet.weight": (216, 2048),
        "uncert_head.uncert_fc1.weight": (24, 432),
        "backbone.layer1.0.downsample.0.weight": (256, 64, 1, 1),
        "backbone.transition1.0.0.weight": (48, 256, 3, 3),
        "backbone.transition1.1.0.0.weight": (96, 256, 3, 3),
        "backbone.transition3.3.0.1.running_var": (384,),
        "backbone.stage3.3.fuse_layers.2.0.1.0.weight": (192, 48, 3, 3),
        "backbone.stage4.2.fuse_layers.3.0.0.0.weight": (48, 48, 3, 3),
        "backbone.stage4.2.fuse_layers.0.3.0.weight": (48, 384, 1, 1),
        "backbone.stage4.2.branches.3.3.bn2.bias": (384,),
        "backbone.incre_modules.0.0.downsample.0.weight": (128, 48, 1, 1),
        "backbone.incre_modules.3.0.conv3.weight": (1024, 256, 1, 1),
        "backbone.final_layer.1.running_mean": (2048,),
        "head.decpose.weight": (144, 1024),
    },
    "pare": {
        "backbone.final_layer.weight": (24, 32, 1, 1),
        "backbone.upsample_stage_2.1.weight": (64, 64, 3, 3),
        "backbone.upsample_stage_4.9.weight": (256, 256, 3, 3),
        "backbone.upsample_stage_4.10.running_var": (256,),
        "head.keypoint_deconv_layers.0.weight": (128, 480, 3, 3),
        "head.smpl_deconv_layers.4.running_mean": (128,),
        "head.keypoint_final_layer.weight": (25, 128, 1, 1),
        "head.smpl_final_layer.weight": (64, 128, 1, 1),
        "head.pose_mlp.weight": (1, 6, 128, 24, 1, 1),
        "head.shape_mlp.weight": (10, 24 * 64),
        "head.cam_mlp.weight": (3, 24 * 64),
        "head.temperature": (),
        "head.init_pose": (1, 144),
        "uncert_head.uncert_fc1.weight": (512, 24 * 128 + 216),
        "uncert_head.uncert_fc2.weight": (24, 512),
        "backbone.transition1.0.0.weight": (32, 256, 3, 3),
        "backbone.stage4.2.fuse_layers.0.3.0.weight": (32, 256, 1, 1),
    },
}


@pytest.mark.parametrize("variant", ["cliff", "pare"])
def test_state_dict_matches_official_layout(variant, request):
    model = request.getfixturevalue(f"{variant}_random")
    state = {f"{part}.{k}": v for part in ("backbone", "head", "uncert_head")
             for k, v in getattr(model, part).state_dict().items()}
    assert len(state) == OFFICIAL_KEYS[variant]
    for key, shape in OFFICIAL_SHAPES[variant].items():
        assert key in state, key
        assert tuple(state[key].shape) == shape, key
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_PARAMS[variant]
    assert not any(k.startswith("backbone.classifier") for k in state)
    assert not any("bias" in k for k in state if k.startswith("backbone.stage") and ".conv" in k)
    if variant == "pare":
        assert "head.pose_mlp.bias" not in state


def _official_three_point_matrix(centre, side, res=224):
    # facts of the official demo crop: float32 points centre, centre+(0,side/2), centre+(side/2,0)
    c = np.asarray(centre, np.float64)
    half = np.float32(side * 0.5)
    src = np.float32([c, c + (0.0, half), c + (half, 0.0)])
    dst = np.float32([[res / 2, res / 2], [res / 2, res], [res, res / 2]])
    return cv2.getAffineTransform(src, dst)


# boxes (centre, side) where the exact float64 matrix gave crops a few levels off the official
# ones (found on ultralytics' bus.jpg)
FRACTIONAL_BOXES = [((548.75959391, 489.87491781), 746.27404878),
                    ((442.40889389, 152.73792415), 884.11369033),
                    ((488.70454093, 1030.31098969), 598.96826479),
                    ((329.37, 621.61), 388.8)]


@pytest.mark.parametrize("centre,side", FRACTIONAL_BOXES)
def test_crop_is_pixel_identical_to_official_construction(centre, side):
    rng = np.random.default_rng(0)
    frame = cv2.GaussianBlur(rng.integers(0, 256, (1080, 810, 3), dtype=np.uint8), (0, 0), 1.0)
    frame[::37] = 255  # hard edges: where fixed-point rounding differences show
    m = crop_affine(centre, side, float32_points=True)
    assert np.array_equal(m, _official_three_point_matrix(centre, side))
    ref = cv2.warpAffine(frame, _official_three_point_matrix(centre, side), (224, 224),
                         flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    assert np.array_equal(crop_cv2(frame, centre, side), ref)
    # the exact geometric matrix stays available and differs only by float32 rounding
    assert np.allclose(crop_affine(centre, side), m, rtol=0, atol=1e-3)


def test_bbox_info_known_values_on_bus_sized_frame():
    # 810x1080 frame (bus.jpg), values the official calculate_bbox_info gives (float32)
    w, h = 810, 1080
    assert focal_length(w, h) == pytest.approx(1350.0)
    info = bbox_info([[121.5, 634.5]], [672.3], (w, h))
    f = 1350.0
    expected = np.float32([(121.5 - 405) / f * 2.8, (634.5 - 540) / f * 2.8, (672.3 - 0.24 * f) / (0.06 * f)])
    assert info.dtype == np.float32
    assert np.array_equal(info[0], expected)
    assert np.allclose(info[0], [-0.588, 0.196, 4.3], atol=1e-6)


def test_crop_batch_scale_one_is_the_official_demo_box():
    # official demo: box side = max(w, h) of the detector box, bbox_scale 1.0
    frame = np.zeros((1080, 810, 3), np.uint8)
    _, info, centres, sides = crop_batch(frame, [[48.6, 291.6, 243.0, 972.0]], scale=1.0)
    assert np.allclose(centres, [[145.8, 631.8]]) and np.allclose(sides, [680.4])
    assert np.allclose(info.numpy(), bbox_info(centres, sides, (810, 1080)))


def test_cliff_uncertainty_concat_order_feature_then_pose():
    head = UncertHeadFeatPoseNet(2048, 216)
    with torch.no_grad():
        for layer in (head.uncert_fc_poseNet, head.uncert_fc_featNet, head.uncert_fc1):
            layer.weight.zero_()
            layer.bias.zero_()
        head.uncert_fc_featNet.bias[0] = 3.0   # feature branch unit 0
        head.uncert_fc_poseNet.bias[0] = -3.0  # pose branch unit 0
        head.uncert_fc1.weight[0, 0] = 1.0     # input 0 = first feature unit (official order)
        head.uncert_fc1.weight[1, 216] = 1.0   # input 216 = first pose unit
    var = head(torch.zeros(1, 2048), torch.zeros(1, 24, 3, 3))
    sig = torch.sigmoid
    assert var[0, 0].item() == pytest.approx(sig(sig(torch.tensor(3.0))).item())
    assert var[0, 1].item() == pytest.approx(sig(sig(torch.tensor(-3.0))).item())
    assert var[0, 2].item() == pytest.approx(0.5)


def test_pare_uncertainty_input_is_features_then_rotmats():
    head = UncertHeadFeatPose(24 * 128, 512)
    with torch.no_grad():
        head.uncert_fc1.weight.zero_()
        head.uncert_fc1.bias.zero_()
        head.uncert_fc2.weight.zero_()
        head.uncert_fc2.bias.zero_()
        head.uncert_fc1.weight[0, 24 * 128] = 1.0  # first rotation-matrix entry follows the 3072 features
        head.uncert_fc2.weight[0, 0] = 1.0
    rot = torch.zeros(1, 24, 3, 3)
    rot[0, 0, 0, 0] = 2.0
    var = head(torch.zeros(1, 24 * 128), rot)
    sig = torch.sigmoid
    assert var[0, 0].item() == pytest.approx(sig(sig(torch.tensor(2.0))).item())
