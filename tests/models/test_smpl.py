import logging

import numpy as np
import pytest

from pipeline.models.smpl import load_smpl, smpl_joints, smpl_vertices
from pipeline.testing import make_mean_params, make_synthetic_smpl
from pipeline.testing.smpl_files import make_j_regressor_extra


@pytest.fixture(scope="module")
def smpl_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    make_synthetic_smpl(d / "smpl")
    make_mean_params(d / "smpl_mean_params.npz")
    make_j_regressor_extra(d / "J_regressor_extra.npy")
    return d


def _params(b, rng):
    return {"global_orient": rng.normal(0, 0.3, (b, 3)).astype(np.float32),
            "body_pose": rng.normal(0, 0.2, (b, 69)).astype(np.float32),
            "betas": rng.normal(0, 1, (b, 10)).astype(np.float32),
            "transl": np.array([[0.1, -0.2, 5.0]] * b, np.float32)}


def test_synthetic_smpl_loads_and_gives_joints_and_vertices(smpl_dir):
    layer = load_smpl(smpl_dir)
    assert layer is not None
    assert layer.faces.shape == (13776, 3)
    p = _params(3, np.random.default_rng(0))
    j = smpl_joints(layer, p)
    v = smpl_vertices(layer, p)
    assert j.shape == (3, 24, 3) and v.shape == (3, 6890, 3)
    assert j.dtype == np.float32 and np.isfinite(v).all()
    # camera frame: the translation is added
    no_t = {k: p[k] for k in ("global_orient", "body_pose", "betas")}
    assert np.allclose(layer.vertices(p) - layer.vertices(no_t), p["transl"][:, None, :], atol=1e-5)
    assert layer.extra_joints(p).shape == (3, 9, 3)
    assert layer.mean_params["pose"].shape == (144,)


def test_dense_regressor_variant_loads(tmp_path):
    make_synthetic_smpl(tmp_path / "smpl", sparse_regressor=False, num_shape=16)
    layer = load_smpl(tmp_path)
    assert layer.joints(_params(1, np.random.default_rng(1))).shape == (1, 24, 3)


def test_missing_smpl_returns_none_and_logs_once(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="pipeline.models.smpl"):
        assert load_smpl(tmp_path) is None
        assert load_smpl(tmp_path) is None
    records = [r for r in caplog.records if "SMPL model not found" in r.getMessage()]
    assert len(records) == 1
    assert "SMPL_NEUTRAL.pkl" in records[0].getMessage()
