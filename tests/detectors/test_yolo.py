"""The YOLO backend on a randomly initialised model built from ultralytics' yaml (no weights)."""
import importlib.util

import numpy as np
import pytest

from pipeline.detectors import DetectorError, make_detector

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ultralytics") is None,
                                reason="ultralytics is not installed")


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    from pipeline.detectors.yolo_model import build_untrained
    return build_untrained("yolo11n.yaml", tmp_path_factory.mktemp("yolo") / "yolo_random.pt")


@pytest.fixture(scope="module")
def confident_weights(tmp_path_factory):
    """Random weights whose class-0 logit is pushed up: every anchor is a 'person' at ~1.0,
    so NMS leaves a fixed set of boxes per image - enough to exercise the cut and the ids."""
    from pipeline.detectors.yolo_model import build_untrained
    return build_untrained("yolo11n.yaml", tmp_path_factory.mktemp("yolo") / "yolo_confident.pt", person_bias=12.0)


def check_well_formed(d, max_persons):
    n = len(d)
    assert d.boxes.shape == (n, 4) and d.boxes.dtype == np.float32
    assert d.scores.shape == (n,) and d.scores.dtype == np.float32
    assert d.track_ids.shape == (n,) and d.track_ids.dtype == np.int32
    assert n <= max_persons and d.n_found >= n
    if n:
        areas = (d.boxes[:, 2] - d.boxes[:, 0]) * (d.boxes[:, 3] - d.boxes[:, 1])
        assert (np.diff(areas) <= 0).all()


def test_random_model_runs_seed_preset(random_weights, bus_rgb):
    det = make_detector("yolo", model=random_weights, preset="seed", warmup=False)
    det.setup()
    d = det.detect(bus_rgb)
    check_well_formed(d, 8)
    info = det.info()
    assert info["imgsz"] == 256 and info["thresholds"] == {"conf": 0.8, "iou": 0.4, "min_score": 0.7}
    assert info["device"] == "cpu" and info["half"] is False and info["single_person"] is False
    assert info["tracker"] in ("iou", "ultralytics:bytetrack")
    det.close()


@pytest.mark.parametrize("tracker", [
    "iou",
    pytest.param("bytetrack", marks=pytest.mark.skipif(importlib.util.find_spec("lap") is None,
                                                       reason="ultralytics' trackers need `pip install lap`")),
])
def test_many_boxes_are_cut_and_tracked(confident_weights, zidane_rgb, tracker):
    det = make_detector("yolo", model=confident_weights, imgsz=160, max_persons=3,
                        min_box_size=0, tracker=tracker, warmup=False)
    det.setup()
    frame = zidane_rgb[::2, ::2]                 # a strided view, as from a ring slot
    d1 = det.detect(frame)
    check_well_formed(d1, 3)
    assert d1.n_found > 3 and (d1.track_ids >= 0).all()
    d2 = det.detect(frame)
    np.testing.assert_array_equal(d1.track_ids, d2.track_ids)   # same boxes, same ids
    det.reset()
    d3 = det.detect(frame)
    assert d3.track_ids.min() > d2.track_ids.max()              # new scene, new ids
    assert det.info()["tracker"] == {"iou": "iou", "bytetrack": "ultralytics:bytetrack"}[tracker]
    det.close()


def test_missing_weights_named(tmp_path):
    missing = tmp_path / "yolo11n.pt"
    det = make_detector("yolo", model=missing)
    with pytest.raises(DetectorError, match="yolo11n.pt") as e:
        det.setup()
    assert "does not exist" in str(e.value) and "never downloads" in str(e.value)


def test_file_that_is_not_a_model_named(tmp_path):
    junk = tmp_path / "yolo_junk.pt"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(DetectorError, match="yolo_junk.pt.*not a usable YOLO model"):
        make_detector("yolo", model=junk).setup()


def test_model_is_required_and_options_checked(random_weights):
    with pytest.raises(DetectorError, match="weights file"):
        make_detector("yolo")
    for kw in (dict(imgsz=250), dict(conf=1.5), dict(preset="fast"), dict(tracker="sort")):
        with pytest.raises(DetectorError):
            make_detector("yolo", model=random_weights, **kw)


def test_cpu_cannot_do_half_and_missing_cuda_is_clear(random_weights):
    with pytest.raises(DetectorError, match="half"):
        make_detector("yolo", model=random_weights, device="cpu", half=True).setup()
    import torch
    if not torch.cuda.is_available():
        with pytest.raises(DetectorError, match="CUDA"):
            make_detector("yolo", model=random_weights, device="cuda").setup()


def test_ultralytics_tracker_without_lap_is_refused(random_weights, monkeypatch):
    # lap is a dependency, so hide it: ultralytics would pip-install it at run time
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "lap" else find_spec(name, *a))
    with pytest.raises(DetectorError, match="pip install lap"):
        make_detector("yolo", model=random_weights, tracker="bytetrack", warmup=False).setup()
    auto = make_detector("yolo", model=random_weights, tracker="auto", warmup=False)
    auto.setup()
    assert auto.info()["tracker"] == "iou"   # auto falls back to our IoU tracker without lap
    auto.close()


@pytest.mark.gpu
def test_half_precision_on_cuda(random_weights, bus_rgb):
    import torch
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    det = make_detector("yolo", model=random_weights, device="cuda:0")
    det.setup()
    assert det.info()["half"] is True and det.info()["engine"] in ("compile", "cudagraph", "trt")
    check_well_formed(det.detect(bus_rgb), 8)
    det.close()


@pytest.mark.parametrize("crop", [(810, 810), (1080, 810), (405, 810)])
def test_own_runner_matches_ultralytics_predict(confident_weights, bus_rgb, crop):
    """The device-side letterbox and decoding give ultralytics' own boxes, on square, tall and
    wide frames (both pad the short side only to the stride); NMS IoU 1.0 keeps every anchor
    of the 32 px input, so the comparison covers every box."""
    square = np.ascontiguousarray(bus_rgb[:crop[0], :crop[1]])
    kw = dict(model=confident_weights, imgsz=32, iou=1.0, max_persons=64, min_box_size=0, tracker="none",
              warmup=False, order="score")
    ours, theirs = make_detector("yolo", **kw), make_detector("yolo", engine="ultralytics", **kw)
    ours.setup()
    theirs.setup()
    a, b = ours.detect(square), theirs.detect(square)
    assert ours.info()["engine"] == "eager" and theirs.info()["engine"] == "ultralytics"
    assert len(a) == len(b) == a.n_found == b.n_found > 1

    def rows(d):   # ultralytics clips its boxes to the image; equal scores may come in any order
        r = np.concatenate([np.clip(d.boxes, 0, crop[::-1] * 2), d.scores[:, None] * 1000], axis=1)
        return r[np.lexsort(r.T[::-1])]
    np.testing.assert_allclose(rows(a), rows(b), atol=1.0)


@pytest.mark.skipif(importlib.util.find_spec("lap") is None, reason="ultralytics' trackers need `pip install lap`")
def test_bytetrack_ids_stable_on_the_own_path(confident_weights, zidane_rgb):
    det = make_detector("yolo", model=confident_weights, imgsz=160, max_persons=3, min_box_size=0,
                        tracker="bytetrack", warmup=False)
    det.setup()
    frame = zidane_rgb[::2, ::2]
    ids = [tuple(det.detect(frame).track_ids) for _ in range(4)]
    assert len(ids[0]) == 3 and min(ids[0]) >= 0 and all(i == ids[0] for i in ids)
    det.reset()
    assert min(det.detect(frame).track_ids) > max(ids[0])       # a new scene: new ids
    assert det.info()["tracker"] == "ultralytics:bytetrack"


def _cuda_or_skip():
    import torch
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")


@pytest.mark.gpu
def test_cudagraph_matches_eager_on_cuda(confident_weights, bus_rgb):
    """Device-side letterbox + decode in a CUDA graph against the same path without a graph, both
    fp32: every anchor of a 32 px input kept (NMS IoU 1.0), boxes within 2 px. The fp16 graph keeps
    every anchor too; its boxes are not compared, because these saturated random weights put DFL
    bins at ties that fp16 breaks the other way (one bin = 8 px of input = 200 px of this frame)."""
    _cuda_or_skip()
    square = np.ascontiguousarray(bus_rgb[:810, :810])
    kw = dict(model=confident_weights, imgsz=32, iou=1.0, max_persons=64, min_box_size=0, tracker="none",
              order="score", device="cuda")
    graph = make_detector("yolo", engine="cudagraph", half=False, **kw)
    eager = make_detector("yolo", engine="eager", half=False, **kw)
    half = make_detector("yolo", engine="cudagraph", **kw)
    for det in (graph, eager, half):
        det.setup()
    assert half.info()["engine"] == "cudagraph" and half.info()["precision"] == "fp16"
    assert graph.info()["engine"] == "cudagraph" and graph.info()["device"].startswith("cuda")
    for _ in range(3):                        # first call captures, later calls replay
        a, b, h = graph.detect(square), eager.detect(square), half.detect(square)
    assert len(a) == len(b) == len(h) == 21

    def rows(d):
        r = np.concatenate([d.boxes, d.scores[:, None] * 100], axis=1)
        return r[np.lexsort(r.T[::-1])]
    np.testing.assert_allclose(rows(a), rows(b), atol=2.0)


@pytest.mark.gpu
def test_compile_engine_serves_at_once_then_its_compiled_graph_takes_over(confident_weights, bus_rgb, tmp_path):
    """engine="compile": a new frame size runs the cudagraph engine's graph while Inductor compiles
    on a thread; the compiled graph then takes over. fp32, every anchor of a 32 px input kept: the
    same count and scores as eager. Boxes agree within one DFL bin only: these saturated random
    weights put the bins at ties that Inductor's fused softmax breaks another way (one bin = 8 px
    of input = 202.5 px of this frame; measured on an H200: 14 of 84 coordinates one or two bins
    off, the rest equal), as fp16 does in test_cudagraph_matches_eager_on_cuda."""
    _cuda_or_skip()
    if importlib.util.find_spec("triton") is None:
        pytest.skip("no Triton: torch.compile cannot build GPU kernels here")
    square = np.ascontiguousarray(bus_rgb[:810, :810])
    kw = dict(model=confident_weights, imgsz=32, iou=1.0, max_persons=64, min_box_size=0, tracker="none",
              order="score", device="cuda", half=False)
    compiled = make_detector("yolo", engine="compile", cache_dir=tmp_path / "cache", **kw)
    eager = make_detector("yolo", engine="eager", **kw)
    compiled.setup()
    eager.setup()
    assert compiled.info()["engine"] == "compile"
    assert compiled.info()["compiled"] == [] and compiled.warming() == ""   # the warm-up frame's size is not compiled
    first = compiled.detect(square)          # a new size: served by the cudagraph graph, compiled meanwhile
    assert compiled.warming() == "compiling 810x810" or compiled.info()["compiled"] == ["810x810"]
    assert compiled._runner._compiled.wait(300)
    info = compiled.info()
    assert info["compiled"] == ["810x810"] and info["compiling"] == [] and "compile_error" not in info
    assert compiled.warming() == ""
    after = compiled.detect(square)
    assert compiled._runner._graphs[(810, 810)].compiled     # the compiled graph took over
    ref = eager.detect(square)
    assert len(first) == len(after) == len(ref) == 21

    def rows(d):
        r = np.concatenate([d.boxes, d.scores[:, None] * 100], axis=1)
        return r[np.lexsort(r.T[::-1])]
    np.testing.assert_allclose(rows(first), rows(ref), atol=2.0)
    np.testing.assert_allclose(np.sort(after.scores), np.sort(ref.scores), atol=1e-3)
    bin_px = 8 * 810 / 32
    nearest = np.abs(after.boxes[:, None, :] - ref.boxes[None, :, :]).max(axis=2).min(axis=1)
    assert (nearest <= 2 * bin_px + 1).all()
    compiled.close()
    eager.close()


@pytest.mark.gpu
def test_tensorrt_engine_through_ultralytics_export(random_weights, bus_rgb, tmp_path):
    _cuda_or_skip()
    if importlib.util.find_spec("tensorrt") is None:
        pytest.skip("TensorRT is not installed: the trt engine cannot be built here")
    det = make_detector("yolo", model=random_weights, device="cuda", engine="trt", imgsz=320,
                        cache_dir=tmp_path / "engines")
    det.setup()
    assert det.info()["engine"] == "trt" and det.info()["precision"] == "fp16"
    check_well_formed(det.detect(bus_rgb), 8)
    assert list((tmp_path / "engines").glob("*.engine"))
    det.close()


def test_the_tracker_gets_only_the_best_boxes_it_could_publish():
    """ByteTrack's time grows with its boxes: it sees 2 x max_persons of them, best first."""
    from types import SimpleNamespace

    from pipeline.detectors.postprocess import PostConfig
    from pipeline.detectors.yolo import TRACKED_PER_PERSON, YoloDetector
    n = 300
    boxes = np.stack([np.arange(n) * 5.0, np.zeros(n), np.arange(n) * 5.0 + 40, np.full(n, 80.0)], 1).astype(np.float32)
    scores = np.linspace(0.9, 0.3, n).astype(np.float32)
    seen = []

    def track(b, s, h, w):
        seen.append(s.copy())
        return b, s, np.arange(len(b), dtype=np.int32)

    det = SimpleNamespace(_runner=lambda rgb, conf, iou: (boxes, scores), conf=0.25, iou=0.45,
                          _ul_tracker=object(), _track=track, min_score=0.0, tracker="bytetrack",
                          iou_tracker=None, post=PostConfig(max_persons=4))
    out = YoloDetector._detect_fast(det, np.zeros((100, 2000, 3), np.uint8), 100, 2000)
    assert len(seen[0]) == TRACKED_PER_PERSON * 4 and np.allclose(seen[0], scores[:8])
    assert len(out) == 4
