import numpy as np
import pytest
import torch

from pipeline.backends.base import BackendUnavailable
from pipeline.backends.onnx import OnnxBackend
from standin import make_standin


def eager(img, bbox):
    with torch.no_grad():
        out = make_standin(0)(torch.from_numpy(img), torch.from_numpy(bbox))
    return {k: v.numpy() for k, v in out.items()}


def inputs(n, seed=1):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, 3, 224, 224), dtype=np.float32),
            (rng.standard_normal((n, 3)) * 0.3).astype(np.float32))


def test_onnx_matches_eager_caches_and_splits(standin_config):
    be = OnnxBackend(standin_config)
    be.load()
    info = be.info()
    assert info["engine_built"] and info["providers"] == ["CPUExecutionProvider"]
    be.warmup()
    for n in (1, 3, 9):  # 9 > max_batch=4: split into 4+4+1
        img, bbox = inputs(n)
        got, ref = be.infer(img, bbox), eager(img, bbox)
        for k in ref:
            assert got[k].shape == ref[k].shape and got[k].dtype == np.float32
            assert np.abs(got[k] - ref[k]).max() < 1e-4, k
    again = OnnxBackend(standin_config)
    again.load()
    assert not again.info()["engine_built"]  # cache hit: no second export
    img, bbox = inputs(2)
    assert np.array_equal(again.infer(torch.from_numpy(img), bbox)["pred_shape"],
                          be.infer(img, bbox)["pred_shape"])


def test_onnx_bad_inputs_and_devices(shared_config):
    standin_config = shared_config
    be = OnnxBackend(standin_config)
    with pytest.raises(RuntimeError, match="call load"):
        be.infer(*inputs(1))
    be.load()
    with pytest.raises(ValueError, match=r"\(B,3,224,224\)"):
        be.infer(np.zeros((1, 3, 100, 100), np.float32), np.zeros((1, 3), np.float32))
    with pytest.raises(ValueError, match="bbox_info has|img has"):
        be.infer(*inputs(2)[:1], inputs(3)[1])
    standin_config.precision = "fp16"
    with pytest.raises(ValueError, match="fp32 only"):
        OnnxBackend(standin_config).load()
    standin_config.precision = "fp32"
    standin_config.device = "cuda"
    import onnxruntime
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(BackendUnavailable, match="onnxruntime-gpu"):
            OnnxBackend(standin_config).load()
