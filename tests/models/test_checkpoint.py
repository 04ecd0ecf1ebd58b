"""Strict checkpoint loading in every wrapper format, and a clear error for each bad file."""
import pickle

import pytest
import torch

from pipeline.models import load_poco
from pipeline.models.checkpoint import CheckpointError, load_into, unwrap_state_dict
from pipeline.models.poco import PocoModel
from pipeline.testing import make_checkpoint, official_state_dict


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def pare_file(pare_random, ckpt_dir):
    return make_checkpoint("pare", ckpt_dir / "pare_raw.pt", "raw", model=pare_random)


@pytest.mark.parametrize("fmt", ["raw", "model", "state_dict", "prefixed"])
def test_pare_all_formats_load_strictly(pare_random, ckpt_dir, fmt, pare_file):
    path = pare_file if fmt == "raw" else make_checkpoint("pare", ckpt_dir / f"pare_{fmt}.pt", fmt, model=pare_random)
    model = load_poco("pare", checkpoint=path)
    assert model.untrained is False and model.variant == "pare" and not model.training
    assert _same_weights(model, pare_random)
    if fmt != "raw":
        path.unlink()


@pytest.mark.parametrize("fmt", ["raw", "prefixed"])
def test_cliff_formats_load_strictly(cliff_random, ckpt_dir, fmt):
    path = make_checkpoint("cliff", ckpt_dir / f"cliff_{fmt}.pt", fmt, model=cliff_random)
    model = load_poco("poco-cliff", checkpoint=path)
    assert model.untrained is False and model.variant == "cliff"
    assert _same_weights(model, cliff_random)
    # the mean parameters are the checkpoint's head.init_* buffers
    assert torch.equal(model.head.init_pose, cliff_random.head.init_pose)
    path.unlink()


def test_official_extras_present_and_ignored(cliff_random):
    state = official_state_dict(cliff_random)
    for key in ("backbone.classifier.weight", "flow_head.cond_layer.weight", "flow_head.flow.s.1.4.bias",
                "smpl.smpl.betas"):
        assert key in state
    load_into(cliff_random, state, "mem")  # strict per part, extras ignored on purpose


@pytest.fixture(scope="module")
def pare_state(pare_random):
    return official_state_dict(pare_random)


@pytest.fixture(scope="module")
def pare_target():
    return PocoModel("pare")


def test_wrong_variant_names_the_right_flag(pare_file):
    with pytest.raises(CheckpointError) as err:
        load_poco("cliff", checkpoint=pare_file)
    msg = str(err.value)
    assert "POCO-PARE checkpoint" in msg and "--model poco-pare" in msg and str(pare_file) in msg


def test_missing_keys_rejected_without_partial_load(pare_state, pare_target):
    state = dict(pare_state)
    del state["head.cam_mlp.bias"]
    target = pare_target
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        load_into(target, state, "some/file.pt")
    assert "missing" in str(err.value) and "head.cam_mlp.bias" in str(err.value) and "some/file.pt" in str(err.value)
    after = target.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # backbone was not loaded either


def test_shape_mismatch_rejected(pare_state, pare_target):
    state = dict(pare_state)
    state["uncert_head.uncert_fc1.weight"] = torch.zeros(256, 3288)
    with pytest.raises(CheckpointError, match="shape mismatch.*uncert_head.uncert_fc1.weight"):
        load_into(pare_target, state, "x.pt")


def test_unexpected_keys_rejected(pare_state, pare_target):
    state = dict(pare_state)
    state["head.extra_layer.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match="unexpected"):
        load_into(pare_target, state, "x.pt")


def test_not_a_poco_checkpoint(pare_target):
    with pytest.raises(CheckpointError, match="not a POCO checkpoint"):
        load_into(pare_target, {"conv.weight": torch.zeros(1)}, "x.pt")


def test_truncated_file(tmp_path):
    path = tmp_path / "t.pt"
    torch.save({"head.fc1.weight": torch.randn(300, 300)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated") as err:
        load_poco("cliff", checkpoint=path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("content", [b"hello, this is not a checkpoint\n", b"\x00\x01\x02garbage" * 10])
def test_not_a_torch_file(tmp_path, content):
    path = tmp_path / "x.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint") as err:
        load_poco("pare", checkpoint=path)
    assert str(path) in str(err.value)


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "e.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_poco("pare", checkpoint=empty)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_poco("pare", checkpoint=tmp_path / "nope.pt")


class _Custom:
    pass


def test_unsafe_pickle_refused_with_opt_in_named(tmp_path):
    path = tmp_path / "u.pt"
    torch.save({"state_dict": {"head.fc1.weight": torch.zeros(1)}, "obj": _Custom()}, path, pickle_module=pickle)
    with pytest.raises(CheckpointError, match="allow_unsafe_checkpoint=True"):
        load_poco("cliff", checkpoint=path)


def test_non_tensor_values_rejected():
    with pytest.raises(CheckpointError, match="not tensors"):
        unwrap_state_dict({"head.fc1.weight": [1, 2, 3]}, "x.pt")


def test_unknown_variant_name():
    with pytest.raises(ValueError, match="allowed"):
        load_poco("hmr")
