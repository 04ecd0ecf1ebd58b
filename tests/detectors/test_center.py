import numpy as np
import pytest

from pipeline.detectors import DetectorError, make_detector


def test_centre_square_one_person_id_0():
    det = make_detector("center")
    det.setup()
    for h, w in [(720, 1280), (1080, 810), (50, 50)]:
        d = det.detect(np.zeros((h, w, 3), np.uint8))
        assert len(d) == 1 and d.n_found == 1 and d.track_ids[0] == 0
        x1, y1, x2, y2 = d.boxes[0]
        side = min(h, w)
        assert x2 - x1 == pytest.approx(side) and y2 - y1 == pytest.approx(side)
        assert (x1 + x2) / 2 == pytest.approx(w / 2) and (y1 + y2) / 2 == pytest.approx(h / 2)
    assert det.info()["single_person"] is True


def test_size_fraction_and_non_contiguous_view():
    det = make_detector("center", size=0.5)
    det.setup()
    big = np.zeros((400, 1200, 3), np.uint8)
    d = det.detect(big[:, ::2])          # a 400x600 strided view, as from a ring slot
    np.testing.assert_allclose(d.boxes[0], [200, 100, 400, 300])


def test_detect_before_setup_and_bad_options():
    with pytest.raises(DetectorError, match="setup"):
        make_detector("center").detect(np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(DetectorError):
        make_detector("center", size=1.5)
    det = make_detector("center")
    det.setup()
    with pytest.raises(DetectorError, match="empty"):
        det.detect(np.zeros((0, 0, 3), np.uint8))
