"""The remi and recording sinks inside a real detached pipeline (center detector, POCO-PARE): full rate
with no relay listening, packets once the relay appears, a recording that loads after stop."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline_helpers import assert_publisher_keeps_inference_rate, detached_pipeline, free_port, request, workers

pytestmark = [pytest.mark.timeout(120)]


def test_relay_absent_then_present_and_recording(run_cli, small_config, tmp_path, fake_relay):
    relay_port = free_port()
    rec_path = tmp_path / "rec.npz"
    config = tmp_path / "sinks.yaml"
    text = small_config.read_text()
    assert "\nsinks:\n" in text
    config.write_text(text.replace("\nsinks:\n", "\nsinks:\n"
                      f"  remi: {{host: 127.0.0.1, port: {relay_port}, backoff_initial: 0.05, backoff_max: 0.3}}\n"
                      f"  recording: {{path: {str(rec_path)!r}, chunk_frames: 20}}\n"))
    with detached_pipeline(run_cli, config):
        assert_publisher_keeps_inference_rate()  # "full rate" with no relay listening
        extras = workers(request("status"))["publisher"]["extras"]
        assert extras.get("remi_sent", 0) == 0 and extras.get("remi_dropped", 0) > 0

        fake_relay(port=relay_port).assert_packets(10, timeout=40)
    from pipeline.sinks.recording import load_recording
    rec = load_recording(rec_path)
    assert rec.complete and len(rec) > 5
    ids = rec["frame_id"]
    assert np.all(np.diff(ids) > 0)
    assert rec["model"][0] == "poco-pare"
