"""In-process unit tests of the detection and inference workers (workers/detection.py,
workers/inference.py): real rings, real POCO (random weights), no processes.

The workers are driven the way the runner drives them: rings attached, `setup()`, then
`process(ReadItem)`; the tests write the input records themselves so every edge case
(overwritten frame slot, N persons, box partly outside the frame, nobody) is exact.
"""
from __future__ import annotations

import os
import uuid

import numpy as np
import pytest

from pipeline.runtime.records import detections_dtype, frames_dtype, poses_dtype
from pipeline.runtime.ring import ReadItem, Ring
from pipeline.runtime.worker import WROTE, Output, SettingError, WorkerContext, WorkerError

os.environ.setdefault("YOLO_OFFLINE", "1")
pytestmark = [pytest.mark.timeout(300)]

H, W = 120, 160
MAX_PERSONS = 4
FAST = {"calibrate_bn": False, "seed": 0}  # fp32 on CPU needs no BatchNorm calibration


class Rings:
    def __init__(self, max_persons=MAX_PERSONS, slots=4, height=H, width=W):
        self.run_id = "t" + uuid.uuid4().hex[:10]
        self.frames = Ring.create("frames", frames_dtype(height, width), slots, self.run_id)
        self.detections = Ring.create("detections", detections_dtype(max_persons), slots, self.run_id)
        self.poses = Ring.create("poses", poses_dtype(max_persons), slots, self.run_id)
        self.all = {"frames": self.frames, "detections": self.detections, "poses": self.poses}
        self.frame_writer = self.frames.writer(0)
        self.next_id = 0

    def write_frame(self, rgb=None, epoch=0):
        """Write a frame like capture does; returns (slot, seq)."""
        rec = self.frame_writer.begin()
        h, w = (H, W) if rgb is None else rgb.shape[:2]
        rec["pixels"][:h, :w] = 0 if rgb is None else rgb
        rec["height"], rec["width"] = h, w
        rec["frame_id"] = self.next_id
        rec["t_capture_ns"] = 1000 + self.next_id
        rec["source_epoch"] = epoch
        rec["stamps_ns"] = 0
        self.next_id += 1
        seq = self.frame_writer.commit()
        return self.frames.slot_of(seq), seq

    def close(self):
        for ring in self.all.values():
            ring.close()
            ring.unlink()


@pytest.fixture
def rings():
    r = Rings()
    yield r
    r.close()


def make_worker(cls, params, rings, name, output, max_persons=MAX_PERSONS, runner=None,
                data_dir="/nonexistent-data"):
    ctx = WorkerContext(name, 1, dict(rings.all), {"max_persons": max_persons, "source": {"spec": "sample"},
                                                   "data_dir": data_dir}, runner=runner)
    worker = cls(params, ctx)
    rings.all[output].set_owner(1)
    worker.out = Output(rings.all[output], 1)
    return worker


def detection_item(rings, slot, seq, boxes, track_ids=None, n_found=None, frame_id=None):
    rec = np.zeros((), rings.detections.dtype)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    n = len(boxes)
    rec["frame_id"] = rings.frames.slot_record(slot)["frame_id"] if frame_id is None else frame_id
    rec["t_capture_ns"] = 5
    rec["frame_slot"], rec["frame_seq"] = slot, seq
    frame = rings.frames.slot_record(slot)
    rec["frame_height"], rec["frame_width"] = frame["height"], frame["width"]
    rec["count"] = n
    rec["n_found"] = n if n_found is None else n_found
    rec["boxes"][:n] = boxes
    rec["scores"][:n] = np.linspace(0.9, 0.5, n) if n else []
    rec["track_ids"][:] = -1
    rec["track_ids"][:n] = np.arange(10, 10 + n) if track_ids is None else track_ids
    return ReadItem(seq=2 * (int(rec["frame_id"]) + 1), slot=0, record=rec)


def last_pose(rings):
    seq = rings.poses.newest_seq()
    assert seq > 0, "nothing was written to the poses ring"
    return rings.poses.slot_record(rings.poses.slot_of(seq)).copy()


@pytest.fixture(scope="module")
def inference_cls():
    from workers.inference import Inference, Params
    return Inference, Params


@pytest.fixture
def inference(rings, inference_cls):
    cls, Params = inference_cls
    worker = make_worker(cls, Params(model="poco-pare", smpl="off", backend_options=dict(FAST), backend="torch"),
                         rings, "inference", "poses")
    worker.setup()
    yield worker
    worker.stop()


def textured(h=H, w=W, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------ inference

def test_batch_of_n_persons_gives_n_results_with_the_same_ids(rings, inference):
    slot, seq = rings.write_frame(textured())
    boxes = [[10, 10, 60, 110], [70, 20, 110, 100], [120, 30, 150, 90]]
    item = detection_item(rings, slot, seq, boxes, track_ids=[7, 3, 42], n_found=5)
    assert inference.process(item) is WROTE
    rec = last_pose(rings)
    assert rec["count"] == 3 and rec["n_found"] == 5
    assert list(rec["track_ids"][:3]) == [7, 3, 42] and list(rec["track_ids"][3:]) == [-1]
    np.testing.assert_array_equal(rec["boxes"][:3], np.asarray(boxes, np.float32))
    np.testing.assert_allclose(rec["scores"][:3], [0.9, 0.7, 0.5], rtol=1e-6)
    for key, width in (("global_orient", 3), ("body_pose", 69), ("betas", 10), ("transl", 3),
                       ("joint_uncertainty", 24)):
        assert np.all(np.isfinite(rec[key][:3])), key
        assert rec[key].shape[1:] == (width,)
    assert np.all(rec["transl"][:3, 2] > 0), "translation must be in front of the camera"
    assert np.all((rec["joint_uncertainty"][:3] > 0) & (rec["joint_uncertainty"][:3] < 1))
    # different boxes -> different full-image translations
    assert len({tuple(np.round(t, 4)) for t in rec["transl"][:3]}) == 3
    assert rec["untrained"] == 1 and rec["model"] == b"poco-pare" and rec["backend"] == b"torch"
    assert rec["precision"] == b"fp32" and rec["has_joints"] == 0
    assert rec["frame_id"] == rings.frames.slot_record(slot)["frame_id"]
    st = rec["stamps_ns"]
    from pipeline.runtime.records import STAGE_INDEX
    assert 0 < st[STAGE_INDEX["infer_start"]] <= st[STAGE_INDEX["infer_end"]]
    info = inference.info()
    assert info["untrained"] is True and "UNTRAINED" in info["description"]
    assert info["checkpoint"].startswith("none")


def test_batch_results_match_single_person_runs(rings, inference):
    """Batching must not mix persons: person i of a batch equals the same box run alone."""
    slot, seq = rings.write_frame(textured(seed=3))
    boxes = [[10, 10, 60, 110], [90, 5, 150, 115]]
    assert inference.process(detection_item(rings, slot, seq, boxes)) is WROTE
    batch = last_pose(rings)
    for i, box in enumerate(boxes):
        # a newer frame_id: the poses ring only accepts records of newer frames
        assert inference.process(detection_item(rings, slot, seq, [box], frame_id=100 + i)) is WROTE
        alone = last_pose(rings)
        np.testing.assert_allclose(alone["betas"][0], batch["betas"][i], atol=1e-4)
        np.testing.assert_allclose(alone["transl"][0], batch["transl"][i], atol=1e-4)


def test_overwritten_frame_slot_is_skipped_not_misread(rings, inference):
    slot, seq = rings.write_frame(textured())
    item = detection_item(rings, slot, seq, [[10, 10, 60, 110]])
    for _ in range(rings.frames.slots):  # capture laps the ring: the slot now holds a newer frame
        rings.write_frame(textured(seed=9))
    assert rings.frames.slot_seq(slot) != seq
    before = rings.poses.newest_seq()
    assert inference.process(item) is None
    assert rings.poses.newest_seq() == before, "a stale frame must not produce a pose record"
    assert inference.stale == 1 and inference.drops == 1 and inference.extras["stale_frames"] == 1


def test_slot_overwritten_during_the_crop_is_skipped(rings, inference, monkeypatch):
    """The seq is re-checked after cropping: a write that lands mid-crop is caught too."""
    slot, seq = rings.write_frame(textured())
    assert_overwrite_during_crop_is_skipped(rings, inference, detection_item(rings, slot, seq, [[10, 10, 60, 110]]),
                                            monkeypatch)


def assert_overwrite_during_crop_is_skipped(rings, worker, item, monkeypatch):
    """Capture laps the frames ring while `worker` crops `item`: no record, one stale frame."""
    import pipeline.models.preprocess as pre

    real = pre.crop_cv2

    def crop_then_overwrite(*args, **kwargs):
        out = real(*args, **kwargs)
        for _ in range(rings.frames.slots):
            rings.write_frame()
        return out

    monkeypatch.setattr(pre, "crop_cv2", crop_then_overwrite)
    before = rings.poses.newest_seq()
    assert worker.process(item) is None
    assert rings.poses.newest_seq() == before and worker.stale == 1


def test_no_person_still_writes_a_record(rings, inference):
    slot, seq = rings.write_frame()
    assert inference.process(detection_item(rings, slot, seq, np.zeros((0, 4)))) is WROTE
    rec = last_pose(rings)
    assert rec["count"] == 0 and rec["n_found"] == 0 and rec["untrained"] == 1
    assert list(rec["track_ids"]) == [-1] * MAX_PERSONS
    assert inference.empty == 1


def test_box_partly_outside_the_image_is_zero_padded(rings, inference):
    from pipeline.models.preprocess import IMG_MEAN, IMG_STD

    white = np.full((H, W, 3), 255, np.uint8)
    slot, seq = rings.write_frame(white)
    det = detection_item(rings, slot, seq, [[-40, -30, 60, 80]]).record
    img, centres, sides = inference._crop(det, det["boxes"][:1].astype(np.float64))
    img = np.asarray(img)
    zero = -IMG_MEAN / IMG_STD  # a black (padding) pixel after normalisation
    one = (1.0 - IMG_MEAN) / IMG_STD
    np.testing.assert_allclose(img[0, :, 0, 0], zero, atol=1e-5)      # top-left: outside the frame
    np.testing.assert_allclose(img[0, :, -1, -1], one, atol=1e-5)     # bottom-right: inside, white
    assert inference.process(detection_item(rings, slot, seq, [[-40, -30, 60, 80]])) is WROTE
    assert np.all(np.isfinite(last_pose(rings)["transl"][0]))


def test_unusable_boxes_are_dropped_not_crashed_on(rings, inference):
    slot, seq = rings.write_frame(textured())
    item = detection_item(rings, slot, seq, [[10, 10, 60, 110], [50, 50, 50, 90], [np.nan, 0, 5, 5]],
                          track_ids=[1, 2, 3])
    assert inference.process(item) is WROTE
    rec = last_pose(rings)
    assert rec["count"] == 1 and rec["track_ids"][0] == 1 and rec["n_found"] == 3
    assert inference.bad_boxes == 2


def test_live_settings_are_checked(inference):
    with pytest.raises(SettingError, match="profile"):
        inference.on_set("nope", 1)
    with pytest.raises(SettingError, match="iterations"):
        inference.on_set("profile", -3)
    # the trace is a file write: only inside the run's output folder
    with pytest.raises(SettingError, match="outside the run's output folder"):
        inference.on_set("profile", {"iterations": 1, "out_dir": "/etc/posepipe-trace"})
    assert inference.recorder is None


# ------------------------------------------------------------------------------ bad setup

def _setup_error(rings, inference_cls, data_dir="/nonexistent-data", **params):
    cls, Params = inference_cls
    params.setdefault("backend", "torch")
    worker = make_worker(cls, Params(smpl="off", backend_options=dict(FAST), **params), rings, "inference", "poses",
                         data_dir=data_dir)
    with pytest.raises(Exception) as err:
        worker.setup()
    return str(err.value)


def test_checkpoint_of_the_other_variant_is_refused_by_name(rings, inference_cls, tmp_path):
    import torch

    path = tmp_path / "poco_pare.pt"
    torch.save({"head.pose_mlp.weight": torch.zeros(1)}, path)  # a PARE key layout
    message = _setup_error(rings, inference_cls, model="poco-cliff", checkpoint=str(path))
    assert "POCO-PARE checkpoint" in message and "--model poco-pare" in message and str(path) in message


def test_missing_checkpoint_is_an_error_not_random_weights(rings, inference_cls, tmp_path):
    path = tmp_path / "nope.pt"
    message = _setup_error(rings, inference_cls, model="poco-pare", checkpoint=str(path))
    assert str(path) in message and "does not exist" in message


def test_default_checkpoint_from_data_dir_is_used(rings, inference_cls, tmp_path):
    (tmp_path / "poco_pare.pt").write_bytes(b"")  # present but empty: must be loaded (and refused)
    message = _setup_error(rings, inference_cls, model="poco-pare", data_dir=str(tmp_path))
    assert "poco_pare.pt" in message and "empty" in message


def test_unavailable_device_and_backend_fail_clearly(rings, inference_cls):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this checks the message on a machine without CUDA")
    assert "CUDA is not available" in _setup_error(rings, inference_cls, model="poco-pare", device="cuda")
    assert "allowed: auto, cpu" in _setup_error(rings, inference_cls, model="poco-pare", device="tpu")
    message = _setup_error(rings, inference_cls, model="poco-pare", backend="compile")
    # the refusal itself (the backend's name alone would be in any message about it)
    assert "'compile' needs a CUDA GPU" in message and "backend=onnx on CPU" in message, message


def test_ab_tee_copies_exactly_the_consumed_detections(rings, inference):
    """For A/B the supervisor makes A copy every detections record it consumes into a tee ring
    that B reads with policy `next`: B then sees exactly A's records, in order, nothing else."""
    tee = Ring.create("detections_ab", rings.detections.dtype, 8, rings.run_id)
    try:
        b_reader = tee.reader("next")
        consumed = []
        for i in range(3):
            slot, seq = rings.write_frame(textured(seed=i))
            if i == 1:
                assert inference.on_set("ab_tee", tee.shm_name) == tee.shm_name   # A/B starts here
            item = detection_item(rings, slot, seq, [[20, 10, 80, 110]])
            inference.process(item)
            if i >= 1:
                consumed.append(item.record)
        inference.flush()
        got = [b_reader.read(timeout=0) for _ in range(3)]
        assert got[2] is None and b_reader.overruns == 0
        for want, item in zip(consumed, got[:2]):
            for field in want.dtype.names:    # fields, not bytes: padding is not copied
                np.testing.assert_array_equal(item.record[field], want[field], err_msg=field)
        assert inference.extras["ab_tee_written"] == 2
        assert inference.on_set("ab_tee", "") == "off" and "ab_tee" not in inference.extras
        slot, seq = rings.write_frame(textured(seed=9))
        inference.process(detection_item(rings, slot, seq, [[20, 10, 80, 110]]))
        assert b_reader.read(timeout=0) is None     # A/B over: nothing more is copied
        with pytest.raises(SettingError, match="does not exist"):
            inference.on_set("ab_tee", "posepipe-nosuch-ring")
    finally:
        tee.close()
        tee.unlink()


# ------------------------------------------------------------------------------ detection

@pytest.fixture(scope="module")
def detection_cls():
    from workers.detection import Detection, Params
    return Detection, Params


def frame_item(rings, slot, seq):
    return ReadItem(seq=seq, slot=slot, record=rings.frames.slot_record(slot))


class FakeRunner:
    """Just what Worker.input_valid/progress use from the runner."""

    def __init__(self, reader):
        self.reader = reader

    def event(self, *args, **kwargs):
        pass


def test_center_detection_writes_the_frame_reference(rings, detection_cls):
    cls, Params = detection_cls
    worker = make_worker(cls, Params(kind="center"), rings, "detection", "detections")
    worker.setup()
    slot, seq = rings.write_frame(textured())
    assert worker.process(frame_item(rings, slot, seq)) is WROTE
    rec = rings.detections.slot_record(rings.detections.slot_of(rings.detections.newest_seq()))
    assert (rec["frame_slot"], rec["frame_seq"]) == (slot, seq)
    assert (rec["frame_height"], rec["frame_width"]) == (H, W)
    assert rec["count"] == 1 and rec["n_found"] == 1 and rec["track_ids"][0] == 0
    np.testing.assert_allclose(rec["boxes"][0], [20, 0, 140, 120])
    assert rec["frame_id"] == rings.frames.slot_record(slot)["frame_id"]
    from pipeline.runtime.records import STAGE_INDEX
    assert rec["stamps_ns"][STAGE_INDEX["detect_end"]] >= rec["stamps_ns"][STAGE_INDEX["detect_start"]] > 0
    info = worker.info()
    assert info["single_person"] is True and info["detector"] == "center"
    assert "ONE person" in info["description"]


def test_detection_drops_a_frame_overwritten_while_detecting(rings, detection_cls):
    cls, Params = detection_cls
    reader = rings.frames.reader("latest")
    worker = make_worker(cls, Params(kind="center"), rings, "detection", "detections", runner=FakeRunner(reader))
    worker.setup()
    rings.write_frame(textured())
    item = reader.read(timeout=0.1, copy=False)
    real = worker.detector.detect

    def detect_then_overwrite(rgb):
        out = real(rgb)
        for _ in range(rings.frames.slots):
            rings.write_frame()
        return out

    worker.detector.detect = detect_then_overwrite
    before = rings.detections.newest_seq()
    assert worker.process(item) is None
    assert rings.detections.newest_seq() == before
    assert worker.drops == 1 and worker.extras["torn_frames"] == 1


def test_empty_frame_gives_zero_persons(rings, detection_cls):
    cls, Params = detection_cls
    worker = make_worker(cls, Params(kind="center"), rings, "detection", "detections")
    worker.setup()
    slot, seq = rings.write_frame()
    rings.frames.slot_record(slot)["height"] = 0  # what a zero-size frame would look like
    assert worker.process(frame_item(rings, slot, seq)) is WROTE
    rec = rings.detections.slot_record(rings.detections.slot_of(rings.detections.newest_seq()))
    assert rec["count"] == 0 and rec["n_found"] == 0


def test_more_persons_than_max_persons_keeps_the_largest(rings, detection_cls):
    """The worker hands max_persons to the detector; the kept boxes are the largest, n_found counts all."""
    from pipeline.detectors import Detector
    from pipeline.detectors.postprocess import postprocess

    cls, Params = detection_cls
    worker = make_worker(cls, Params(kind="center"), rings, "detection", "detections", max_persons=2)
    worker.setup()
    post = worker.detector.post
    assert post.max_persons == 2

    class Crowd(Detector):  # five people of different sizes, through the detectors' own post-processing
        kind = "crowd"

        def setup(self):
            self._ready = True

        def _detect(self, rgb, height, width):
            sizes = [20, 60, 40, 80, 30]
            boxes = [[5 + 2 * i, 5, 5 + 2 * i + s, 5 + s] for i, s in enumerate(sizes)]
            return postprocess(boxes, [0.9] * 5, height, width, post)

        def reset(self):
            pass

        def info(self):
            return {"kind": self.kind}

    worker.detector = Crowd()
    worker.detector.setup()
    slot, seq = rings.write_frame(textured())
    assert worker.process(frame_item(rings, slot, seq)) is WROTE
    rec = rings.detections.slot_record(rings.detections.slot_of(rings.detections.newest_seq()))
    assert rec["count"] == 2 and rec["n_found"] == 5
    sides = rec["boxes"][:2, 2] - rec["boxes"][:2, 0]
    assert list(sides) == [80, 60]


def test_source_epoch_change_resets_the_detector(rings, detection_cls):
    cls, Params = detection_cls
    worker = make_worker(cls, Params(kind="center"), rings, "detection", "detections")
    worker.setup()
    resets = []
    worker.detector.reset = lambda: resets.append(1)
    for epoch in (0, 0, 1, 1, 2):
        slot, seq = rings.write_frame(epoch=epoch)
        worker.process(frame_item(rings, slot, seq))
    assert len(resets) == 2


def test_detection_live_settings(rings, detection_cls):
    cls, Params = detection_cls
    worker = make_worker(cls, Params(kind="center"), rings, "detection", "detections")
    worker.setup()
    assert worker.on_set("min_box_size", 40) == 40.0 and worker.detector.post.min_box_size == 40.0
    with pytest.raises(SettingError, match="no setting 'conf'"):
        worker.on_set("conf", 0.5)
    with pytest.raises(SettingError, match="allowed: area, score"):
        worker.on_set("order", "size")
    with pytest.raises(SettingError, match="live settings"):
        worker.on_set("bogus", 1)


def test_detection_lead_sets_how_early_a_frame_starts_before_inference_wants_it(rings, detection_cls):
    cls, Params = detection_cls
    worker = make_worker(cls, Params(kind="center"), rings, "detection", "detections")
    worker.setup()
    assert worker.demand_lead_ns(4.0) == int(11.0e6)        # default: 1.5 x p50 + 5 ms
    assert worker.on_set("lead", 0.5) == 0.5
    assert worker.demand_lead_ns(4.0) == int(2.0e6)
    assert worker.on_set("lead", 0) == 0.0 and worker.demand_lead_ns(4.0) == 0
    assert worker.on_set("lead", None) is None and worker.demand_lead_ns(4.0) == int(11.0e6)
    for bad in (-0.5, 11, "soon", True):
        with pytest.raises(SettingError, match="lead"):
            worker.on_set("lead", bad)
    with pytest.raises(WorkerError, match="detection.lead = -1"):
        make_worker(cls, Params(kind="center", lead=-1), rings, "detection", "detections").setup()


@pytest.mark.parametrize("content", [None, b"this is not a model"])
def test_yolo_weights_that_are_missing_or_not_a_model_are_named(rings, detection_cls, tmp_path, content):
    cls, Params = detection_cls
    path = tmp_path / "yolo_broken.pt"
    if content is not None:
        path.write_bytes(content)
    os.environ.setdefault("YOLO_CONFIG_DIR", str(tmp_path / "yolo-cfg"))
    worker = make_worker(cls, Params(kind="yolo", model=str(path)), rings, "detection", "detections")
    with pytest.raises(WorkerError, match=str(path)):
        worker.setup()


# ------------------------------------------------------------------------------ pipelining

class _LaterBackend:
    """Wraps the real backend like a GPU backend behaves: submit() returns at once, the
    outputs come from result() (here computed then), and asynchronous is True."""

    asynchronous = True

    def __init__(self, inner):
        self.inner = inner
        self.submitted = self.resolved = 0

    def submit(self, img, bbox_info):
        self.submitted += 1
        backend = self

        class _Later:
            def result(self):
                backend.resolved += 1
                return backend.inner.infer(img, bbox_info)
        return _Later()

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_pipelined_frames_are_written_in_order_one_frame_late_and_flushed(rings, inference):
    from pipeline.runtime.worker import Wrote

    person = [[10, 10, 60, 110]]
    slot, seq = rings.write_frame(textured(seed=5))
    assert inference.process(detection_item(rings, slot, seq, person, frame_id=1)) is WROTE
    sync_rec = last_pose(rings)  # the same frame through the synchronous path, for comparison

    inference.backend = _LaterBackend(inference.backend)
    inference.overlap = True  # what setup() decides for an asynchronous backend
    before = rings.poses.newest_seq()
    assert inference.process(detection_item(rings, slot, seq, person, frame_id=2)) is None
    assert inference.pending() and rings.poses.newest_seq() == before, "frame 2 waits for frame 3"
    assert inference.process(detection_item(rings, slot, seq, person, frame_id=3)) is WROTE
    rec = last_pose(rings)
    assert rec["frame_id"] == 2 and inference.pending()
    np.testing.assert_allclose(rec["betas"][0], sync_rec["betas"][0], atol=1e-5)
    np.testing.assert_allclose(rec["transl"][0], sync_rec["transl"][0], atol=1e-5)

    # Nobody in frame 4: nothing to wait for, so frames 3 and 4 are both written now, in order.
    assert inference.process(detection_item(rings, slot, seq, np.zeros((0, 4)), frame_id=4)) == Wrote(2)
    assert last_pose(rings)["frame_id"] == 4 and not inference.pending()

    # The runner's flush() (no new frame waiting) writes the held frame.
    assert inference.process(detection_item(rings, slot, seq, person, frame_id=5)) is None
    assert inference.flush() is WROTE and last_pose(rings)["frame_id"] == 5
    assert inference.flush() is None

    # A stale frame while one is held: the held one is still written.
    assert inference.process(detection_item(rings, slot, seq, person, frame_id=6)) is None
    for _ in range(rings.frames.slots):
        rings.write_frame()
    assert inference.process(detection_item(rings, slot, seq, person, frame_id=7)) is WROTE
    assert last_pose(rings)["frame_id"] == 6 and not inference.pending()
    assert inference.backend.submitted == inference.backend.resolved == 4

    # overlap_frames: false (or a synchronous backend): every frame is written by its own process()
    inference.overlap = False
    slot, seq = rings.write_frame(textured(seed=5))
    assert inference.process(detection_item(rings, slot, seq, person, frame_id=8)) is WROTE
    assert last_pose(rings)["frame_id"] == 8 and not inference.pending()


@pytest.mark.gpu
def test_onnx_backend_on_a_gpu_host_runs_fp32(rings, inference_cls, tmp_path):
    """Issue 18: `--backend onnx` on a GPU host used to fail (auto precision became fp16, which
    onnx refuses). Now: fp32, on the GPU with onnxruntime-gpu, else on the CPU."""
    import onnxruntime
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (run on the device machine)")
    cls, Params = inference_cls
    worker = make_worker(cls, Params(model="poco-pare", smpl="off", backend="onnx", backend_options={"seed": 0}),
                         rings, "inference", "poses", data_dir=str(tmp_path))
    worker.setup()
    try:
        gpu_ort = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
        assert worker.precision == "fp32" and worker.device == ("cuda" if gpu_ort else "cpu")
        slot, seq = rings.write_frame(textured())
        assert worker.process(detection_item(rings, slot, seq, [[10, 10, 60, 110]])) is WROTE
        assert last_pose(rings)["backend"] == b"onnx"
    finally:
        worker.stop()


def test_warm_up_prepares_the_persons_in_view_and_the_model_gets_the_thread_budget(rings, inference_cls,
                                                                                  monkeypatch):
    """Issue 18: a restarted worker warms up batch 1 and the batch the newest detections need
    (not every size up to max_persons), with the threads the supervisor gave it."""
    import torch

    cls, Params = inference_cls
    monkeypatch.setenv("POSEPIPE_THREADS", "1")
    slot, seq = rings.write_frame(textured())
    three = detection_item(rings, slot, seq, [[10, 10, 60, 110], [70, 20, 110, 100], [120, 30, 150, 90]])
    rings.detections.writer(0).write(three.record)
    before = torch.get_num_threads()
    worker = make_worker(cls, Params(model="poco-pare", smpl="off", backend="torch", backend_options=dict(FAST)),
                         rings, "inference", "poses")
    try:
        worker.setup()
        assert worker.backend.info()["warm_batches"] == [1, 3]
        info = worker.info()
        assert info["threads"] == 1 and torch.get_num_threads() == 1 and info["backend_choice"] == "torch"
    finally:
        worker.stop()
        torch.set_num_threads(before)
