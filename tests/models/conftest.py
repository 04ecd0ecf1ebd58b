import os

import pytest

os.environ.setdefault("YOLO_OFFLINE", "1")


@pytest.fixture(scope="session")
def pare_random():
    """Uncalibrated random POCO-PARE (cheap to build; used for loading tests)."""
    from pipeline.testing import build_random_model
    return build_random_model("pare", seed=0, calibrate_bn=False)


@pytest.fixture(scope="session")
def cliff_random():
    from pipeline.testing import build_random_model
    return build_random_model("cliff", seed=0, calibrate_bn=False)


@pytest.fixture(scope="session")
def ckpt_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("poco_ckpt")
