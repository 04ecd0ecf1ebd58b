"""Live swap and A/B testing with real processes (issue 7, architecture.md §4).

The real workers (`center` detector, POCO-PARE with random weights on one thread). The swap
test runs behind a slow sample source (0.5 fps) so that inference keeps up and every frame
reaches the output: a lost frame at a hand-over then shows as a gap in frame ids. The A/B test
runs at 5 fps, faster than two POCOs on 2 cores: B is fed the detections A consumed (the tee),
so the variants still run on the same frames, and the pair rate says how many.
"""
from __future__ import annotations

import csv
import threading
import time

import pytest

from pipeline_helpers import native_endpoint, request, wait_for, workers, write_pipeline_config

pytestmark = [pytest.mark.timeout(400)]

FPS = 0.5
AB_FPS = 5.0


def _config(tmp_path, fps=FPS, slots=6):
    return write_pipeline_config(tmp_path / "swap.yaml", options=f"{{width: 320, height: 240, fps: {fps}}}",
                                 slots=slots, settings="health_timeout: 5",
                                 settings_for={"inference": "health_timeout: 10", "metrics": ""},
                                 metrics="{prometheus_port: 0}", shutdown_grace=5.0)


class Collector:
    """Every frame of the native stream, received on a thread while the test runs commands."""

    def __init__(self, endpoint):
        from pipeline.client import NativeClient

        self.client = NativeClient(endpoint)
        self.frames = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            f = self.client.receive(timeout=0.2)
            if f is not None:
                self.frames.append(f)

    def wait(self, predicate, timeout=30, what="frames"):
        return wait_for(lambda: predicate(list(self.frames)), timeout=timeout, interval=0.05, what=what)

    def close(self):
        self._stop.set()
        self._thread.join(5)
        self.client.close()


def _check_stream(frames):
    ids = [f.frame_id for f in frames]
    assert len(set(ids)) == len(ids), "a frame was published twice"
    assert ids == sorted(ids), "frames out of order"
    gens = [f.generation for f in frames]
    assert gens == sorted(gens), "an older generation published after a newer one"
    return ids, gens


def _videos(tmp_path):
    import cv2
    import numpy as np

    small = tmp_path / "small.avi"
    writer = cv2.VideoWriter(str(small), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (160, 120))
    for i in range(30):
        img = np.full((120, 160, 3), 60, np.uint8)
        cv2.rectangle(img, (10 + 2 * i, 20), (50 + 2 * i, 100), (0, 200, 255), -1)
        writer.write(img)
    writer.release()
    big = tmp_path / "big.avi"  # larger than the ring (320x240): downscaled to fit
    writer = cv2.VideoWriter(str(big), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (640, 400))
    for _ in range(10):
        writer.write(np.full((400, 640, 3), 90, np.uint8))
    writer.release()
    return small, big


def test_swap_gap_broken_swap_bad_inputs_and_capture_source(run_cli, tmp_path):
    from pipeline.runtime import rundir
    from pipeline.runtime.control import ControlClient, ControlError

    run_cli("start", "--detach", "--config", _config(tmp_path), timeout=120, check=True)
    collector = None
    try:
        status = request("status")
        before = workers(status)["inference"]
        collector = Collector(native_endpoint(status))
        collector.wait(lambda fr: len(fr) >= 3, timeout=60, what="frames before the swap")

        # --- make-before-break swap: no duplicates, gap within one source frame interval
        t0 = time.monotonic()
        out = run_cli("swap", "inference", "threads=1", timeout=200, check=True).stdout
        swap_s = time.monotonic() - t0
        gen = before["generation"]
        assert f"generation {gen} -> {gen + 1}" in out
        collector.wait(lambda fr: sum(f.generation == gen + 1 for f in fr) >= 3, timeout=60,
                       what="frames of the new generation")
        ids, gens = _check_stream(list(collector.frames))
        assert set(gens) == {gen, gen + 1}
        hand = [(a, b) for (a, ga), (b, gb) in zip(zip(ids, gens), zip(ids[1:], gens[1:])) if ga != gb]
        gaps = [b - a for a, b in zip(ids, ids[1:])]
        times = [f.t_capture_ns for f in collector.frames]
        print(f"\nswap torch->torch (CPU): command -> serving {swap_s:.2f} s ({out.strip()}); "
              f"hand-over frame ids {hand}, largest id gap {max(gaps)} at {FPS:g} fps; largest capture-time gap "
              f"{max(b - a for a, b in zip(times, times[1:])) / 1e9:.2f} s")
        assert max(gaps) <= 2, f"more than one frame interval lost: gaps {gaps}"
        now = workers(request("status"))["inference"]
        assert now["generation"] == gen + 1 and now["pid"] != before["pid"] and now["restarts"] == 0

        # --- a swap to a broken setting: the serving generation is untouched
        bad = run_cli("swap", "inference", "checkpoint=/nonexistent/poco.pt", timeout=200)
        assert bad.returncode != 0 and "swap of inference failed" in bad.stderr, bad.stderr
        assert f"generation {gen + 1} keeps running" in bad.stderr and "/nonexistent/poco.pt" in bad.stderr
        after = workers(request("status"))["inference"]
        assert (after["pid"], after["generation"], after["state"]) == (now["pid"], gen + 1, "running")
        n = len(collector.frames)
        collector.wait(lambda fr: len(fr) >= n + 2, timeout=30, what="output after the failed swap")

        # --- bad input
        for args, expected in [
            (("swap", "nosuch", "a=1"), "unknown worker 'nosuch'; running: metrics, publisher, inference, detection, capture"),
            (("swap", "inference", "nope=1"), "workers.inference.params.nope is not a known key — allowed: model"),
            (("swap", "inference", "precision=bogus"), "precision = 'bogus' — allowed: auto, fp32, fp16"),
            (("swap", "capture", "nope=1"), "(and for the source: source, at_end, options)"),
            (("swap", "capture", "at_end=sometimes"), "source.at_end = 'sometimes' — allowed: stop, loop"),
            (("swap", "publisher", "smoothing=off"), "cannot be swapped live: its sinks bind fixed ports"),
            (("ab", "start", "detection"), "has no comparable output"),
            (("ab", "status"), "no A/B test is running"),
            (("ab", "stop"), "no A/B test is running"),
        ]:
            proc = run_cli(*args)
            assert proc.returncode != 0 and expected in proc.stderr, (args, proc.stderr)

        # --- one swap at a time; status shows both generations while it runs
        _, endpoints = rundir.current_run()
        result = {}

        def first():
            with ControlClient.of(endpoints) as c:
                result["first"] = c.request("swap", {"worker": "inference", "params": {"threads": 1}},
                                            timeout_s=200)

        t = threading.Thread(target=first)
        t.start()
        swaps = wait_for(lambda: request("status")["swaps"], what="swap in progress", interval=0.02)
        cand = swaps[0]["generation"]  # the failed swap above used up generation gen + 2
        assert cand > gen + 1
        side = request("status")["side_workers"]
        assert [(w["name"], w["role"], w["generation"]) for w in side] == [("inference", "swap", cand)]
        table = run_cli("status", check=True).stdout
        assert "[swap" in table and table.count("\ninference ") == 2, table
        with pytest.raises(ControlError, match=rf"swap of detection refused: a swap of inference to generation "
                                               rf"{cand} is in progress"):
            request("swap", {"worker": "detection", "params": {}})
        t.join(200)
        assert result["first"]["generation"] == cand

        # --- swap the capture source: smaller, then larger than the ring (downscaled to fit)
        small, big = _videos(tmp_path)
        out = run_cli("swap", "capture", f"source={small}", check=True).stdout
        assert "capture: generation 1 -> 2" in out
        collector.wait(lambda fr: sum(f.frame_width == 160 for f in fr) >= 2, timeout=60,
                       what="frames of the new source")
        assert request("status")["source"] == str(small)
        run_cli("swap", "capture", f"source={big}", check=True)
        collector.wait(lambda fr: sum((f.frame_width, f.frame_height) == (320, 200) for f in fr) >= 2,
                       timeout=60, what="downscaled frames")
        frames = list(collector.frames)
        _check_stream(frames)
        sizes = [(f.frame_width, f.frame_height) for f in frames]
        first_new = sizes.index((160, 120))
        assert frames[first_new].source_epoch > frames[first_new - 1].source_epoch
        bad = run_cli("swap", "capture", f"source={tmp_path / 'missing.avi'}")
        assert bad.returncode != 0 and "keeps running" in bad.stderr, bad.stderr
    finally:
        if collector is not None:
            collector.close()
        assert run_cli("stop", timeout=60).returncode == 0


def _ab_status():
    return request("ab_status")


def test_ab_identical_perturbed_record_and_keep_b(run_cli, tmp_path):
    from pipeline.testing import make_checkpoint

    # B's weights for the perturbed run: a checkpoint file, so that after `--keep B` the
    # serving worker's own report shows that B's setting is the one in effect.
    other = make_checkpoint("pare", tmp_path / "poco_pare_other.pt", calibrate_bn=False, seed=1)
    # with the browser viewer (on a free port), which draws variant B beside A. 5 fps: faster
    # than A and B together on 2 cores, so each picks a newer frame than the other would; the
    # frames ring holds 3 s so that B, fed A's detections, finds the pixels still there.
    run_cli("start", "--detach", "--config", _config(tmp_path, fps=AB_FPS, slots=16), "--viewer",
            "--viewer-port", "0", timeout=120, check=True)
    try:

        out = run_cli("ab", "start", "inference", timeout=120, check=True).stdout
        assert "variant B (inference.b) ready" in out
        busy = run_cli("ab", "start", "inference", "threads=1")
        assert busy.returncode != 0 and "already running" in busy.stderr
        refused = run_cli("swap", "inference", "threads=1")
        assert refused.returncode != 0 and "A/B test of inference is running" in refused.stderr
        same = wait_for(lambda: (s := _ab_status())["comparison"] and s["comparison"]["agreement"]["matched"] >= 4
                        and s, timeout=120, what="4 matched frames")
        agr = same["comparison"]["agreement"]
        print(f"\nA/B identical at {AB_FPS:g} fps: pair rate {agr['pair_rate']}, A {same['comparison']['A']['fps']} "
              f"fps, B {same['comparison']['B']['fps']} fps; tee {same['tee']}; cost {same['cost']}")
        assert agr["rot_deg"] < 1e-3 and agr["transl_mm"] < 1e-3 and agr["same_count"] == 1.0, agr
        # B runs on the frames A consumed: nearly all of A's frames pair (a frame whose pixels
        # left the ring before B got to it is the only loss, and the tee says so)
        assert agr["pair_rate"] >= 0.75, (agr, same["tee"])
        assert same["tee"]["written"] > 0
        cost = same["cost"]["B"]
        assert cost["cpu_percent"] > 0 and cost["rss_bytes"] > 0 and cost["cpu_ms_per_frame"] > 0, cost
        # the viewer draws B's skeletons beside A's: the publisher hands it B's frames
        wait_for(lambda: (x := workers(request("status"))["publisher"]["extras"]).get("variant_b_frames", 0) > 0
                 and x.get("viewer_received_b", 0) > 0, timeout=30, what="variant B frames at the viewer")
        assert "agreement on" in run_cli("ab", "status", check=True).stdout
        stopped = run_cli("ab", "stop", check=True).stdout
        assert "A keeps serving" in stopped
        assert not request("status")["side_workers"]

        run_cli("ab", "start", "inference", f"checkpoint={other}", timeout=120, check=True)
        diff = wait_for(lambda: (s := _ab_status()["comparison"]) and s["agreement"]["matched"] >= 2 and s,
                        timeout=90, what="2 matched frames of the perturbed variant")
        agr = diff["agreement"]
        print(f"\nA/B seed 0 vs other weights: {agr}; A {diff['A']}; B {diff['B']}")
        assert agr["rot_deg"] > 1.0 and agr["transl_mm"] > 1.0 and agr["same_count"] == 1.0, agr
        assert diff["A"]["fps"] > 0 and diff["B"]["latency_p50_ms"] > 0
        assert "pair rate" in run_cli("ab", "status", check=True).stdout
        path = tmp_path / "ab.csv"
        assert "wrote 2 rows" in run_cli("ab", "record", "--csv", path, check=True).stdout
        outside = run_cli("ab", "record", "--csv", tmp_path.parent / f"{tmp_path.name}-outside.csv")
        assert outside.returncode != 0 and "outside the run's output folder" in outside.stderr, outside.stderr
        assert not (tmp_path.parent / f"{tmp_path.name}-outside.csv").exists()
        rows = list(csv.DictReader(path.open()))
        assert [r["Variant"] for r in rows] == ["A", "B"]
        assert rows[1]["Settings"] == f"checkpoint={other}" and float(rows[1]["Rotation Diff (deg)"]) > 1.0
        assert float(rows[1]["Pair Rate (%)"]) > 0 and float(rows[1]["CPU per Frame (ms)"]) > 0, rows[1]

        before = workers(request("status"))["inference"]
        gen = before["generation"]
        assert before["info"]["untrained"] is True and "random" in before["info"]["checkpoint"]
        collector = Collector(native_endpoint(request("status")))
        try:
            out = run_cli("ab", "stop", "--keep", "B", timeout=200, check=True).stdout
            assert f"generation {gen} -> {gen + 1}" in out
            status = request("status")
            assert status["ab"] is None and not status["side_workers"]
            inf = workers(status)["inference"]
            # B's setting is the one in effect: the promoted generation loaded B's checkpoint...
            assert inf["generation"] == gen + 1 and inf["state"] == "running", inf
            assert inf["info"]["checkpoint"] == str(other) and inf["info"]["untrained"] is False, inf["info"]
            # ...and what is published now comes from it (A ran untrained random weights)
            collector.wait(lambda fr: sum(f.generation == gen + 1 for f in fr) >= 2, timeout=60,
                           what="frames of the promoted generation")
            promoted = [f for f in collector.frames if f.generation == gen + 1]
            assert not any(f.untrained for f in promoted)
        finally:
            collector.close()
    finally:
        assert run_cli("stop", timeout=60).returncode == 0
