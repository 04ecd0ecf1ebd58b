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
    with pytest.raises(ValueError, match="has no fp16"):
        OnnxBackend(standin_config).load()
    standin_config.precision = "fp32"
    standin_config.device = "cuda"
    import onnxruntime
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(BackendUnavailable, match="onnxruntime-gpu"):
            OnnxBackend(standin_config).load()


# ---------------------------------------------------------------------------- issue 18: the CPU default

def test_auto_backend_and_auto_precision_mean_what_the_backend_runs():
    from pipeline.backends import get_backend, resolve_backend
    assert resolve_backend("auto", "cpu") == "onnx"
    assert resolve_backend("auto", "cuda:1") == "cudagraph"  # on a GPU: CUDA graphs
    assert resolve_backend("TRT", "cpu") == "trt"           # a named backend is never replaced
    # `--backend onnx` on a GPU host: auto precision used to become fp16, which onnx refuses
    assert OnnxBackend.auto_precision("cuda") == OnnxBackend.auto_precision("cpu") == "fp32"
    assert get_backend("torch").auto_precision("cuda") == "fp16"
    assert get_backend("torch").auto_precision("cpu") == "fp32"
    assert get_backend("cudagraph").auto_precision("cuda:0") == "fp16"
    # device auto on a GPU host: onnx goes to the GPU only through onnxruntime-gpu
    import onnxruntime
    gpu_ort = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    assert OnnxBackend.auto_device("cuda") == ("cuda" if gpu_ort else "cpu")
    assert OnnxBackend.auto_device("cpu") == "cpu" and get_backend("torch").auto_device("cuda") == "cuda"


def test_cached_graph_loads_and_runs_without_importing_torch(shared_config):
    """A restart of the CPU worker must not pay torch's import (~3 s on 2 cores)."""
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    be = OnnxBackend(shared_config)
    be.load()   # exported here (with torch) or already in the shared cache
    code = textwrap.dedent(f"""
        import sys
        import numpy as np
        from pipeline.backends.base import BackendConfig
        from pipeline.backends.onnx import OnnxBackend
        be = OnnxBackend(BackendConfig(model="cliff", max_batch=4, cache_dir={shared_config.cache_dir!r}))
        be.load(); be.warmup()
        out = be.infer(np.zeros((2, 3, 224, 224), np.float32), np.zeros((2, 3), np.float32))
        info = be.info()
        assert not info["engine_built"], info
        assert out["pred_pose"].shape == (2, 24, 3, 3)
        assert "torch" not in sys.modules, "torch was imported"
        print(info["threads"], info["spinning"], info["warm_batches"])
    """)
    env = {**__import__("os").environ, "POSEPIPE_THREADS": "1", "POSEPIPE_SPIN": "0",
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["1", "False", "[1]"]


def test_warmup_runs_only_the_batch_sizes_the_first_frames_need(shared_config):
    shared_config.warm_batches = (1, 3)
    be = OnnxBackend(shared_config)
    be.load()
    be.warmup()
    assert be.info()["warm_batches"] == [1, 3]
    shared_config.warm_batches = (1, 9)   # more persons than max_batch: split 4+4+1
    be = OnnxBackend(shared_config)
    be.load()
    be.warmup()
    assert be.info()["warm_batches"] == [1, 4]


def test_graph_without_bbox_info_input_runs(tmp_path):
    """POCO-PARE ignores bbox_info, and the exporter drops an unused input from the graph."""
    from pipeline.backends.base import BackendConfig

    class NoBbox(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = make_standin(0)

        def forward(self, img, bbox_info):
            return self.inner(img, torch.zeros(img.shape[0], 3, dtype=img.dtype))

    be = OnnxBackend(BackendConfig(model="pare", max_batch=2, cache_dir=str(tmp_path),
                                   options={"network_factory": lambda *_: NoBbox().eval()}))
    be.load()
    assert [i.name for i in be._session.get_inputs()] == ["img"]
    assert be.infer(*inputs(3))["pred_pose"].shape == (3, 24, 3, 3)


def test_int8_is_quantised_once_checked_against_fp32_and_cached(standin_config, monkeypatch):
    """The mechanism: quantise, measure against fp32 on held-out photo crops, keep the number
    with the engine, refuse above the bound. (The stand-in's random 6D outputs are far more
    fragile than POCO's, so the bound is widened here; tools/bench_model.py measures the real
    network against 3e-2.)"""
    from pipeline.backends import onnx_variants

    monkeypatch.setattr(onnx_variants, "ROTATION_TOLERANCE", 10.0)
    standin_config.precision = "int8"
    be = OnnxBackend(standin_config)
    be.load()
    info = be.info()
    assert info["precision"] == "int8" and info["engine_built"] and "int8" in info["engine"]
    assert info["rotation_error_vs_fp32"] > 0
    out = be.infer(*inputs(3))
    assert out["pred_pose"].shape == (3, 24, 3, 3) and np.isfinite(out["pred_pose"]).all()
    again = OnnxBackend(standin_config)
    again.load()
    assert not again.info()["engine_built"]     # neither exported nor quantised again
    assert again.info()["rotation_error_vs_fp32"] == info["rotation_error_vs_fp32"]
    # The measured error is kept with the engine: a bound it misses refuses it at once.
    monkeypatch.setattr(onnx_variants, "ROTATION_TOLERANCE", 1e-9)
    with pytest.raises(ValueError, match=r"int8: the quantised network is .* off fp32 .* use precision=fp32"):
        OnnxBackend(standin_config).load()
    standin_config.device = "cuda"
    import onnxruntime
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        with pytest.raises(ValueError, match="int8 on the CPU only"):
            OnnxBackend(standin_config).load()
