import subprocess
import sys

import pytest

from pipeline.detectors import DetectorError, find_yolo_weights, make_detector


def test_auto_picks_blazepose_without_yolo_weights(tmp_path):
    det = make_detector("auto", data_dir=tmp_path, max_persons=3, conf=0.5)  # conf is yolo-only: dropped
    assert det.kind == "blazepose"
    assert det.info()["single_person"] is False and det.info()["max_persons"] == 3


def test_auto_picks_yolo_when_weights_exist(tmp_path):
    (tmp_path / "yolo11n.pt").write_bytes(b"")
    (tmp_path / "other.pt").write_bytes(b"")
    assert find_yolo_weights(tmp_path) == tmp_path / "yolo11n.pt"
    det = make_detector("auto", data_dir=tmp_path, visibility=0.3)   # mediapipe-only: dropped
    assert det.kind == "yolo" and det.info()["model"] == str(tmp_path / "yolo11n.pt")


def test_unknown_kind_and_option():
    with pytest.raises(DetectorError, match="unknown detector"):
        make_detector("openpose")
    with pytest.raises(DetectorError, match="allowed"):
        make_detector("center", conf=0.5)


def test_import_is_light():
    code = ("import sys, pipeline.detectors; "
            "print([m for m in ('torch', 'ultralytics', 'mediapipe', 'cv2') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
