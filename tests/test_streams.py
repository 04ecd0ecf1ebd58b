"""Several sources in one pipeline (issue 20): the `sources:` config and `--source [NAME=]SPEC`,
the per-stream frame-id guards of a shared ring, the fair reader over several rings, cross-stream
batching in the inference worker, and a real two-stream pipeline where one camera dies."""
from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

from pipeline.config import ConfigError, load_config
from pipeline.config_streams import MAX_STREAMS, sources_from_args, split_source_arg
from pipeline.runtime.records import detections_dtype, frames_dtype, poses_dtype
from pipeline.runtime.ring import ReadItem, Ring
from pipeline.runtime.streams import MultiReader, wait_any

os.environ.setdefault("YOLO_OFFLINE", "1")


def _sources(*entries):
    return load_config(flags={"sources": list(entries)})


# ------------------------------------------------------------------------------ configuration
def test_source_args_names_and_specs():
    assert sources_from_args(()) is None
    assert sources_from_args(("clip.mp4",)) is None          # one plain source: today's source.spec
    assert sources_from_args(("0", "1")) == [{"name": "cam0", "spec": 0}, {"name": "cam1", "spec": 1}]
    assert sources_from_args(("left=0", "right=clip.mp4")) == [{"name": "left", "spec": 0},
                                                                {"name": "right", "spec": "clip.mp4"}]
    assert sources_from_args(("front=sample",)) == [{"name": "front", "spec": "sample"}]
    # '=' inside a URL is not a name
    assert split_source_arg("rtsp://host/x?a=b") == (None, "rtsp://host/x?a=b")
    assert split_source_arg("a=rtsp://host/x?a=b") == ("a", "rtsp://host/x?a=b")


def test_single_source_keeps_todays_workers_and_rings():
    cfg = load_config()
    assert [s.name for s in cfg.streams] == ["main"]
    assert "capture" in cfg.workers and cfg.workers["capture"].output == "frames"
    assert cfg.workers["detection"].input == "frames" and cfg.workers["detection"].inputs == ()
    assert cfg.workers["inference"].reads == ("frames",)


def test_several_sources_expand_into_per_stream_workers_and_rings():
    cfg = _sources({"name": "a", "spec": "sample", "options": {"width": 320, "height": 240}},
                   {"name": "b", "spec": "sample"})
    assert [s.name for s in cfg.streams] == ["a", "b"]
    assert cfg.streams[0].source.options == {"width": 320, "height": 240}
    assert cfg.workers["capture.a"].output == "frames.a" and cfg.workers["capture.a"].stream == 0
    assert cfg.workers["capture.b"].output == "frames.b" and cfg.workers["capture.b"].stream == 1
    assert "capture" not in cfg.workers
    assert cfg.workers["detection"].inputs == ("frames.a", "frames.b")
    assert cfg.workers["inference"].reads == ("frames.a", "frames.b")
    # consumers first: both captures start after detection
    order = list(cfg.workers)
    assert order.index("detection") < order.index("capture.a")
    # names default to cam<i>; a plain string entry is a spec
    cfg = load_config(overrides=["sources=[sample, 'x=sample']"])
    assert [s.name for s in cfg.streams] == ["cam0", "x"]


@pytest.mark.parametrize("sources, message", [
    ([{"name": "a", "spec": "sample"}, {"name": "a", "spec": "sample"}], "given twice"),
    ([{"name": "bad name", "spec": "sample"}, {"name": "b", "spec": "sample"}], "a stream name is"),
    ([{"name": "1st", "spec": "sample"}, {"name": "b", "spec": "sample"}], "a stream name is"),
    ([{"name": "a.b", "spec": "sample"}, {"name": "b", "spec": "sample"}], "a stream name is"),
    ([{"name": "a"}, {"name": "b", "spec": "sample"}], "sources[0].spec is missing"),
    ([{"name": "a", "spec": "sample", "fps": 3}], "sources[0].fps is not a known key"),
    ([{"name": f"c{i}", "spec": "sample"} for i in range(MAX_STREAMS + 1)], f"at most {MAX_STREAMS} streams"),
    ([], "non-empty list"),
    ([3.5], "expected a mapping"),
])
def test_bad_sources_are_config_errors(sources, message):
    with pytest.raises(ConfigError) as err:
        load_config(flags={"sources": sources})
    assert message in str(err.value)


def test_lossless_with_several_sources_is_refused_clearly():
    with pytest.raises(ConfigError) as err:
        load_config(flags={"sources": [{"name": "a", "spec": "sample"}, {"name": "b", "spec": "sample"}],
                           "every_frame": True})
    assert "lossless mode" in str(err.value) and "one source" in str(err.value)


def test_cpu_threads_for_capture_apply_to_every_capture():
    cfg = load_config(overrides=["cpu.threads.capture=1"],
                      flags={"sources": [{"name": "a", "spec": "sample"}, {"name": "b", "spec": "sample"}]})
    assert cfg.cpu.threads == {"capture": 1}


# ------------------------------------------------------------------------------ rings
def _write(ring, writer, stream: int, fid: int):
    rec = writer.begin()
    rec["frame_id"], rec["stream"], rec["height"] = fid, stream, 1
    return writer.commit()


def test_shared_ring_keeps_one_frame_id_guard_per_stream(run_id):
    ring = Ring.create("detections", detections_dtype(2), 8, run_id)
    try:
        w = ring.writer(0)
        rec = np.zeros((), ring.dtype)
        for stream, fid, ok in [(0, 100, True), (1, 5, True), (1, 5, False), (0, 99, False), (1, 6, True),
                                (0, 101, True)]:
            rec["stream"], rec["frame_id"] = stream, fid
            assert (w.write(rec) is not None) == ok, (stream, fid)
        assert ring.last_frame_id_of(0) == 101 and ring.last_frame_id_of(1) == 6
        rec["stream"] = MAX_STREAMS
        with pytest.raises(Exception, match="outside"):
            w.write(rec)
    finally:
        ring.close()
        ring.unlink()


def _two_rings(run_id):
    rings = [Ring.create(f"frames.{n}", frames_dtype(4, 4), 8, run_id) for n in ("a", "b")]
    return rings, [r.writer(0) for r in rings]


def test_multi_reader_is_fair_to_a_slow_stream_and_not_held_up_by_a_stalled_one(run_id):
    rings, writers = _two_rings(run_id)
    try:
        reader = MultiReader([r.reader("latest") for r in rings])
        fid = [0, 0]
        order = []
        for step in range(12):
            # stream a writes every step (fast), stream b every third step (slow)
            _write(rings[0], writers[0], 0, fid[0])
            fid[0] += 1
            if step % 3 == 0:
                _write(rings[1], writers[1], 1, fid[1])
                fid[1] += 1
            while (item := reader.read(timeout=0)) is not None:
                order.append(item.stream)
        assert order.count(1) == 4, order           # the slow stream loses nothing it wrote
        assert order.count(0) == 12, order
        # the two never take turns out of order: after a b item, an a item comes before the next b
        runs = "".join(map(str, order))
        assert "11" not in runs
        # a stalled stream (b writes nothing) does not hold a up
        t0 = time.monotonic()
        _write(rings[0], writers[0], 0, fid[0])
        item = reader.read(timeout=1.0)
        assert item is not None and item.stream == 0 and time.monotonic() - t0 < 0.5
        # and with both flooding, rounds alternate: each stream gets one item per round
        got = []
        for _ in range(6):
            fid[0] += 1
            fid[1] += 1
            _write(rings[0], writers[0], 0, fid[0])
            _write(rings[1], writers[1], 1, fid[1])
            got += [reader.read(timeout=0).stream, reader.read(timeout=0).stream]
        assert sorted(got) == [0] * 6 + [1] * 6
        reader.close()
    finally:
        for r in rings:
            r.close()
            r.unlink()


def test_waiting_on_several_rings_wakes_on_any_and_does_not_spin(run_id):
    rings, writers = _two_rings(run_id)
    try:
        reader = MultiReader([r.reader("latest") for r in rings])
        timer = threading.Timer(0.3, lambda: _write(rings[1], writers[1], 1, 0))
        cpu0, t0 = time.process_time(), time.monotonic()
        timer.start()
        item = reader.read(timeout=3.0)
        waited, cpu = time.monotonic() - t0, time.process_time() - cpu0
        timer.join()
        assert item is not None and item.stream == 1
        assert 0.25 < waited < 1.5, waited
        assert cpu < 0.15, f"waiting burned {cpu:.3f} s of CPU"
        words = [int(r._f["wake"][0]) for r in rings]
        t0 = time.monotonic()
        wait_any(rings, words, 0.05)  # nothing written: times out
        assert time.monotonic() - t0 >= 0.04
    finally:
        for r in rings:
            r.close()
            r.unlink()


# ------------------------------------------------------------------------------ cross-stream batching
class _Runner:
    """What the inference worker asks of its runner here: the input reader (and events)."""

    def __init__(self, ring):
        self.reader = ring.reader("latest")

    def event(self, kind, **data):
        pass


@pytest.mark.timeout(300)
@pytest.mark.parametrize("backend,device", [("torch", "cpu"),
                                            pytest.param("cudagraph", "cuda", marks=pytest.mark.gpu)])
def test_inference_batches_the_persons_of_several_streams_in_one_network_call(run_id, backend, device):
    from pipeline.runtime.worker import Output, WorkerContext
    from workers.inference import Inference, Params

    if device == "cuda":
        torch = pytest.importorskip("torch")
        if not torch.cuda.is_available():
            pytest.skip("needs a CUDA GPU (run on the device machine)")

    h, w = 120, 160
    frames = [Ring.create(f"frames.{n}", frames_dtype(h, w), 4, run_id) for n in ("a", "b")]
    dets = Ring.create("detections", detections_dtype(2), 8, run_id)
    poses = Ring.create("poses", poses_dtype(2), 8, run_id)
    rings = {"frames.a": frames[0], "frames.b": frames[1], "detections": dets, "poses": poses}
    ctx = WorkerContext("inference", 1, rings, {"max_persons": 2, "streams": ["a", "b"], "data_dir": "/nonexistent"},
                        runner=_Runner(dets))
    worker = Inference(Params(model="poco-pare", smpl="off", backend=backend, device=device, threads=1,
                              backend_options={"calibrate_bn": False, "seed": 0}), ctx)
    poses.set_owner(1)
    worker.out = Output(poses, 1)
    frame_writers = [f.writer(0) for f in frames]
    det_writer = dets.writer(0)
    rng = np.random.default_rng(0)

    def frame_and_detection(stream, fid):
        rec = frame_writers[stream].begin()
        rec["pixels"][:h, :w] = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        rec["height"], rec["width"], rec["frame_id"], rec["stream"] = h, w, fid, stream
        seq = frame_writers[stream].commit()
        d = np.zeros((), dets.dtype)
        d["frame_id"], d["stream"], d["t_capture_ns"] = fid, stream, 1
        d["frame_slot"], d["frame_seq"] = frames[stream].slot_of(seq), seq
        d["frame_height"], d["frame_width"] = h, w
        d["count"] = d["n_found"] = 1
        d["boxes"][0] = [40, 20, 100, 110]
        d["track_ids"][:] = [7, -1]
        dseq = det_writer.write(d)
        return ReadItem(seq=dseq, slot=dets.slot_of(dseq), record=dets.slot_record(dets.slot_of(dseq)).copy())

    try:
        worker.setup()
        worker.process(frame_and_detection(0, 0))      # the first item: nothing before it to join
        worker.flush()
        assert worker.extras.get("multi_stream_calls", 0) == 0
        frame_and_detection(1, 0)                      # stream b's record ...
        item = frame_and_detection(0, 1)               # ... then a newer one of stream a: the one read
        worker.process(item)
        worker.flush()
        assert worker.extras["multi_stream_calls"] == 1
        assert worker.batches == 2                     # two network calls for three records
        reader = poses.reader("next")
        reader.cursor = 0
        got = []
        while (it := reader.read(timeout=0)) is not None:
            got.append((int(it.record["stream"]), int(it.record["frame_id"]), int(it.record["count"])))
        assert sorted(got) == [(0, 0, 1), (0, 1, 1), (1, 0, 1)], got
    finally:
        worker.stop()
        for r in rings.values():
            r.close()
            r.unlink()


# ------------------------------------------------------------------------------ two streams, one dies
TWO_STREAMS = """
sources:
  - {name: a, spec: sample, options: {width: 320, height: 240, fps: 10}}
  - {name: b, spec: sample, options: {width: 320, height: 240, fps: 10}}
"""


@pytest.mark.timeout(300)
def test_two_streams_one_capture_killed_the_other_keeps_publishing(run_cli, tmp_path):
    from pipeline_helpers import (
        detached_pipeline,
        native_endpoint,
        request,
        wait_for,
        workers,
        write_pipeline_config,
    )

    from pipeline.client import NativeClient

    config = write_pipeline_config(tmp_path / "two.yaml", settings="health_timeout: 3, restart_delay: 0.2",
                                   inference="{model: landmarks-ik, threads: 1, min_process_ms: 150}")
    config.write_text(config.read_text() + TWO_STREAMS)
    frames = []
    stop = threading.Event()

    with detached_pipeline(run_cli, config):
        status = request("status")
        assert {"capture.a", "capture.b"} <= set(workers(status)) and status["streams"] == ["a", "b"]

        def collect(endpoint):
            with NativeClient(endpoint) as client:
                while not stop.is_set():
                    f = client.receive(timeout=0.2)
                    if f is not None:
                        frames.append((time.monotonic(), f.stream, f.frame_id, f.frame_width))

        thread = threading.Thread(target=collect, args=(native_endpoint(status),), daemon=True)
        thread.start()
        try:
            wait_for(lambda: {s for _, s, *_ in frames} == {"a", "b"} and len(frames) > 20, timeout=90,
                     what="both streams publishing")
            victim = workers(request("status"))["capture.a"]
            t_kill = time.monotonic()
            os.kill(victim["pid"], signal.SIGKILL)
            wait_for(lambda: (w := workers(request("status"))["capture.a"])["state"] == "running"
                     and w["pid"] != victim["pid"], timeout=60, what="capture.a restarted")
            wait_for(lambda: any(s == "a" and t > t_kill + 0.5 for t, s, *_ in frames), timeout=60,
                     what="stream a back after the restart")
            t_back = time.monotonic()
            time.sleep(2.0)
            status = request("status")
            # swap one stream's source live: the other stream is not touched
            t_swap = time.monotonic()
            out = run_cli("swap", "capture.b", "source=sample", "options={width: 160, height: 120, fps: 10}",
                          timeout=120, check=True).stdout
            assert "capture.b: generation 1 -> 2" in out, out
            wait_for(lambda: sum(s == "b" and w == 160 for _, s, _, w in frames) >= 3, timeout=60,
                     what="stream b from its new source")
            t_swapped = time.monotonic()
            after_swap = request("status")
        finally:
            stop.set()
            thread.join(5)
    b_times = [t for t, s, *_ in frames if s == "b" and t_kill - 2 <= t <= t_back + 2]
    gaps = np.diff(b_times)
    print(f"\nstream b around the kill of capture.a: {len(b_times)} frames, largest gap {gaps.max():.3f} s; "
          f"a back {t_back - t_kill:.2f} s after the kill")
    assert len(b_times) > 5 and gaps.max() < 1.0, f"stream b stalled: largest gap {gaps.max():.2f} s"
    a_times = [t for t, s, *_ in frames if s == "a" and t_swap - 1 <= t <= t_swapped]
    assert np.diff(a_times).max() < 1.0, "stream a stalled while stream b's source was swapped"
    assert all(w == 320 for _, s, _, w in frames if s == "a")
    sw = workers(after_swap)
    assert sw["capture.b"]["generation"] == 2 and sw["capture.a"]["generation"] == 2  # a: the restart
    assert "b=sample" in after_swap["source"]
    pairs = [(s, fid) for _, s, fid, _ in frames]
    assert len(pairs) == len(set(pairs)), "a (stream, frame_id) pair was published twice"
    for name in ("a", "b"):  # frame ids of each stream strictly increase, also across the restart
        ids = [fid for _, s, fid, _ in frames if s == name]
        assert ids == sorted(ids)
    ws = workers(status)
    assert ws["capture.a"]["restarts"] == 1 and ws["capture.b"]["restarts"] == 0
    # cross-stream batching happened in the real pipeline too (inference, held to >= 150 ms a
    # call, is slower than each stream's frames: both streams' records wait for each call)
    assert ws["inference"]["extras"].get("multi_stream_calls", 0) > 0, ws["inference"]["extras"]
    per = ws["publisher"]["extras"]["streams"]
    assert set(per) == {"a", "b", "total"} and per["b"]["fps"] > 0


# ------------------------------------------------------------------------------ what carries the stream
def _frame(stream="cam1", fid=3):
    from pipeline.pose.frame import Person, PosesFrame

    person = Person(track_id=4, box=np.array([1, 2, 3, 4], np.float32), score=0.5,
                    global_orient=np.zeros(3, np.float32), body_pose=np.zeros(69, np.float32),
                    betas=np.zeros(10, np.float32), transl=np.array([0, 0, 3], np.float32),
                    pred_cam=np.zeros(3, np.float32), joint_uncertainty=np.zeros(24, np.float32))
    return PosesFrame(frame_id=fid, t_capture_ns=time.monotonic_ns() - 5_000_000, generation=1, source_epoch=0,
                      frame_height=240, frame_width=320, model="poco-cliff", backend="torch", precision="fp32",
                      untrained=True, n_found=1, stamps_ns={}, persons=[person], stream=stream)


def test_stream_name_on_records_native_header_and_recordings(tmp_path):
    from pipeline.client import decode
    from pipeline.pose.frame import from_record
    from pipeline.sinks.native import encode_frame
    from pipeline.sinks.recording import RecordingSink, load_recording

    rec = np.zeros((), poses_dtype(2))
    rec["stream"] = 1
    assert from_record(rec, ["a", "b"]).stream == "b"
    assert from_record(rec).stream == "stream1" and from_record(np.zeros((), poses_dtype(2))).stream == "main"
    assert decode(list(encode_frame(_frame("cam1")))).stream == "cam1"
    sink = RecordingSink(tmp_path / "r.npz")
    sink.open()
    for i, name in enumerate(["cam0", "cam1", "cam0"]):
        sink.send(_frame(name, i))
    sink.close()
    got = load_recording(tmp_path / "r.npz")
    assert list(got["stream"]) == ["cam0", "cam1", "cam0"] and got.frame(1).stream == "cam1"


def test_per_stream_numbers_status_rows_and_csv_rows(tmp_path):
    import csv

    from pipeline.cli.progress import status_table
    from pipeline.metrics.engine import MetricsEngine
    from pipeline.metrics.streams import StreamStats

    stats = StreamStats(["a", "b"])
    for i in range(11):
        stats.add(0, 10.0 + i, now=100.0 + i * 0.1)   # a: 10 FPS
        if i % 2 == 0:
            stats.add(1, 50.0, now=100.0 + i * 0.1)   # b: 5 FPS
    stats.add(7, 1.0)                                   # an unknown stream is ignored
    summary = stats.summary(now=101.0)
    assert summary["a"]["fps"] == 10.0 and summary["b"]["fps"] == 5.0 and summary["total"]["published"] == 17
    assert summary["a"]["p50_ms"] == 15.0 and summary["b"]["p99_ms"] == 50.0
    status = {"workers": [{"name": "publisher", "module": "workers.publisher", "generation": 1, "state": "running",
                           "fps": 15.0, "p50_ms": 1, "p99_ms": 2, "frames_in": 1, "frames_out": 1, "drops": 0,
                           "cpu_percent": 1.0, "rss_bytes": 0, "extras": {"streams": summary}}]}
    table = status_table(status).splitlines()
    assert table[-4].split()[:2] == ["stream", "fps"]
    assert [r.split()[0] for r in table[-3:]] == ["a", "b", "total"]

    engine = MetricsEngine()
    for i in range(6):
        engine.observe(_frame("cam0", i))
        engine.observe(_frame("cam1", i))
    engine.record("Optimal", csv_path=tmp_path / "m.csv")
    with open(tmp_path / "m.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["Stream"] for r in rows] == ["total", "cam0", "cam1"]
    assert int(rows[0]["Frames"]) == 12 and int(rows[1]["Frames"]) == 6


def test_capture_rows_of_several_streams_are_summed_for_the_csv():
    from pipeline.metrics.streams import combine_stream_workers

    rows = [{"name": "capture.a", "generation": 2, "fps": 10.0, "cpu_percent": 5.0, "drops": 1, "p99_ms": 3.0},
            {"name": "capture.b", "generation": 1, "fps": 12.0, "cpu_percent": 7.0, "drops": 0, "p99_ms": 9.0},
            {"name": "detection", "fps": 20.0}]
    out = {r["name"]: r for r in combine_stream_workers(rows)}
    assert out["capture"]["fps"] == 22.0 and out["capture"]["cpu_percent"] == 12.0 and out["capture"]["drops"] == 1
    assert out["capture"]["p99_ms"] == 9.0 and out["capture"]["generation"] == 2 and "capture.a" in out


def test_source_options_are_the_defaults_of_every_stream():
    cfg = load_config(overrides=["source.options.width=320", "source.at_end=stop"],
                      flags={"sources": [{"name": "a", "spec": "sample"},
                                         {"name": "b", "spec": "sample", "options": {"width": 640}}]})
    assert cfg.streams[0].source.options == {"width": 320} and cfg.streams[1].source.options == {"width": 640}
    assert cfg.streams[0].source.at_end == "stop"
