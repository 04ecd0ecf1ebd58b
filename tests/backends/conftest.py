import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
# The repo root, for runs where posepipe is not pip-installed into the venv.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def cuda_available() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except ImportError:
        return False


def pytest_collection_modifyitems(config, items):
    if cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run on the device machine: tools/device/run_bench.sh)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def standin_config(tmp_path):
    from pipeline.backends.base import BackendConfig
    from standin import standin_factory
    return BackendConfig(model="cliff", checkpoint=None, device="cpu", precision="fp32", max_batch=4,
                         cache_dir=str(tmp_path / "cache"),
                         options={"network_factory": standin_factory})


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory):
    """One cache for tests that only need *an* exported stand-in engine (exports are slow)."""
    return tmp_path_factory.mktemp("shared-cache")


@pytest.fixture
def shared_config(standin_config, shared_cache):
    standin_config.cache_dir = str(shared_cache)
    return standin_config
