import pytest

from pipeline.backends.base import BackendUnavailable
from pipeline.backends.compile import CompileBackend, configure_compile_cache


def test_compile_on_cpu_is_opt_in(standin_config):
    with pytest.raises(BackendUnavailable, match="needs a CUDA GPU.*allow_cpu"):
        CompileBackend(standin_config).load()


def test_compile_cache_env_points_under_cache_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    root = configure_compile_cache(tmp_path / "c")
    import os
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(root / "inductor")
    assert os.environ["TRITON_CACHE_DIR"] == str(root / "triton")


def test_bad_config_values_are_named(standin_config):
    standin_config.precision = "bf16"
    with pytest.raises(ValueError, match="precision.*bf16"):
        CompileBackend(standin_config).load()
    standin_config.precision = "fp32"
    standin_config.max_batch = 0
    with pytest.raises(ValueError, match="max_batch"):
        CompileBackend(standin_config).load()
