"""The real detection and inference workers in real pipelines (processes, rings, sockets):
capture -> detection -> inference (POCO, random weights) -> publisher -> native subscriber.

Media are generated here (OpenCV) or are the photos that ship inside ultralytics. POCO runs
as the light PARE variant on one thread so the suite fits a busy 2-core box.
"""
from __future__ import annotations

import contextlib

import numpy as np
import pytest

from real_workers import INFERENCE_FAST
from pipeline_helpers import native_endpoint, receive_frames, request, wait_for, workers, write_pipeline_config

pytestmark = [pytest.mark.timeout(240)]

def write_config(tmp_path, source, options="{}", detection="{kind: center}", inference=INFERENCE_FAST,
                 max_h=240, max_w=320):
    return write_pipeline_config(tmp_path / "workers.yaml", source=source, options=options, max_height=max_h,
                                 max_width=max_w, settings="health_timeout: 5", detection=detection,
                                 inference=inference)


@pytest.fixture
def photo_folder(tmp_path):
    """bus.jpg (4 people + a bus) shrunk to 320 px wide, as a one-image folder source."""
    import importlib.util
    from pathlib import Path

    import cv2

    spec = importlib.util.find_spec("ultralytics")
    if spec is None:
        pytest.skip("ultralytics (and its bundled bus.jpg) is not installed")
    bgr = cv2.imread(str(Path(spec.origin).parent / "assets" / "bus.jpg"))
    if bgr is None:
        pytest.skip("ultralytics/assets/bus.jpg is missing")
    folder = tmp_path / "photos"
    folder.mkdir()
    h, w = bgr.shape[:2]
    cv2.imwrite(str(folder / "bus.png"), cv2.resize(bgr, (320, int(h * 320 / w)), interpolation=cv2.INTER_AREA))
    return folder


def test_center_detector_every_frame_has_one_person(run_cli, tmp_path, small_video):
    config = write_config(tmp_path, small_video, options="{realtime: true}")
    run_cli("start", "--detach", "--config", config, timeout=120, check=True)
    try:
        status = request("status")
        w = workers(status)
        assert w["inference"]["info"]["model"] == "poco-pare" and w["inference"]["info"]["untrained"] is True
        assert w["detection"]["info"]["single_person"] is True
        frames = receive_frames(native_endpoint(status), 6, timeout=60)
        for f in frames:
            assert len(f.persons) == 1 and f.n_found == 1
            p = f.persons[0]
            assert p.track_id == 0
            np.testing.assert_array_equal(p.box, [40, 0, 280, 240])
            for name, shape in (("global_orient", (3,)), ("body_pose", (69,)), ("betas", (10,)),
                                ("transl", (3,)), ("joint_uncertainty", (24,))):
                value = getattr(p, name)
                assert value.shape == shape and np.all(np.isfinite(value)), name
            assert f.model == "poco-pare" and f.backend == "torch" and f.precision == "fp32" and f.untrained
            order = [f.stamps_ns[s] for s in ("capture", "frame_written", "detect_start", "detect_end",
                                              "infer_start", "infer_end", "publish")]
            assert order == sorted(order) and order[0] == f.t_capture_ns
        ids = [f.frame_id for f in frames]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        table = run_cli("status", check=True).stdout
        assert "UNTRAINED" in table and "ONE person" in table
    finally:
        assert run_cli("stop").returncode == 0


def test_mediapipe_finds_a_person_on_bus_jpg(run_cli, tmp_path, photo_folder):
    pytest.importorskip("mediapipe")
    with _photo_pipeline(run_cli, tmp_path, photo_folder, "{kind: mediapipe}") as (info, found):
        assert info["detector"] == "mediapipe" and info["single_person"] is True
        assert info["detector_static_image_mode"] is True  # a folder of stills: no video-mode tracking
        assert found, "mediapipe found nobody on bus.jpg"
        p = found[-1].persons[0]
        x1, y1, x2, y2 = p.box
        assert 0 <= x1 < x2 <= 320 + 40 and y2 - y1 > 60 and np.all(np.isfinite(p.transl))


@contextlib.contextmanager
def _photo_pipeline(run_cli, tmp_path, photo_folder, detection: str):
    """A pipeline on the bus.jpg folder with `detection` params: yields the detection worker's
    info and the first received frames that have persons; stops the pipeline after."""
    config = write_config(tmp_path, photo_folder, options="{fps: 5}", detection=detection, max_h=480, max_w=320)
    run_cli("start", "--detach", "--config", config, timeout=120, check=True)
    try:
        status = request("status")
        frames = receive_frames(native_endpoint(status), 4, timeout=60)
        yield workers(status)["detection"]["info"], [f for f in frames if f.persons]
    finally:
        assert run_cli("stop").returncode == 0


def test_blazepose_default_finds_people_and_status_names_its_device(run_cli, tmp_path, photo_folder):
    """The offline multi-person default in the real pipeline: boxes on bus.jpg, several persons
    allowed, and `pipeline status` says where and in what precision the detector runs."""
    pytest.importorskip("mediapipe")
    pytest.importorskip("ai_edge_litert")
    with _photo_pipeline(run_cli, tmp_path, photo_folder, "{kind: auto, device: cpu}") as (info, found):
        assert info["detector"] == "blazepose" and info["single_person"] is False
        assert info["detector_device"] == "cpu" and info["detector_precision"] == "fp32"
        assert found, "blazepose found nobody on bus.jpg"
        x1, y1, x2, y2 = found[-1].persons[0].box
        assert 0 <= x1 < x2 <= 320 and y2 - y1 > 60
        table = run_cli("status", check=True).stdout
        assert "blazepose detector" in table and "on cpu fp32 (litert)" in table


def test_oversized_frames_are_downscaled_before_detection(run_cli, tmp_path):
    """Frames larger than the ring: capture downscales (aspect kept), and the boxes and
    poses downstream are in the downscaled frame's pixels."""
    config = write_config(tmp_path, "sample", options="{width: 640, height: 480, fps: 30}", max_h=120, max_w=200)
    run_cli("start", "--detach", "--config", config, timeout=120, check=True)
    try:
        frames = receive_frames(native_endpoint(request("status")), 3, timeout=60)
        f = frames[-1]
        assert (f.frame_width, f.frame_height) == (160, 120)
        np.testing.assert_array_equal(f.persons[0].box, [20, 0, 140, 120])
        assert wait_for(lambda: workers(request("status"))["capture"]["extras"].get("downscaled", 0) > 0,
                        what="downscale count")
    finally:
        assert run_cli("stop").returncode == 0


def test_bad_backend_fails_at_setup_with_one_line(run_cli, tmp_path, small_video):
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks the no-CUDA message")
    config = write_config(tmp_path, small_video, inference=INFERENCE_FAST.replace("backend: torch", "backend: trt"))
    proc = run_cli("start", "--config", config, "--seconds", "5", timeout=120)
    assert proc.returncode != 0
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert "worker inference" in errors[0] and "could not start" in errors[0] and "trt" in errors[0]
    assert "Traceback" not in proc.stderr


def test_missing_checkpoint_fails_at_setup_naming_the_file(run_cli, tmp_path, small_video):
    missing = tmp_path / "poco_pare_missing.pt"
    config = write_config(tmp_path, small_video)
    proc = run_cli("start", "--config", config, "--seconds", "5", "--checkpoint", missing, timeout=120)
    assert proc.returncode != 0
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and str(missing) in errors[0] and "does not exist" in errors[0], proc.stderr


def test_missing_yolo_weights_fail_at_setup_naming_the_file(run_cli, tmp_path, small_video):
    missing = tmp_path / "yolo_missing.pt"
    config = write_config(tmp_path, small_video, detection=f"{{kind: yolo, model: {str(missing)!r}}}")
    proc = run_cli("start", "--config", config, "--seconds", "5", timeout=120)
    assert proc.returncode != 0
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "worker detection" in errors[0] and str(missing) in errors[0], proc.stderr
