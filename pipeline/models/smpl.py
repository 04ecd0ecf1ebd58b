"""Optional SMPL step (smplx): joints and vertices from predicted parameters.

The SMPL files are licensed and never shipped. Without `data/smpl/SMPL_NEUTRAL.pkl` the
pipeline still runs (skeleton instead of mesh); `load_smpl` then returns None and says once
what to put where.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

_warned: set[str] = set()


class SmplLayer:
    """Thin wrapper around smplx.SMPL (neutral, 10 betas) returning camera-frame outputs."""

    def __init__(self, model_file: Path, j_regressor_extra: np.ndarray | None = None,
                 mean_params: dict | None = None, device="cpu"):
        import smplx
        import torch

        self.model_file = Path(model_file)
        self.device = torch.device(device)
        self.smpl = smplx.SMPL(model_path=str(self.model_file), gender="neutral", num_betas=10,
                               create_transl=False, create_betas=False, create_global_orient=False,
                               create_body_pose=False).to(self.device).eval()
        self.faces = np.asarray(self.smpl.faces, dtype=np.int64)
        self.j_regressor_extra = None
        if j_regressor_extra is not None:
            self.j_regressor_extra = torch.as_tensor(j_regressor_extra, dtype=torch.float32, device=self.device)
        self.mean_params = mean_params

    def _forward(self, params: dict):
        import torch

        def t(key, width):
            x = torch.as_tensor(np.asarray(params[key]), dtype=torch.float32, device=self.device)
            return x.reshape(-1, width)

        with torch.inference_mode():
            out = self.smpl(global_orient=t("global_orient", 3), body_pose=t("body_pose", 69),
                            betas=t("betas", 10), pose2rot=True)
            transl = t("transl", 3)[:, None, :] if "transl" in params else 0.0
            return out, transl

    def joints(self, params: dict) -> np.ndarray:
        """(B,24,3) SMPL kinematic joints in the camera frame (metres), transl added."""
        out, transl = self._forward(params)
        return (out.joints[:, :24] + transl).cpu().numpy().astype(np.float32)

    def vertices(self, params: dict) -> np.ndarray:
        """(B,6890,3) mesh vertices in the camera frame (metres), transl added."""
        out, transl = self._forward(params)
        return (out.vertices + transl).cpu().numpy().astype(np.float32)

    def extra_joints(self, params: dict) -> np.ndarray | None:
        """Joints from `J_regressor_extra.npy` (e.g. H36M-style), or None when that file is absent."""
        if self.j_regressor_extra is None:
            return None
        import torch

        verts = torch.as_tensor(self.vertices(params), device=self.device)
        return torch.einsum("jv,bvc->bjc", self.j_regressor_extra, verts).cpu().numpy()


def smpl_joints(layer: SmplLayer, params: dict) -> np.ndarray:
    return layer.joints(params)


def smpl_vertices(layer: SmplLayer, params: dict) -> np.ndarray:
    return layer.vertices(params)


def load_smpl(data_dir: str | os.PathLike = "data", device="cpu") -> SmplLayer | None:
    """SMPL layer from `<data_dir>/smpl/SMPL_NEUTRAL.pkl` (+ optional J_regressor_extra.npy and
    smpl_mean_params.npz), or None with a single log line when the model file is missing."""
    data_dir = Path(data_dir)
    model_file = data_dir / "smpl" / "SMPL_NEUTRAL.pkl"
    if not model_file.is_file():
        key = str(model_file.resolve())
        if key not in _warned:
            _warned.add(key)
            log.warning("SMPL model not found at %s: meshes and SMPL joints are unavailable (skeleton only). "
                        "To enable them, place the licensed SMPL_NEUTRAL.pkl there (optionally also "
                        "%s and %s).", model_file, data_dir / "J_regressor_extra.npy",
                        data_dir / "smpl_mean_params.npz")
        return None
    extra = None
    extra_file = data_dir / "J_regressor_extra.npy"
    if extra_file.is_file():
        extra = np.load(extra_file, allow_pickle=False)
        if extra.ndim != 2 or extra.shape[1] != 6890:
            raise ValueError(f"{extra_file}: expected a (J, 6890) joint regressor, got {extra.shape}")
    mean = None
    mean_file = data_dir / "smpl_mean_params.npz"
    if mean_file.is_file():
        from pipeline.models.mean_params import load_mean_params
        mean = load_mean_params(mean_file)
    try:
        return SmplLayer(model_file, extra, mean, device=device)
    except Exception as exc:  # smplx raises assorted errors on bad files
        raise ValueError(f"{model_file}: could not be loaded as an SMPL model ({type(exc).__name__}: {exc}); "
                         f"use the official SMPL_NEUTRAL.pkl (v1.0/1.1, chumpy-free)") from exc
