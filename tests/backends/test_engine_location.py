"""Engines are exported where the inference worker looks (issue 21 item 5): `pipeline export`
and the worker agree on <data_dir>/engines (it used to be data/engines vs data/engines/engines,
so the first `start --backend trt` rebuilt for minutes). The end-to-end check, export then start
with no rebuild, is tests/test_data_dir_e2e.py."""
from __future__ import annotations

import pytest

from pipeline.backends.base import BackendConfig


@pytest.mark.parametrize("backend", ["onnx", "trt"])
def test_export_and_the_worker_use_the_same_engine_folder(backend, tmp_path, monkeypatch):
    from worker_probe import inference_backend_config

    from pipeline.backends import get_backend

    monkeypatch.setenv("POSEPIPE_DATA_DIR", str(tmp_path))   # the default `pipeline export` writes to
    worker = inference_backend_config(tmp_path, model="poco-pare", backend=backend)
    export = BackendConfig(model="pare", device="cpu", cache_dir=None)   # `pipeline export` without --cache-dir
    roots = {get_backend(backend)(c).cache().root for c in (worker, export)}
    assert roots == {tmp_path / "engines"}


def test_compile_caches_and_mean_params_live_in_the_data_folder(tmp_path):
    config = BackendConfig(cache_dir=str(tmp_path))
    assert config.data_path("cache") == tmp_path / "cache"
    assert config.data_path("smpl_mean_params.npz") == tmp_path / "smpl_mean_params.npz"


@pytest.mark.gpu
def test_trt_export_then_the_workers_backend_loads_it_without_a_rebuild(tmp_path, monkeypatch):
    """On the GPU machine: `pipeline export --backend trt` (default folder), then the backend the
    inference worker builds finds that engine (engine_built False). Stand-in network: this checks
    where engines go, not the model."""
    pytest.importorskip("torch_tensorrt", reason="the trt backend needs torch-tensorrt (posepipe[trt])")
    from standin import standin_factory
    from worker_probe import inference_backend_config

    from pipeline.backends import export as export_tool
    from pipeline.backends.trt import TrtBackend

    monkeypatch.setenv("POSEPIPE_DATA_DIR", str(tmp_path))
    first = export_tool.export_engine("trt", model="cliff", precision="fp16", max_persons=2, device="cuda",
                                      options={"network_factory": standin_factory})
    assert first["engine_built"] and first["engine"].startswith(str(tmp_path / "engines")), first
    config = inference_backend_config(tmp_path, model="poco-cliff", backend="trt", device="cuda",
                                      precision="fp16")
    config.options["network_factory"] = standin_factory
    backend = TrtBackend(config)
    backend.load()
    info = backend.info()
    backend.close()
    assert info["engine"] == first["engine"] and info["engine_built"] is False, info
