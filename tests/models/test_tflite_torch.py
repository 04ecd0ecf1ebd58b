"""The TFLite -> torch conversion gives LiteRT's own outputs for BlazePose's detector."""
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


def test_unsupported_operator_is_named():
    from pipeline.models.tflite import mediapipe_model_path
    from pipeline.models.tflite_torch import build_module
    with pytest.raises(TfliteError, match=r"pose_landmark_full\.tflite uses the TFLite operator MAX_POOL_2D"):
        build_module(mediapipe_model_path("pose_landmark_full"))


def test_not_a_tflite_file(tmp_path):
    from pipeline.models.tflite_torch import build_module
    junk = tmp_path / "model.tflite"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(TfliteError, match="model.tflite is not a TFLite model"):
        build_module(junk)
