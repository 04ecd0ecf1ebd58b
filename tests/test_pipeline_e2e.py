"""End to end with real processes, rings and sockets: start -> frames through every stage to
a native-stream subscriber -> stop, with nothing left behind (the pipeline_env fixture)."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline_helpers import foreground_pipeline, interrupt, native_endpoint, receive_frames, request, wait_for, workers

pytestmark = [pytest.mark.timeout(120)]


def test_detached_start_stream_status_set_stop(run_cli, small_config):
    out = run_cli("start", "--detach", "--config", small_config, check=True)
    assert "started run" in out.stdout
    try:
        status = request("status")
        assert status["state"] == "running"
        assert {w["state"] for w in status["workers"]} == {"running"}
        frames = receive_frames(native_endpoint(status), 10)
        ids = [f.frame_id for f in frames]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        f = frames[-1]
        assert (f.frame_width, f.frame_height) == (320, 240)
        assert f.model == "poco-pare" and f.backend == "torch" and f.untrained and len(f.persons) == 1
        np.testing.assert_array_equal(f.persons[0].box, [40, 0, 280, 240])  # the `center` detector
        assert f.persons[0].body_pose.shape == (69,) and np.all(np.isfinite(f.persons[0].body_pose))
        assert f.persons[0].transl[2] > 0
        for stage in ("capture", "frame_written", "detect_start", "detect_end", "infer_start", "infer_end",
                      "publish"):
            assert stage in f.stamps_ns, stage
        stamps = [f.stamps_ns[s] for s in ("capture", "frame_written", "detect_end", "infer_end", "publish")]
        assert stamps == sorted(stamps)

        status = wait_for(lambda: (s := request("status")) and
                          all(w["frames_out"] > 0 for w in s["workers"]) and s, what="stats in status")
        w = workers(status)
        assert w["inference"]["info"]["untrained"] is True
        assert w["detection"]["info"]["detector"] == "center" and w["detection"]["info"]["single_person"]
        assert all(x["rss_bytes"] > 0 and x["pid"] for x in status["workers"])

        table = run_cli("status", check=True).stdout
        for name in ("capture", "detection", "inference", "publisher"):
            assert name in table
        assert run_cli("set", "detection", "min_box_size=20", check=True).stdout.strip() == \
            "detection.min_box_size = 20.0"
        bad = run_cli("set", "inference", "nope=1")
        assert bad.returncode != 0, bad.stdout
        assert "has one live setting, profile=N" in bad.stderr and "'nope'" in bad.stderr, bad.stderr
        watch = run_cli("watch", "--count", "3", check=True).stdout.splitlines()
        assert len(watch) == 3 and all(line.startswith("frame ") for line in watch)
    finally:
        stop = run_cli("stop")
    assert stop.returncode == 0, stop.stderr
    assert "stopped run" in stop.stdout
    assert run_cli("status").returncode != 0


def test_foreground_seconds_prints_summary(run_cli, small_config):
    proc = run_cli("start", "--config", small_config, "--seconds", "3", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "published" in proc.stdout and "stopped (--seconds 3 elapsed)" in proc.stdout
    assert "fps" in proc.stderr  # the live progress line


def test_video_at_end_stop_finishes_cleanly(run_cli, small_config, small_video):
    # live mode (newest frame wins) on purpose: lossless runs are tests/test_progress.py's
    proc = run_cli("start", "--config", small_config, "--source", small_video, "source.every_frame=false",
                   "source.at_end=stop", "source.options={realtime: false}", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "capture finished: end of source" in proc.stdout


def test_oversized_frames_are_downscaled_into_the_ring(run_cli, small_config):
    run_cli("start", "--detach", "--config", small_config, "rings.frames.max_height=120",
            "rings.frames.max_width=160", check=True)
    try:
        frames = receive_frames(native_endpoint(request("status")), 3)
        assert (frames[-1].frame_width, frames[-1].frame_height) == (160, 120)
    finally:
        assert run_cli("stop").returncode == 0


def test_pause_and_resume_a_worker(run_cli, small_config):
    from pipeline.client import NativeClient

    run_cli("start", "--detach", "--config", small_config, check=True)
    try:
        endpoint = native_endpoint(request("status"))
        before = receive_frames(endpoint, 2)[-1].frame_id
        assert run_cli("pause", "detection", check=True).stdout.strip() == "detection paused"
        assert workers(request("status"))["detection"]["state"] == "paused"
        with NativeClient(endpoint) as client:
            # At most what was in flight: inference's current item and the newest detection.
            for _ in range(3):
                if client.receive(timeout=4.0) is None:
                    break
            assert client.receive(timeout=1.5) is None, "frames kept flowing while detection was paused"
        run_cli("resume", "detection", check=True)
        after = receive_frames(endpoint, 2)
        assert after[0].frame_id > before
        assert workers(request("status"))["detection"]["state"] == "running"
        bad = run_cli("pause", "nosuchworker")
        assert bad.returncode != 0 and "unknown worker 'nosuchworker'" in bad.stderr
    finally:
        assert run_cli("stop").returncode == 0


def test_ctrl_c_stops_a_foreground_pipeline_cleanly(pipeline_env, small_config):
    with foreground_pipeline(small_config) as proc:
        receive_frames(native_endpoint(request("status")), 3)
        out, err = interrupt(proc, timeout=20)
    assert proc.returncode == 0, err
    assert "stopped (SIGINT)" in out


def test_swap_is_make_before_break(run_cli, small_config):
    import psutil

    from pipeline.client import NativeClient

    run_cli("start", "--detach", "--config", small_config, check=True)
    try:
        old = workers(request("status"))["inference"]
        endpoint = native_endpoint(request("status"))
        with NativeClient(endpoint) as client:
            client.receive(timeout=5)
            out = run_cli("swap", "inference", "threads=2", timeout=120, check=True).stdout
            assert f"generation {old['generation']} -> {old['generation'] + 1}" in out
            frames = []
            while len([f for f in frames if f.generation == old["generation"] + 1]) < 5:
                f = client.receive(timeout=15)
                assert f is not None, "no output after the swap"
                frames.append(f)
        ids = [f.frame_id for f in frames]
        assert ids == sorted(ids) and len(set(ids)) == len(ids), "a frame was published twice"
        gens = [f.generation for f in frames]
        assert gens == sorted(gens), "an old-generation frame came after the new generation took over"
        new = workers(request("status"))["inference"]
        assert new["generation"] == old["generation"] + 1 and new["state"] == "running" and new["restarts"] == 0
        wait_for(lambda: not psutil.pid_exists(old["pid"]) or
                 psutil.Process(old["pid"]).status() == psutil.STATUS_ZOMBIE, timeout=15, what="old generation exit")
        bad = run_cli("swap", "inference", "threads=-1", timeout=120)
        assert bad.returncode != 0 and "must be >= 0" in bad.stderr and "keeps running" in bad.stderr
        bad = run_cli("swap", "inference", "nope=1")
        assert bad.returncode != 0 and "workers.inference.params.nope is not a known key" in bad.stderr
        assert workers(request("status"))["inference"]["generation"] == new["generation"]
    finally:
        assert run_cli("stop").returncode == 0


def test_stages_in_process_with_image_sink_and_failing_sink():
    """Detection, inference and the publisher against real rings, without processes: the frame's
    pixels reach a `wants_image` sink, and a raising sink is counted, not fatal."""
    import uuid

    from pipeline.runtime.records import detections_dtype, frames_dtype, poses_dtype
    from pipeline.runtime.ring import Ring
    from pipeline.sinks.base import Sink
    from pipeline.runtime.worker import WROTE, Output, WorkerContext
    from workers.publisher import Params as PubParams
    from workers.publisher import Publisher
    from real_workers import INFERENCE_FAST
    from workers.detection import Detection
    from workers.detection import Params as DetParams
    from workers.inference import Inference
    from workers.inference import Params as InfParams

    run_id = "u" + uuid.uuid4().hex[:10]
    rings = {"frames": Ring.create("frames", frames_dtype(48, 64), 4, run_id),
             "detections": Ring.create("detections", detections_dtype(2), 4, run_id),
             "poses": Ring.create("poses", poses_dtype(2), 4, run_id),
             "published": Ring.create("published", poses_dtype(2), 4, run_id)}

    class ImageSink(Sink):
        name = "img"
        wants_image = True
        got = []

        def send(self, frame, image=None):
            self.got.append((frame, image))

    class BrokenSink(Sink):
        name = "broken"

        def send(self, frame, image=None):
            raise ConnectionError("peer gone")

    try:
        def make(cls, params, gen=1):
            w = cls(params, WorkerContext(cls.__name__, gen, rings, {"sinks": {}, "max_persons": 2}))
            w.out = Output(rings[cls.output], gen)
            return w

        import yaml

        det = make(Detection, DetParams(kind="center"))
        det.setup()
        inf = make(Inference, InfParams(**yaml.safe_load(INFERENCE_FAST)))
        inf.setup()
        pub = make(Publisher, PubParams(sinks=[]), gen=7)
        pub.setup()
        pub.sinks = [ImageSink(), BrokenSink()]
        pub._want_image = True
        readers = {n: rings[n].reader("next") for n in ("frames", "detections", "poses", "published")}

        fw = rings["frames"].writer(1)
        rec = fw.begin()
        rec["frame_id"], rec["t_capture_ns"], rec["height"], rec["width"] = 5, 123, 40, 60
        rec["pixels"][:40, :60] = np.arange(40 * 60 * 3, dtype=np.uint32).reshape(40, 60, 3) % 251
        fw.commit()
        det.input_valid = lambda item: readers["frames"].valid(item)
        assert det.process(readers["frames"].read(timeout=1, copy=False)) is WROTE
        assert inf.process(readers["detections"].read(timeout=1)) is WROTE
        assert pub.process(readers["poses"].read(timeout=1)) is WROTE

        frame, image = ImageSink.got[-1]
        assert frame.frame_id == 5 and frame.generation == 1  # keeps the inference generation
        np.testing.assert_array_equal(image, np.arange(40 * 60 * 3).reshape(40, 60, 3) % 251)
        assert pub.sink_errors["broken"] == 1
        assert readers["published"].read(timeout=1).record["stamps_ns"][-1] > 0  # publish stamp
        pub.stop()
    finally:
        for r in rings.values():
            r.close()
            r.unlink()
