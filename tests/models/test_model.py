"""Architecture facts (parameter counts, official key names) and forward-pass behaviour."""
import numpy as np
import pytest
import torch

from pipeline.models import load_poco, param_count
from pipeline.models.init import synthetic_images
from pipeline.models.preprocess import bbox_info, normalise
from pipeline.testing import official_state_dict

# flow_head.cond_layer: Linear(2048 -> 512) for CLIFF, Linear(3072 -> 512) for PARE
COND_LAYER = {"cliff": 2048 * 512 + 512, "pare": 3072 * 512 + 512}


def _weights_numel(state):
    """Learned numbers in a state dict (no BN running stats, no SMPL buffers/params)."""
    return sum(v.numel() for k, v in state.items()
               if not k.startswith("smpl.") and "running_" not in k and "num_batches" not in k
               and not k.endswith(("init_pose", "init_shape", "init_cam", "temperature", "flow.mask")))


def test_cliff_parameter_counts(cliff_random):
    n = param_count(cliff_random)
    assert n == 79_393_253
    # official inference forward also evaluates flow_head.cond_layer (output unused): ~80.4 M
    assert abs(n + COND_LAYER["cliff"] - 80.4e6) < 0.05e6
    assert abs(_weights_numel(official_state_dict(cliff_random)) - 82.6e6) < 0.05e6


def test_pare_parameter_counts(pare_random):
    n = param_count(pare_random)
    assert n == 34_557_782
    assert abs(_weights_numel(official_state_dict(pare_random)) - 36.6e6) < 0.05e6


# Official key names and shapes: tests/models/test_official_constants.py (one table).


def _inputs(n, seed=0):
    img = torch.from_numpy(normalise(synthetic_images(n, seed=seed)))
    rng = np.random.default_rng(seed)
    info = torch.from_numpy(bbox_info(rng.uniform(200, 900, (n, 2)), rng.uniform(150, 600, n), (1280, 720)))
    return img, info


@pytest.fixture(scope="module", params=["cliff", "pare"])
def calibrated(request):
    return load_poco(request.param, checkpoint=None, seed=0)   # random init, BN calibrated


def test_forward_shapes_ranges_determinism_and_batching(calibrated):
    # few forward passes: CLIFF is slow on the shared 2-core CI box (tools/device/NOTES.md)
    model = calibrated
    assert model.untrained is True and not model.training
    img, info = _inputs(2)
    with torch.inference_mode():
        out = model(img, info)
        singles = [model(img[i:i + 1], info[i:i + 1]) for i in (0, 1)]
        repeat = model(img[:1], info[:1])
        shifted = model(img[:1], info[:1] + 0.5)
    assert out["pred_pose"].shape == (2, 24, 3, 3)
    assert out["pred_shape"].shape == (2, 10) and out["pred_cam"].shape == (2, 3)
    assert out["var_pose"].shape == (2, 24)
    for v in out.values():
        assert torch.isfinite(v).all()
    assert ((out["var_pose"] > 0) & (out["var_pose"] < 1)).all()
    r = out["pred_pose"]
    assert torch.allclose(r.transpose(-1, -2) @ r, torch.eye(3).expand_as(r), atol=1e-5)
    assert torch.allclose(torch.linalg.det(r), torch.ones(2, 24), atol=1e-5)
    # batch of N == N batches of 1
    for i, single in enumerate(singles):
        for k in out:
            assert torch.allclose(out[k][i:i + 1], single[k], atol=2e-4, rtol=1e-4), k
    # determinism: the same input gives bit-identical output
    for k in repeat:
        assert torch.equal(repeat[k], singles[0][k])
    # bbox_info feeds the CLIFF regressor only
    changed = not torch.allclose(shifted["pred_cam"], repeat["pred_cam"])
    assert changed == (model.variant == "cliff")


def test_random_init_is_reproducible_with_seed():
    a = load_poco("pare", seed=3, calibrate_bn=False)
    b = load_poco("pare", seed=3, calibrate_bn=False)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
