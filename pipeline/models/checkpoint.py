"""Loading official POCO checkpoints into `PocoModel`, strictly, with errors that say what to do.

Accepted layouts: the trainer's raw `POCO.state_dict()`, a dict holding it under `model` and/or
`state_dict`, and keys carrying a `model.` prefix (PyTorch Lightning). Parts `backbone`, `head`
and `uncert_head` are each loaded with strict=True. Ignored on purpose: `flow_head.*`
(training-only normalising flow and its `cond_layer`), `smpl.*` (SMPL layer buffers; SMPL is a
separate step, see pipeline.models.smpl) and the unused HRNet classifier `backbone.classifier.*`.
"""
from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)

LOADED_PARTS = ("backbone", "head", "uncert_head")
IGNORED_PARTS = ("flow_head", "smpl")
# keys that the official loader adds at top level (mean params) and never uses
_IGNORED_TOP_LEVEL = ("init_pose", "init_shape", "init_cam")
_MODEL_FLAG = {"cliff": "poco-cliff", "pare": "poco-pare"}


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file and the fix."""


def read_checkpoint(path: str | os.PathLike, allow_unsafe_checkpoint: bool = False) -> dict:
    """torch.load the file (weights_only unless opted out) and return the flat state dict."""
    import torch

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist; put the POCO weights there or run "
                              f"without a checkpoint for untrained (random) weights")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a file")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): the download or copy failed; "
                              f"fetch the file again")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    is_zip_magic = magic.startswith(b"PK\x03\x04")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not allow_unsafe_checkpoint)
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        # torch files are zip archives (or, legacy, a pickle starting with protocol byte 0x80)
        looks_like_torch = is_zip_magic or magic[:1] == b"\x80"
        if looks_like_torch and ("Unsupported global" in msg or "Weights only load failed" in msg):
            raise CheckpointError(
                f"checkpoint {path} contains Python objects beyond plain tensors, which could run code "
                f"when loaded; refusing. If you trust this file, pass allow_unsafe_checkpoint=True "
                f"(CLI: --allow-unsafe-checkpoint). Official POCO files are plain state dicts and do not "
                f"need it. ({msg.splitlines()[0]})") from exc
        raise CheckpointError(f"checkpoint {path} is not a PyTorch checkpoint ({msg.splitlines()[0]}); "
                              f"expected a .pt file saved with torch.save") from exc
    except Exception as exc:  # torch.load raises many types (KeyError, RuntimeError, ...) on bad bytes
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if is_zip_magic or isinstance(exc, EOFError):
            raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({size} bytes; {first}); "
                                  f"fetch the file again") from exc
        raise CheckpointError(f"checkpoint {path} is not a PyTorch checkpoint ({first}); "
                              f"expected a .pt file saved with torch.save") from exc
    return unwrap_state_dict(obj, path)


def unwrap_state_dict(obj, path: str | os.PathLike = "<memory>") -> dict:
    """Unwrap `{'model': ...}` then `{'state_dict': ...}`, drop a `model.` prefix."""
    import torch

    if not isinstance(obj, Mapping):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, not a state dict")
    for wrapper in ("model", "state_dict"):
        inner = obj.get(wrapper)
        if isinstance(inner, Mapping):
            obj = inner
    if any(isinstance(k, str) and k.startswith("model.") for k in obj):
        # Lightning checkpoints: the network lives under `model.`; other keys belong to the trainer
        others = [k for k in obj if not str(k).startswith("model.")]
        if others:
            log.debug("%s: ignoring %d trainer keys outside 'model.'", path, len(others))
        obj = {k[len("model."):]: v for k, v in obj.items() if str(k).startswith("model.")}
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"checkpoint {path} is not a state dict: entries {bad[:5]} are not tensors")
    if not obj:
        raise CheckpointError(f"checkpoint {path} holds an empty state dict")
    return dict(obj)


def detect_variant(state: Mapping) -> str | None:
    """'cliff' / 'pare' from the key layout, None if it is neither."""
    if "head.fc1.weight" in state or any(k.startswith("backbone.incre_modules.") for k in state):
        return "cliff"
    if "head.pose_mlp.weight" in state or any(k.startswith("backbone.upsample_stage_") for k in state):
        return "pare"
    return None


def split_parts(state: Mapping, path) -> dict[str, dict]:
    parts: dict[str, dict] = {p: {} for p in LOADED_PARTS}
    unknown = []
    for key, value in state.items():
        prefix, _, rest = key.partition(".")
        if prefix in parts and rest:
            parts[prefix][rest] = value
        elif prefix in IGNORED_PARTS or key in _IGNORED_TOP_LEVEL:
            continue
        else:
            unknown.append(key)
    if unknown:
        log.warning("%s: ignoring %d keys outside backbone/head/uncert_head/flow_head/smpl: %s",
                    path, len(unknown), ", ".join(unknown[:5]))
    return parts


def load_into(model, state: Mapping, path: str | os.PathLike = "<memory>") -> None:
    """Load `state` (already unwrapped) into a PocoModel, each part strictly."""
    variant = detect_variant(state)
    if variant is None:
        raise CheckpointError(
            f"checkpoint {path} is not a POCO checkpoint: none of the POCO-CLIFF (head.fc1, "
            f"backbone.incre_modules) or POCO-PARE (head.pose_mlp, backbone.upsample_stage_*) keys found; "
            f"first keys: {list(state)[:5]}")
    if variant != model.variant:
        raise CheckpointError(
            f"checkpoint {path} is a POCO-{variant.upper()} checkpoint but the model is "
            f"POCO-{model.variant.upper()}; use --model {_MODEL_FLAG[variant]} (or load_poco({variant!r}, ...))")
    parts = split_parts(state, path)
    if variant == "cliff":
        for k in model.backbone.IGNORED_KEYS:
            parts["backbone"].pop(k, None)
    for name in LOADED_PARTS:
        module = getattr(model, name)
        given = parts[name]
        expected = module.state_dict()
        missing = [k for k in expected if k not in given]
        unexpected = [k for k in given if k not in expected]
        mismatched = [f"{k}: file {tuple(given[k].shape)} vs model {tuple(v.shape)}"
                      for k, v in expected.items() if k in given and tuple(given[k].shape) != tuple(v.shape)]
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing keys (e.g. {', '.join(name + '.' + k for k in missing[:4])})")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected keys (e.g. "
                            f"{', '.join(name + '.' + k for k in unexpected[:4])})")
        if mismatched:
            problems.append(f"{len(mismatched)} shape mismatches (e.g. {'; '.join(name + '.' + m for m in mismatched[:3])})")
        if problems:
            raise CheckpointError(
                f"checkpoint {path} does not fit POCO-{variant.upper()} part '{name}': " + "; ".join(problems)
                + ". The file is not an official POCO release checkpoint or is damaged; nothing was loaded "
                  "partially.")
    for name in LOADED_PARTS:
        getattr(model, name).load_state_dict(parts[name], strict=True)
