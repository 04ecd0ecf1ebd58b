"""What the trt backend does on a machine without TensorRT / CUDA (this one, and CI)."""
import importlib.util

import numpy as np
import pytest

from pipeline.backends.base import BackendUnavailable
from pipeline.backends.trt import TrtBackend

HAS_TRT = importlib.util.find_spec("torch_tensorrt") is not None


@pytest.mark.skipif(HAS_TRT, reason="torch_tensorrt is installed here")
def test_missing_tensorrt_is_one_clear_message(standin_config):
    standin_config.device = "cuda"
    with pytest.raises(BackendUnavailable) as err:
        TrtBackend(standin_config).load()
    msg = str(err.value)
    assert "torch-tensorrt is not importable" in msg
    assert 'pip install "posepipe[trt]"' in msg and "torch-tensorrt built for torch" in msg
    assert "No automatic fallback" in msg
    assert msg.count("Install:") == 1


def test_cpu_device_is_refused_even_with_tensorrt(standin_config):
    with pytest.raises(BackendUnavailable, match="CUDA GPUs only"):
        TrtBackend(standin_config).load()


def test_fallback_only_when_asked_and_visible(shared_config):
    standin_config = shared_config
    standin_config.options["fallback"] = "onnx"
    be = TrtBackend(standin_config)
    be.load()
    info = be.info()
    assert info["fallback_from"] == "trt" and info["name"] == "onnx"
    assert "CUDA" in info["fallback_reason"]
    be.warmup()
    out = be.infer(np.zeros((2, 3, 224, 224), np.float32), np.zeros((2, 3), np.float32))
    assert out["pred_pose"].shape == (2, 24, 3, 3)
    standin_config.options["fallback"] = "tensorflow"
    with pytest.raises(ValueError, match="fallback must be one of"):
        TrtBackend(standin_config).load()


def test_engine_key_names_gpu_trt_and_batch_range(standin_config):
    be = TrtBackend(standin_config)
    k = be.engine_key("NVIDIA H100 80GB HBM3", "10.3.0", "2.4.0")
    assert (k.kind, k.checkpoint, k.precision, k.min_batch, k.max_batch) == \
        ("trt", "random-seed-0", "fp32", 1, 4)
    assert "tensorrt-10.3.0" in k.runtime_version and k.device_name.startswith("NVIDIA H100")
    assert be.cache().path_for(k).suffix == ".ep"
    standin_config.options["opt_batch"] = 9
    with pytest.raises(ValueError, match="opt_batch"):
        TrtBackend(standin_config).engine_key("g", "1", "1")
