"""Shared fixtures for the detector tests: offline ultralytics, the photos it ships."""
from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

# Before anything imports ultralytics: never touch the network or the user's settings.
os.environ["YOLO_OFFLINE"] = "1"
os.environ["YOLO_AUTOINSTALL"] = "False"
if "YOLO_CONFIG_DIR" not in os.environ:
    _cfg = tempfile.mkdtemp(prefix="posepipe-yolo-cfg-")
    atexit.register(shutil.rmtree, _cfg, True)
    os.environ["YOLO_CONFIG_DIR"] = _cfg
os.environ.setdefault("GLOG_minloglevel", "2")


def ultralytics_assets() -> Path:
    spec = importlib.util.find_spec("ultralytics")
    if spec is None or spec.origin is None:
        pytest.skip("ultralytics is not installed: its sample photos are the test data")
    return Path(spec.origin).parent / "assets"


def load_rgb(name: str) -> np.ndarray:
    import cv2
    path = ultralytics_assets() / name
    bgr = cv2.imread(str(path))
    if bgr is None:
        pytest.skip(f"{path} is missing from the ultralytics install")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="session")
def bus_rgb() -> np.ndarray:
    return load_rgb("bus.jpg")


@pytest.fixture(scope="session")
def zidane_rgb() -> np.ndarray:
    return load_rgb("zidane.jpg")
