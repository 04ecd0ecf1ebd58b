"""Random-initialised POCO checkpoints in the official trainer's key layout.

`make_checkpoint` writes what `torch.save(POCO.state_dict())` of the official trainer would
contain: backbone.* (incl. the unused HRNet-W48 classifier for CLIFF and the pose-HRNet
final_layer for PARE), head.*, uncert_head.*, flow_head.* (conditional RealNVP with its
cond_layer: CLIFF 1 flow layer, PARE 3, context 512, 9 random variables) and a few smpl.smpl.*
entries. BatchNorm statistics are calibrated on synthetic images so fp16 does not overflow.
"""
from __future__ import annotations

import os
from pathlib import Path


from pipeline.models.init import synthetic_images  # noqa: F401  (re-exported for tests)

FORMATS = ("raw", "model", "state_dict", "prefixed")
_FLOW_LAYERS = {"cliff": 1, "pare": 3}
_CONTEXT_DIM = 512
_NUM_NF_RV = 9
_FLOW_HIDDEN = 64


def build_random_model(variant: str, seed: int = 0, calibrate_bn: bool = True, mean_params=None):
    """A random-initialised PocoModel (eval mode) with official-style init."""
    import torch

    from pipeline.models.init import calibrate_batchnorm, official_init
    from pipeline.models.mean_params import load_mean_params
    from pipeline.models.poco import PocoModel

    torch.manual_seed(seed)
    model = PocoModel(variant)
    official_init(model)
    model.set_mean_params(load_mean_params(mean_params))
    if calibrate_bn:
        calibrate_batchnorm(model, seed=seed)
    return model.eval()


def _flow_head_state(variant: str, context_in: int, gen) -> dict:
    import torch

    layers = _FLOW_LAYERS[variant]
    rows = []
    for _ in range(layers):  # "alter" masks, two rows per flow layer
        rows.append([i % 2 for i in range(_NUM_NF_RV)])
        rows.append([(i + 1) % 2 for i in reversed(range(_NUM_NF_RV))])
    state = {
        "flow_head.cond_layer.weight": torch.randn(_CONTEXT_DIM, context_in, generator=gen) * 0.01,
        "flow_head.cond_layer.bias": torch.zeros(_CONTEXT_DIM),
        "flow_head.flow.mask": torch.tensor(rows, dtype=torch.float32),
    }
    dims = [(_NUM_NF_RV + _CONTEXT_DIM, _FLOW_HIDDEN), (_FLOW_HIDDEN, _FLOW_HIDDEN), (_FLOW_HIDDEN, _NUM_NF_RV)]
    for net in ("t", "s"):
        for i in range(2 * layers):
            for idx, (din, dout) in zip((0, 2, 4), dims):
                state[f"flow_head.flow.{net}.{i}.{idx}.weight"] = torch.randn(dout, din, generator=gen) * 0.01
                state[f"flow_head.flow.{net}.{i}.{idx}.bias"] = torch.zeros(dout)
    return state


def _smpl_state() -> dict:
    """The small entries of the trainer's SMPL layer (`smpl.smpl.*`); the big buffers
    (shapedirs, posedirs, ...) are left out to keep test files small — the loader ignores
    the whole `smpl.` prefix anyway."""
    import torch

    return {
        "smpl.smpl.betas": torch.zeros(1, 10),
        "smpl.smpl.global_orient": torch.zeros(1, 3),
        "smpl.smpl.body_pose": torch.zeros(1, 69),
        "smpl.smpl.parents": torch.tensor([-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14,
                                           16, 17, 18, 19, 20, 21]),
        "smpl.smpl.J_regressor_extra": torch.zeros(9, 6890),
    }


def official_state_dict(model, seed: int = 0) -> dict:
    """The model's weights plus every extra key the official trainer's state dict holds."""
    import torch

    gen = torch.Generator().manual_seed(seed + 1)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    if model.variant == "cliff":
        state["backbone.classifier.weight"] = torch.randn(1000, 2048, generator=gen) * 0.01
        state["backbone.classifier.bias"] = torch.zeros(1000)
        context_in = 2048
    else:
        context_in = 24 * 128
    state.update(_flow_head_state(model.variant, context_in, gen))
    state.update(_smpl_state())
    return state


def wrap(state: dict, fmt: str):
    if fmt == "raw":
        return state
    if fmt == "model":
        return {"model": state}
    if fmt == "state_dict":
        return {"state_dict": state, "epoch": 0}
    if fmt == "prefixed":
        # Lightning layout: network under `model.`, plus trainer buffers outside it
        inner = {f"model.{k}": v for k, v in state.items()}
        import torch
        inner["J_regressor"] = torch.zeros(17, 6890)
        return {"state_dict": inner, "epoch": 0, "global_step": 0}
    raise ValueError(f"unknown checkpoint format {fmt!r}; allowed: {', '.join(FORMATS)}")


def make_checkpoint(variant: str, path: str | os.PathLike, format: str = "raw", calibrate_bn: bool = True,
                    seed: int = 0, model=None) -> Path:
    """Write a random-initialised POCO checkpoint (official key names) to `path`.

    Pass `model` (from `build_random_model`) to write several formats of the same weights
    without rebuilding. Returns the path.
    """
    import torch

    if format not in FORMATS:
        raise ValueError(f"unknown checkpoint format {format!r}; allowed: {', '.join(FORMATS)}")
    if model is None:
        model = build_random_model(variant, seed=seed, calibrate_bn=calibrate_bn)
    elif model.variant != variant:
        raise ValueError(f"model is POCO-{model.variant}, asked for {variant}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(wrap(official_state_dict(model, seed), format), path)
    return path
