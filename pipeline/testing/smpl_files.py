"""Synthetic SMPL model files with the real structure, shapes and dtypes (values are made up)."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

N_VERTS, N_JOINTS, N_FACES = 6890, 24, 13776
# SMPL kinematic tree (parent of each joint; the root's parent is stored as 2**32-1 as in the real file)
SMPL_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]


def _synthetic_body(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Joint rest positions of a ~1.7 m person (pelvis at origin, y up) and vertices scattered
    around the bones, each vertex attached to the joint it was placed near."""
    joints = np.array([
        [0, 0, 0], [0.06, -0.09, 0], [-0.06, -0.09, 0], [0, 0.11, 0], [0.1, -0.47, 0], [-0.1, -0.47, 0],
        [0, 0.25, 0], [0.09, -0.87, -0.03], [-0.09, -0.87, -0.03], [0, 0.3, 0.02], [0.11, -0.92, 0.1],
        [-0.11, -0.92, 0.1], [0, 0.5, 0], [0.08, 0.41, 0], [-0.08, 0.41, 0], [0, 0.57, 0.05],
        [0.18, 0.44, 0], [-0.18, 0.44, 0], [0.43, 0.43, 0], [-0.43, 0.43, 0], [0.68, 0.43, 0],
        [-0.68, 0.43, 0], [0.77, 0.43, 0], [-0.77, 0.43, 0],
    ], np.float64)
    owner = rng.integers(0, N_JOINTS, N_VERTS)
    verts = joints[owner] + rng.normal(0.0, 0.04, (N_VERTS, 3))
    return joints, verts, owner


def make_synthetic_smpl(directory: str | os.PathLike, seed: int = 0, num_shape: int = 10,
                        sparse_regressor: bool = True) -> Path:
    """Write `<directory>/SMPL_NEUTRAL.pkl` that smplx loads like the real model file.

    Plain numpy / scipy.sparse arrays (no chumpy): v_template (6890,3), shapedirs (6890,3,num_shape),
    posedirs (6890,3,207), J_regressor (24,6890) csc sparse (or dense), weights (6890,24),
    kintree_table (2,24) uint32, f (13776,3) uint32, J (24,3). Returns the file path.
    """
    rng = np.random.default_rng(seed)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    joints, verts, owner = _synthetic_body(rng)
    # each joint regressed as the mean of the vertices placed around it
    reg = np.zeros((N_JOINTS, N_VERTS), np.float64)
    reg[owner, np.arange(N_VERTS)] = 1.0
    reg /= reg.sum(axis=1, keepdims=True)
    weights = np.full((N_VERTS, N_JOINTS), 0.0, np.float64)
    weights[np.arange(N_VERTS), owner] = 0.8
    parents = np.array(SMPL_PARENTS)
    weights[np.arange(N_VERTS), np.where(parents[owner] >= 0, parents[owner], owner)] += 0.2
    kintree = np.stack([np.array(SMPL_PARENTS, np.int64).astype(np.uint32), np.arange(N_JOINTS, dtype=np.uint32)])
    data = {
        "v_template": verts,
        "shapedirs": rng.normal(0.0, 0.01, (N_VERTS, 3, num_shape)),
        "posedirs": rng.normal(0.0, 0.001, (N_VERTS, 3, 207)),
        "J_regressor": _sparse(reg) if sparse_regressor else reg,
        "weights": weights,
        "kintree_table": kintree,
        "f": rng.integers(0, N_VERTS, (N_FACES, 3)).astype(np.uint32),
        "J": joints,
        "bs_type": "lrotmin",
        "bs_style": "lbs",
        "vert_sym_idxs": np.arange(N_VERTS, dtype=np.int64),
    }
    path = directory / "SMPL_NEUTRAL.pkl"
    with open(path, "wb") as fh:
        pickle.dump(data, fh, protocol=2)
    return path


def _sparse(dense: np.ndarray):
    """The real file stores J_regressor as scipy.sparse.csc_matrix (so loading it needs scipy)."""
    try:
        import scipy.sparse
    except ImportError as exc:
        raise RuntimeError("a sparse J_regressor (as in the real SMPL file) needs scipy: pip install scipy; "
                           "or call make_synthetic_smpl(..., sparse_regressor=False)") from exc
    return scipy.sparse.csc_matrix(dense)


def make_mean_params(path: str | os.PathLike) -> Path:
    """Write a `smpl_mean_params.npz` (pose 144 float32 in 6D layout, shape 10 float64, cam 3
    float32 — the dtypes of the real file) with plausible values."""
    from pipeline.models.mean_params import default_mean_params

    params = default_mean_params()
    rng = np.random.default_rng(1)
    pose = params["pose"] + rng.normal(0, 0.05, 144).astype(np.float32)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, pose=pose.astype(np.float32), shape=rng.normal(0, 0.1, 10).astype(np.float64),
             cam=np.array([0.9, 0.0, 0.0], np.float32))
    return path


def make_j_regressor_extra(path: str | os.PathLike, num_joints: int = 9, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    reg = rng.random((num_joints, N_VERTS))
    reg /= reg.sum(axis=1, keepdims=True)
    path = Path(path)
    np.save(path, reg.astype(np.float64))
    return path
