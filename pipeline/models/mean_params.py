"""SMPL mean parameters that seed the regressors (`init_pose/init_shape/init_cam` buffers).

With a checkpoint the buffers come from the checkpoint itself (`head.init_*`). For random
init they come from `data/smpl_mean_params.npz` when it exists (keys `pose` 144, `shape` 10,
`cam` 3), otherwise from the documented defaults below.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def default_mean_params() -> dict[str, np.ndarray]:
    """Stand-in when no mean-parameter file exists (only matters for untrained weights).

    pose: every joint at identity in the 6D layout of `rot6d_to_rotmat` ([1,0,0,1,0,0]),
    except the root, which is rotated 180 degrees about X ([1,0,0,-1,0,0]) so the body stands
    upright facing the camera in image coordinates (y down), as the real mean pose does.
    shape: zeros (mean body). cam: [0.9, 0, 0] (person fills ~90% of the crop, centred).
    """
    pose = np.tile(np.array([1, 0, 0, 1, 0, 0], np.float32), 24)
    pose[:6] = [1, 0, 0, -1, 0, 0]
    return {"pose": pose, "shape": np.zeros(10, np.float32), "cam": np.array([0.9, 0.0, 0.0], np.float32)}


def load_mean_params(path: str | Path | None) -> dict[str, np.ndarray]:
    if path is None or not Path(path).is_file():
        return default_mean_params()
    try:
        with np.load(path, allow_pickle=False) as data:
            params = {k: np.asarray(data[k], np.float32).reshape(-1) for k in ("pose", "shape", "cam")}
    except (KeyError, ValueError, OSError) as exc:
        raise ValueError(
            f"{path}: not a valid SMPL mean-parameter file (need arrays pose[144], shape[10], cam[3]): {exc}"
        ) from exc
    expected = {"pose": 144, "shape": 10, "cam": 3}
    for key, size in expected.items():
        if params[key].size != size:
            raise ValueError(f"{path}: '{key}' has {params[key].size} values, expected {size}")
    log.debug("SMPL mean parameters from %s", path)
    return params
