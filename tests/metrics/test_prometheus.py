import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pipeline.metrics.engine import MetricsEngine
from pipeline.metrics.prometheus import PrometheusExporter, PrometheusPortInUse


def samples(text):
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_text_parses_and_counters_increase(make_frame, make_person):
    exp = PrometheusExporter()
    eng = MetricsEngine(exporter=exp)
    for i in range(3):
        eng.observe(make_frame(i, [make_person(), make_person()], untrained=True))
    eng.update_worker("inference", {"frames_out": 3, "drops": 1, "cpu_percent": 90.0, "rss_bytes": 5e8,
                                    "extras": {"gpu_util": 50}})
    eng.summary()
    a = samples(exp.text())
    assert a[("posepipe_frames_published_total", ())] == 3
    assert a[("posepipe_persons", ())] == 2
    assert a[("posepipe_untrained", ())] == 1
    assert a[("posepipe_worker_cpu_percent", (("worker", "inference"),))] == 90.0
    assert a[("posepipe_gpu_util_percent", (("worker", "inference"),))] == 50.0
    # a worker that measured no GPU numbers (on the CPU) has no GPU series at all, not a 0
    eng.update_worker("capture", {"frames_out": 3, "cpu_percent": 20.0})
    eng.summary()
    names = {key for key in samples(exp.text()) if key[1] == (("worker", "capture"),)}
    assert ("posepipe_worker_cpu_percent", (("worker", "capture"),)) in names
    assert not {n for n, _ in names if n.startswith("posepipe_gpu_")}
    assert a[("posepipe_stage_latency_seconds_count", (("stage", "end_to_end"),))] == 3
    for i in range(3, 5):
        eng.observe(make_frame(i, []))
    eng.update_worker("inference", {"frames_out": 5, "drops": 4, "skipped": 30})
    eng.update_worker("inference", {"frames_out": 2, "drops": 0, "skipped": 2})  # restarted worker
    b = samples(exp.text())
    assert b[("posepipe_frames_published_total", ())] == 5
    assert b[("posepipe_worker_frames_total", (("worker", "inference"),))] == 7
    assert b[("posepipe_worker_drops_total", (("worker", "inference"),))] == 4
    # frames passed over by design are their own counter, never added to the losses
    assert b[("posepipe_worker_skipped_total", (("worker", "inference"),))] == 32
    assert b[("posepipe_stage_latency_seconds_count", (("stage", "inference"),))] == 5


def test_http_endpoint_on_loopback_and_port_in_use():
    exp = PrometheusExporter()
    port = exp.serve("127.0.0.1", 0)
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert "posepipe_fps" in {f.name for f in text_string_to_metric_families(body)}
        other = PrometheusExporter()
        with pytest.raises(PrometheusPortInUse, match=rf"{port}.*metrics.prometheus_port"):
            other.serve("127.0.0.1", port)
    finally:
        exp.close()
    with pytest.raises(ValueError, match="metrics.prometheus_port"):
        PrometheusExporter().serve("127.0.0.1", 70000)
