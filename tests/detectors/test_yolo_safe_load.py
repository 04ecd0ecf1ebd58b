"""YOLO weights are never unpickled unless the user opts in (issue 21 item 3, docs/reliability.md).

A .pt file is a pickle. The detector loads it through ultralytics' own safe-load switch
(weights_only=True + its allow-list of layer classes), so a planted data/yolo*.pt -- which the
`auto` detector picks up by itself -- cannot run code. Each load runs in a fresh interpreter, as
in the detection worker: the switch is read when ultralytics is first imported."""
from __future__ import annotations

import importlib.util
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ultralytics") is None,
                                reason="ultralytics is not installed")

REPO = Path(__file__).resolve().parents[2]


def _evil_weights(path: Path, marker: Path) -> Path:
    import torch

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"model": Payload()}, path, pickle_module=pickle)
    return path


def _load_in_fresh_process(tmp_path, code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ULTRALYTICS_SAFE_LOAD"}  # as a fresh worker has it
    env.update(YOLO_OFFLINE="1", YOLO_CONFIG_DIR=str(tmp_path / "cfg"), PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)


def test_a_planted_yolo_file_in_data_cannot_run_code(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    marker = tmp_path / "pwned"
    _evil_weights(data / "yolo_evil.pt", marker)
    proc = _load_in_fresh_process(tmp_path, f"""
        from pipeline.detectors import DetectorError, make_detector
        det = make_detector("auto", data_dir={str(data)!r})
        assert det.kind == "yolo", det.kind       # auto picks any data/yolo*.pt
        try:
            det.setup()
        except DetectorError as exc:
            print("REFUSED", exc)
        """)
    assert not marker.exists(), "loading the weights ran code from the file"
    assert "REFUSED" in proc.stdout and "--allow-unsafe-checkpoint" in proc.stdout, proc.stdout + proc.stderr


def test_the_opt_in_really_unpickles_in_full(tmp_path):
    marker = tmp_path / "ran"
    path = _evil_weights(tmp_path / "yolo_trusted.pt", marker)
    proc = _load_in_fresh_process(tmp_path, f"""
        from pipeline.detectors import DetectorError, make_detector
        det = make_detector("yolo", model={str(path)!r}, allow_unsafe_checkpoint=True, warmup=False)
        try:
            det.setup()
        except DetectorError as exc:
            print("FAILED AFTER LOADING", exc)
        """)
    assert marker.exists(), proc.stdout + proc.stderr   # the flag is real: the whole pickle was loaded


def test_real_weights_load_safely(tmp_path):
    path = tmp_path / "yolo_random.pt"
    proc = _load_in_fresh_process(tmp_path, f"""
        from ultralytics import YOLO
        YOLO("yolo11n.yaml").save({str(path)!r})
        """)
    assert proc.returncode == 0, proc.stderr
    proc = _load_in_fresh_process(tmp_path, f"""
        from pipeline.detectors import make_detector
        det = make_detector("yolo", model={str(path)!r}, imgsz=64, warmup=False)
        det.setup()
        from ultralytics.nn import tasks
        print("SAFE", tasks.SAFE_LOAD, det.info()["single_person"])
        """)
    assert "SAFE True False" in proc.stdout, proc.stdout + proc.stderr


def test_loading_is_refused_when_the_switch_did_not_take_effect(tmp_path):
    path = tmp_path / "yolo_random.pt"
    proc = _load_in_fresh_process(tmp_path, f"""
        import ultralytics                         # imported before the detector could switch it on
        from pipeline.detectors import DetectorError
        from pipeline.detectors.yolo_model import load_yolo
        try:
            load_yolo({str(path)!r})
        except DetectorError as exc:
            print("REFUSED", exc)
        """)
    assert "REFUSED refusing to load" in proc.stdout and "ULTRALYTICS_SAFE_LOAD=1" in proc.stdout, \
        proc.stdout + proc.stderr
