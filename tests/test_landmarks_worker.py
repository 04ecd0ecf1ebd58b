"""The inference worker with the `landmarks-ik` model, in process (real rings, the real landmark
model on the photos that ship with ultralytics): the default without POCO weights, records,
persons without a pose, a slot overwritten mid-crop."""
from __future__ import annotations

import numpy as np
import pytest

from test_inference_worker import (Rings, assert_overwrite_during_crop_is_skipped, detection_item, last_pose,
                                   make_worker)
from pipeline.runtime.worker import WROTE

pytestmark = [pytest.mark.timeout(300)]

BUS = [(50, 400, 245, 905), (220, 405, 345, 860)]
FACADE = (300, 60, 500, 260)


@pytest.fixture
def photo_rings():
    r = Rings(max_persons=4, slots=4, height=1080, width=1280)
    yield r
    r.close()


@pytest.fixture(scope="module")
def bus():
    from pipeline.sources.sample import load_photos
    return load_photos()[0]


def worker_for(rings, tmp_path, **params):
    from workers.inference import Inference, Params

    worker = make_worker(Inference, Params(threads=1, **params), rings, "inference", "poses", data_dir=str(tmp_path))
    messages = []
    worker.progress = messages.append
    worker.setup()
    return worker, messages


def test_without_poco_weights_the_default_is_landmarks_ik_and_says_so(photo_rings, bus, tmp_path):
    worker, messages = worker_for(photo_rings, tmp_path)
    try:
        said = [m for m in messages if "no POCO checkpoint" in m]
        assert len(said) == 1 and "landmarks-ik" in said[0] and "--model poco-cliff" in said[0]
        slot, seq = photo_rings.write_frame(bus)
        item = detection_item(photo_rings, slot, seq, BUS + [FACADE], track_ids=[4, 5, 6], n_found=3)
        assert worker.process(item) is WROTE
        rec = last_pose(photo_rings)
        assert rec["model"] == b"landmarks-ik" and rec["untrained"] == 0 and rec["backend"] == b"litert"
        # the facade crop holds nobody: left out, the detector's count kept
        assert rec["count"] == 2 and rec["n_found"] == 3 and list(rec["track_ids"][:3]) == [4, 5, -1]
        np.testing.assert_array_equal(rec["boxes"][:2], np.asarray(BUS, np.float32))
        for key in ("global_orient", "body_pose", "betas", "transl", "pred_cam", "joint_uncertainty"):
            assert np.all(np.isfinite(rec[key][:2])), key
        assert rec["has_joints"] == 1 and np.all(rec["transl"][:2, 2] > 1)
        info = worker.info()
        assert info["model"] == "landmarks-ik" and info["untrained"] is False
        assert info["checkpoint"].endswith("pose_landmark_full.tflite") and "description" not in info
        worker._update_extras()
        assert worker.extras["no_person_crops"] == 1 and worker.extras["ik_p50_ms"] >= 0
        assert worker.extras["landmarks_p50_ms"] > 0 and worker.extras["untrained"] is False
    finally:
        worker.stop()


def test_auto_is_poco_when_a_checkpoint_is_named(photo_rings, tmp_path):
    from workers.inference import Inference, Params

    worker = make_worker(Inference, Params(checkpoint=str(tmp_path / "mine.pt"), smpl="off"), photo_rings,
                         "inference", "poses")
    with pytest.raises(Exception, match="mine.pt"):   # POCO's loader, not landmarks-ik
        worker.setup()


def test_explicit_poco_without_weights_stays_poco(photo_rings, tmp_path):
    worker, messages = worker_for(photo_rings, tmp_path, model="poco-pare", smpl="off",
                                  backend_options={"calibrate_bn": False, "seed": 0})
    try:
        assert worker.model_name == "poco-pare" and worker.untrained
        assert not [m for m in messages if "no POCO checkpoint" in m]
    finally:
        worker.stop()


def test_slot_overwritten_during_the_crop_is_skipped(photo_rings, bus, tmp_path, monkeypatch):
    worker, _ = worker_for(photo_rings, tmp_path, model="landmarks-ik")
    try:
        slot, seq = photo_rings.write_frame(bus)
        assert_overwrite_during_crop_is_skipped(photo_rings, worker, detection_item(photo_rings, slot, seq, BUS[:1]),
                                                monkeypatch)
    finally:
        worker.stop()


def test_bad_min_presence_fails_setup_with_the_key(photo_rings, tmp_path):
    from pipeline.runtime.worker import WorkerError

    with pytest.raises(WorkerError, match="min_presence"):
        worker_for(photo_rings, tmp_path, model="landmarks-ik", min_presence=2.0)
