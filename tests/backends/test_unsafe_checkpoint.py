"""`--allow-unsafe-checkpoint` is the one switch for full unpickling of POCO checkpoints, and it
reaches every backend (issue 21 item 3): torch loads through load_poco, and compile, cudagraph,
trt and onnx build their network through `network.build_network`, which now passes it on."""
from __future__ import annotations

import argparse
import ast
from pathlib import Path

import pytest

from pipeline.backends.base import BackendConfig

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def lightning_style_checkpoint(tmp_path_factory):
    """Real POCO-PARE weights plus a pickled argparse.Namespace, as training scripts save them:
    harmless, but weights_only refuses it."""
    import torch

    from pipeline.testing.checkpoints import build_random_model, official_state_dict

    path = tmp_path_factory.mktemp("ckpt") / "poco_pare.pt"
    model = build_random_model("pare", calibrate_bn=False)
    torch.save({"state_dict": official_state_dict(model), "hparams": argparse.Namespace(lr=1e-4)}, path)
    return path


def test_build_network_unpickles_only_when_asked(lightning_style_checkpoint, tmp_path):
    from pipeline.backends.network import build_network
    from pipeline.models.checkpoint import CheckpointError

    cfg = BackendConfig(model="pare", checkpoint=str(lightning_style_checkpoint), device="cpu",
                        cache_dir=str(tmp_path))
    with pytest.raises(CheckpointError, match="allow_unsafe_checkpoint.*--allow-unsafe-checkpoint"):
        build_network(cfg)
    cfg.options["allow_unsafe_checkpoint"] = True
    net = build_network(cfg)
    assert net.untrained is False and net.checkpoint_path == str(lightning_style_checkpoint)


def test_every_compiled_backend_builds_through_build_network():
    for name in ("compile", "cudagraph", "trt", "onnx"):
        tree = ast.parse((REPO / "pipeline/backends" / f"{name}.py").read_text())
        calls = {ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
        assert "net.build_network" in calls, f"backend {name} loads its network some other way"
        assert not {c for c in calls if c.endswith(("load_poco", "torch.load", "read_checkpoint"))}, name


def test_the_inference_worker_passes_its_flag_to_the_backend(lightning_style_checkpoint, tmp_path):
    """workers.inference.params.allow_unsafe_checkpoint wins over anything in backend_options."""
    from worker_probe import inference_backend_config

    for flag, options in ((False, {"allow_unsafe_checkpoint": True}), (True, {})):
        config = inference_backend_config(tmp_path, model="poco-pare", checkpoint=str(lightning_style_checkpoint),
                                          allow_unsafe_checkpoint=flag, backend_options=options)
        assert config.options["allow_unsafe_checkpoint"] is flag
