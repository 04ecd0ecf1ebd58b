"""The TFLite -> torch conversion gives LiteRT's own outputs for BlazePose's detector and its
pose landmark model."""
import importlib.util

import numpy as np
import pytest

from pipeline.models.tflite import TfliteError

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mediapipe") is None or importlib.util.find_spec("ai_edge_litert") is None,
    reason="needs the mediapipe wheel (its models) and ai-edge-litert")


def test_detector_outputs_match_litert():
    import torch

    from pipeline.models.tflite import TfliteModel, mediapipe_model_path
    from pipeline.models.tflite_torch import build_module
    path = mediapipe_model_path("pose_detection")
    net = build_module(path)
    lite = TfliteModel(path)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32)
    ref = lite(x)
    with torch.no_grad():
        got = [t.numpy() for t in net(torch.from_numpy(x))]
    assert [g.shape for g in got] == [r.shape for r in ref] == [(1, 2254, 12), (1, 2254, 1)]
    for g, r in zip(got, ref):
        assert np.abs(g - r).max() <= 1e-3 * max(1.0, np.abs(r).max())
    with torch.no_grad():   # a batch of two gives each image's own result
        two = net(torch.from_numpy(np.concatenate([x, -x])))
    np.testing.assert_allclose(two[0][:1].numpy(), got[0], atol=1e-3)


def test_landmark_model_outputs_match_litert(bus_crops):
    """The pose landmark model (MAX_POOL_2D, LOGISTIC besides the detector's operators), on real
    person crops, batched: landmarks, presence and world landmarks within 1e-3 of LiteRT's; the
    segmentation logits (up to ~1e3) within 1e-3 relative, with the same sign almost everywhere."""
    import torch

    from pipeline.models.tflite import TfliteModel, mediapipe_model_path
    from pipeline.models.tflite_torch import build_module
    path = mediapipe_model_path("pose_landmark_full")
    net = build_module(path)
    lite = TfliteModel(path)
    ref = [lite(bus_crops[i:i + 1]) for i in range(len(bus_crops))]
    with torch.no_grad():
        got = [t.numpy() for t in net(torch.from_numpy(bus_crops))]
    for k in (0, 1, 3, 4):
        want = np.concatenate([r[k] for r in ref])
        assert got[k].shape == want.shape
        assert np.abs(got[k] - want).max() <= 1e-3 * max(1.0, np.abs(want).max()), k
    seg, want = got[2], np.concatenate([r[2] for r in ref])
    assert np.abs(seg - want).max() <= 1e-3 * np.abs(want).max()
    assert ((seg > 0) == (want > 0)).mean() > 0.999


@pytest.fixture(scope="module")
def bus_crops():
    from pipeline.models.landmarks_ik import LandmarkNetwork
    from pipeline.sources.sample import load_photos
    rgb = load_photos()[0]    # bus.jpg
    return LandmarkNetwork.crops(rgb, [(300, 500), (700, 500), (100, 600)], [500, 500, 450])


def test_unsupported_operator_is_named(tmp_path):
    """A file with an operator the converter lacks is refused with the operator's name."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    from pipeline.models.tflite import mediapipe_model_path
    from pipeline.models.tflite_torch import build_module
    model = schema.ModelT.InitFromPackedBuf(bytearray(mediapipe_model_path("pose_landmark_full").read_bytes()), 0)
    for code in model.operatorCodes:
        if max(code.builtinCode, code.deprecatedBuiltinCode) == schema.BuiltinOperator.LOGISTIC:
            code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.TANH
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    patched = tmp_path / "patched.tflite"
    patched.write_bytes(bytes(builder.Output()))
    with pytest.raises(TfliteError, match=r"patched\.tflite uses the TFLite operator TANH"):
        build_module(patched)


def test_not_a_tflite_file(tmp_path):
    from pipeline.models.tflite_torch import build_module
    junk = tmp_path / "model.tflite"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(TfliteError, match="model.tflite is not a TFLite model"):
        build_module(junk)


@pytest.mark.gpu
def test_landmark_model_in_cuda_graphs_matches_litert(bus_crops):
    """The refit's GPU runtime: any crop count through the bucketed graphs (3 -> bucket 4, then 1,
    then 17 = 16 + 1 in two chunks) gives LiteRT's landmarks and presence for each crop."""
    import torch
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    from pipeline.models.landmarks_ik import GraphedLandmarks
    from pipeline.models.tflite import TfliteModel, mediapipe_model_path
    path = mediapipe_model_path("pose_landmark_full")
    lite = TfliteModel(path)
    ref = [lite(bus_crops[i:i + 1]) for i in range(len(bus_crops))]
    gpu = GraphedLandmarks(path, "cuda")
    try:
        # the first calls may run before the background captures are done (padded or chunked
        # into the buckets captured so far); the last ones in every bucket
        for wait in (False, True):
            if wait:
                assert gpu.wait_captured(timeout=120.0)
                assert sorted(gpu._graphs) == list(gpu.BUCKETS)
            for picks in ([0, 1, 2], [1], [i % 3 for i in range(17)]):
                raw, person, seg, world = gpu(bus_crops[picks])
                assert raw.shape == (len(picks), 195) and seg.shape == (len(picks), 256, 256, 1)
                for row, i in enumerate(picks):
                    # fp32 on another device's kernels: a little looser than the CPU's 1e-3
                    assert np.abs(raw[row] - ref[i][0][0]).max() <= 5e-3 * np.abs(ref[i][0]).max()
                    assert abs(person[row, 0] - ref[i][1][0, 0]) <= 5e-3
                    assert np.abs(world[row] - ref[i][4][0]).max() <= 5e-3
                    assert ((seg[row] > 0) == (ref[i][2][0] > 0)).mean() > 0.995
    finally:
        gpu.close()


@pytest.mark.gpu
def test_landmark_launches_run_beside_the_callers_stream_and_keep_their_outputs(bus_crops):
    """`launch` returns before the network ran (it runs on the model's own stream, while the
    caller's stream is busy); a second launch before the first was collected must not let the
    shared buffers overwrite the first batch's outputs."""
    import torch
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    from pipeline.models.landmarks_ik import GraphedLandmarks
    from pipeline.models.tflite import mediapipe_model_path
    gpu = GraphedLandmarks(mediapipe_model_path("pose_landmark_full"), "cuda")
    try:
        assert gpu.wait_captured(timeout=120.0)
        want_a, want_b = gpu(bus_crops[[0, 1]]), gpu(bus_crops[[2]])
        busy = torch.randn(4096, 4096, device="cuda")
        for _ in range(20):      # the caller's stream keeps working meanwhile
            busy = busy @ busy / 64.0
        first = gpu.launch(bus_crops[[0, 1]])
        second = gpu.launch(bus_crops[[2]])
        got_b, got_a = gpu.collect(second), gpu.collect(first)
        torch.cuda.synchronize()
        for got, want in ((got_a, want_a), (got_b, want_b)):
            for g, w in zip(got, want):
                np.testing.assert_array_equal(g, w)
    finally:
        gpu.close()
