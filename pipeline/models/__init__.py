"""POCO models (CLIFF and PARE variants), pre/post-processing and optional SMPL (architecture.md §6).

    from pipeline.models import load_poco, crop_batch, to_smpl_params
    model = load_poco("cliff", checkpoint="data/poco_cliff.pt", device="cpu")
    img, info, centres, sides = crop_batch(frame_rgb, boxes_xyxy)
    out = model(img, info)
    params = to_smpl_params(out, centres, sides, (W, H))

torch is imported only when a function that needs it is called.

May import: torch, numpy, smplx and `pipeline.pose`. Never backends, rings or workers.
"""
from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

VARIANTS = ("cliff", "pare")
_ALIASES = {"cliff": "cliff", "poco-cliff": "cliff", "pare": "pare", "poco-pare": "pare"}
DEFAULT_MEAN_PARAMS = "<data_dir>/smpl_mean_params.npz"   # in the pipeline's default data folder


def normalise_variant(name: str) -> str:
    key = str(name).strip().lower()
    if key not in _ALIASES:
        raise ValueError(f"unknown POCO model {name!r}; allowed: cliff, pare (or poco-cliff, poco-pare)")
    return _ALIASES[key]


def load_poco(variant: str = "cliff", checkpoint: str | os.PathLike | None = None, device="cpu",
              mean_params: str | os.PathLike | None = DEFAULT_MEAN_PARAMS,
              allow_unsafe_checkpoint: bool = False, calibrate_bn: bool = True, seed: int | None = None):
    """Build POCO-CLIFF or POCO-PARE in eval mode on `device`.

    checkpoint=None -> random init (official init scheme; `seed` makes it reproducible),
    `model.untrained = True`, BatchNorm statistics calibrated on one small batch of synthetic
    images unless `calibrate_bn=False` (so fp16 stays finite), mean parameters from
    `mean_params` when that file exists, else documented defaults
    (pipeline.models.mean_params). With a
    checkpoint every part is loaded strictly (CheckpointError otherwise) and the mean
    parameters are the checkpoint's own `head.init_*` buffers.
    """
    import torch

    from pipeline.models.checkpoint import load_into, read_checkpoint
    from pipeline.models.mean_params import load_mean_params
    from pipeline.models.poco import PocoModel

    variant = normalise_variant(variant)
    if mean_params == DEFAULT_MEAN_PARAMS:
        from pipeline.config import default_data_dir

        mean_params = default_data_dir() / "smpl_mean_params.npz"
    if seed is not None:
        torch.manual_seed(seed)
    model = PocoModel(variant)
    if checkpoint is None:
        from pipeline.models.init import calibrate_batchnorm, official_init

        official_init(model)
        model.set_mean_params(load_mean_params(mean_params))
        if calibrate_bn:
            calibrate_batchnorm(model, batches=1, batch_size=2, seed=0 if seed is None else seed)
        log.warning("POCO-%s runs with RANDOM (untrained) weights: poses are meaningless. "
                    "Put the official checkpoint at data/poco_%s.pt to get real poses.",
                    variant.upper(), variant)
    else:
        state = read_checkpoint(checkpoint, allow_unsafe_checkpoint=allow_unsafe_checkpoint)
        load_into(model, state, checkpoint)
        model.untrained = False
        model.checkpoint_path = str(checkpoint)
        log.info("POCO-%s weights loaded from %s", variant.upper(), checkpoint)
    model.eval()
    model.to(torch.device(device))
    return model


def param_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def __getattr__(name: str):
    # light, lazy re-exports so `import pipeline.models` does not pull in torch
    if name in ("crop_batch", "square_boxes", "bbox_info", "focal_length", "crop_cv2", "crop_torch",
                "crop_affine", "normalise"):
        from pipeline.models import preprocess
        return getattr(preprocess, name)
    if name == "to_smpl_params":
        from pipeline.models.postprocess import to_smpl_params
        return to_smpl_params
    if name == "CheckpointError":
        from pipeline.models.checkpoint import CheckpointError
        return CheckpointError
    if name in ("load_smpl", "SmplLayer", "smpl_joints", "smpl_vertices"):
        from pipeline.models import smpl
        return getattr(smpl, name)
    raise AttributeError(f"module 'pipeline.models' has no attribute {name!r}")
