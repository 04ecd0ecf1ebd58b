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


def test_precision_is_honoured_or_refused(standin_config):
    # fp32 is never silently turned into fp16: on CPU fp16 is refused, and the old keep_fp32
    # switch is named as gone instead of being ignored.
    standin_config.options["allow_cpu"] = True
    standin_config.precision = "fp16"
    with pytest.raises(BackendUnavailable, match="fp16 needs a CUDA GPU.*precision=fp32"):
        CompileBackend(standin_config).load()
    standin_config.precision = "fp32"
    standin_config.options["keep_fp32"] = True
    with pytest.raises(ValueError, match="keep_fp32.*precision=fp32"):
        CompileBackend(standin_config).load()
