import numpy as np
import pytest

from pipeline.config import load_config
from pipeline.detectors import DetectorError, make_detector


def test_fixed_boxes_scale_with_the_frame_and_keep_their_ids():
    det = make_detector("fixed", boxes=[[0.1, 0.2, 0.3, 0.9], [0.5, 0.1, 0.9, 0.95]], max_persons=8)
    det.setup()
    d = det.detect(np.zeros((100, 200, 3), np.uint8))
    assert d.count == 2 and d.n_found == 2
    # largest first (area order): the second box is bigger
    np.testing.assert_allclose(d.boxes[0], [100, 10, 180, 95])
    np.testing.assert_allclose(d.boxes[1], [20, 20, 60, 90])
    assert sorted(d.track_ids.tolist()) == [0, 1]
    d2 = det.detect(np.zeros((200, 400, 3), np.uint8))
    np.testing.assert_allclose(d2.boxes[0], [200, 20, 360, 190])


def test_fixed_boxes_over_max_persons_keep_the_largest():
    boxes = [[0.0, 0.0, 0.1 * (i + 1), 0.5] for i in range(6)]
    det = make_detector("fixed", boxes=boxes, max_persons=4)
    det.setup()
    d = det.detect(np.zeros((480, 640, 3), np.uint8))
    assert d.count == 4 and d.n_found == 6
    assert d.boxes[0][2] == pytest.approx(0.6 * 640)


@pytest.mark.parametrize("boxes", [None, [], [[0.5, 0.5, 0.4, 0.9]], [[0, 0, 1]], "nonsense", [[0, 0, float("nan"), 1]]])
def test_bad_fixed_boxes_are_refused_with_the_format(boxes):
    with pytest.raises(DetectorError, match="fractions of the frame"):
        make_detector("fixed", boxes=boxes)


def test_fixed_boxes_from_a_config_override():
    cfg = load_config(overrides=["detection.kind=fixed", "detection.boxes=[[0.1,0.1,0.4,0.9],[0.5,0.1,0.9,0.9]]"])
    params = cfg.workers["detection"].params
    kind = params["kind"] if isinstance(params, dict) else params.kind
    boxes = params["boxes"] if isinstance(params, dict) else params.boxes
    assert kind == "fixed" and len(boxes) == 2
