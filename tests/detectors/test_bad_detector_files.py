"""Files and settings that are not what the person detector needs: one line naming the file
or the setting and the fix (docs/architecture.md §12). The last test starts the real pipeline
with such a file and checks it exits cleanly with nothing left behind."""
import importlib.util
import re

import pytest

from pipeline.detectors import DetectorError, make_detector

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ultralytics") is None,
                                reason="ultralytics is not installed")


def _saved(tmp_path, yaml_name):
    from pipeline.detectors.yolo_model import load_yolo
    path = tmp_path / yaml_name.replace(".yaml", ".pt")
    load_yolo(yaml_name).save(str(path))
    return path


@pytest.mark.parametrize("yaml_name, what", [
    ("yolo11n-cls.yaml", "an image classifier"),
    ("yolo11n-pose.yaml", "a pose \\(keypoint\\) model"),
    ("yolo11n-seg.yaml", "a segmentation model"),
])
def test_yolo_file_that_is_not_a_detector(tmp_path, yaml_name, what):
    path = _saved(tmp_path, yaml_name)
    with pytest.raises(DetectorError) as e:
        make_detector("yolo", model=path, warmup=False).setup()
    msg = str(e.value)
    assert "\n" not in msg
    assert path.name in msg and "not a detector" in msg and "--weights" in msg
    assert re.search(what, msg)


def test_wrong_input_size_names_the_setting(tmp_path):
    with pytest.raises(DetectorError, match=r"yolo imgsz must be a multiple of 32 .* got 250"):
        make_detector("yolo", model=tmp_path / "yolo.pt", imgsz=250)


def test_gpu_out_of_memory_while_loading_is_one_line(tmp_path, monkeypatch):
    """Simulated: the runner's first CUDA allocation fails as torch reports it."""
    import torch

    from pipeline.detectors import yolo_runner
    path = _saved(tmp_path, "yolo11n.yaml")

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 139 GiB total)")
    monkeypatch.setattr(yolo_runner.YoloRunner, "__init__", out_of_memory)
    with pytest.raises(DetectorError) as e:
        make_detector("yolo", model=path, warmup=False).setup()
    msg = str(e.value)
    assert "\n" not in msg and "ran out of memory" in msg and path.name in msg
    assert "detection.imgsz" in msg and "detection.device=cpu" in msg


def test_unknown_engine_is_named(tmp_path):
    with pytest.raises(DetectorError, match="yolo engine must be one of"):
        make_detector("yolo", model=tmp_path / "yolo.pt", engine="tensorflow")


def test_cuda_engine_on_cpu_is_refused(tmp_path):
    path = _saved(tmp_path, "yolo11n.yaml")
    with pytest.raises(DetectorError, match="engine 'cudagraph' needs a CUDA device"):
        make_detector("yolo", model=path, device="cpu", engine="cudagraph", warmup=False).setup()


@pytest.mark.timeout(120)
def test_pipeline_with_a_classifier_as_detector_exits_cleanly(run_cli, tmp_path):
    """`pipeline start --detector yolo --weights cls.pt`: one error line naming the file, a
    non-zero exit, and (pipeline_env) no process, ring, socket or run directory left."""
    path = _saved(tmp_path, "yolo11n-cls.yaml")
    proc = run_cli("start", "--seconds", "20", "--source", "sample", "--detector", "yolo", "--weights", str(path),
                   "metrics.prometheus_port=0", timeout=110)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "worker detection" in errors[0] and path.name in errors[0] and "not a detector" in errors[0]
