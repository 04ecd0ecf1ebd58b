"""Scale-out on Ray (issue 20 item 2, docs/scale-out.md).

The unit tests (placement plan, frame-id segments, the merger over real sockets, the install
hint) need no Ray. `test_two_pipelines_on_a_local_ray_head` runs `pipeline start --ray local`
with two pipelines as two actors on this machine (loopback head, token auth, temp folder in the
test's runtime folder) and checks the merged stream, a SIGKILLed actor brought back by Ray,
and that nothing is left behind; it skips when Ray is not installed (`posepipe[ray]`).
"""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
from pipeline_helpers import SubscriberThread, free_port, leftover_rings, write_pipeline_config

from pipeline.scaleout.merge import Merger, StreamState
from pipeline.scaleout.plan import (
    PipelinePlan,
    PlanError,
    node_config,
    parse_sources,
    pipeline_count,
    plan,
)

REPO = Path(__file__).resolve().parent.parent
HAVE_RAY = importlib.util.find_spec("ray") is not None
RECOVERY_LIMIT_S = 30.0


# -- plan -----------------------------------------------------------------------------------
def test_pipeline_count_per_gpu_then_per_cpus():
    assert pipeline_count({"CPU": 16, "GPU": 4}, cpus_per_pipeline=2) == 4
    assert pipeline_count({"CPU": 7}, cpus_per_pipeline=2) == 3
    assert pipeline_count({"CPU": 7}, cpus_per_pipeline=2, requested=5) == 5
    with pytest.raises(PlanError, match="--ray-cpus"):
        pipeline_count({"CPU": 1}, cpus_per_pipeline=2)
    with pytest.raises(PlanError, match="--ray-pipelines"):
        pipeline_count({"CPU": 8}, cpus_per_pipeline=2, requested=0)


def test_sources_assigned_by_name_and_spread_evenly():
    named, free = parse_sources(["p1=cam.mp4", "rtsp://h/s?a=b", "0", "p0=x"])
    assert named == {"p1": ["cam.mp4"], "p0": ["x"]} and free == ["rtsp://h/s?a=b", 0]
    plans = plan(3, ["p0=a", "b", "c"])
    assert {p.name: p.sources for p in plans} == {"p0": ["a"], "p1": ["b"], "p2": ["c"]}
    assert [p.name for p in plan(3, ["a"])] == ["p0"]            # idle pipelines are not started
    assert all(p.sources == [] for p in plan(2))                   # no source: the config's own
    with pytest.raises(PlanError, match="names no pipeline"):
        plan(2, ["p5=a"])


def test_node_config_keeps_only_the_native_sink(tmp_path):
    from pipeline.config import load_config

    cfg = load_config(write_pipeline_config(tmp_path / "c.yaml", metrics="{prometheus_port: 9100}"),
                      ["sinks.recording={path: x.npz}"])
    out = node_config(cfg.raw, PipelinePlan("p0", ["clip.mp4"], num_cpus=3))
    assert out["source"]["spec"] == "clip.mp4" and set(out["sinks"]) == {"native"}
    assert out["cpu"]["cores"] == 3 and out["workers"]["metrics"]["params"]["prometheus_port"] == 0
    # Two sources on one node: one pipeline with two streams (issue 20 item 1 inside item 2).
    two = node_config(cfg.raw, PipelinePlan("p0", ["a.mp4", "b.mp4"]))
    assert two["sources"] == [{"name": "cam0", "spec": "a.mp4"}, {"name": "cam1", "spec": "b.mp4"}]
    with pytest.raises(PlanError, match="p0"):
        node_config(cfg.raw, PipelinePlan("p0", [f"{i}.mp4" for i in range(40)]))  # past MAX_STREAMS


# -- merge ----------------------------------------------------------------------------------
def test_frame_ids_stay_unique_across_restarts():
    s = StreamState()
    # Run 1 sends 5, 6, 7, 7 (a duplicate), 3 (out of order); run 2 (a new feed) counts from 0.
    ids = [s.next_id(n, feed) for n, feed in ((5, 1), (6, 1), (7, 1), (7, 1), (3, 1), (0, 2), (1, 2), (7, 2))]
    assert ids == [0, 1, 2, None, None, 3, 4, 10] and s.duplicates == 2 and s.segments == 2


def _frame(frame_id):
    from pipeline.pose.frame import Person, PosesFrame

    z = np.zeros
    person = Person(track_id=1, box=np.array([0, 0, 10, 10], np.float32), score=1.0, global_orient=z(3),
                    body_pose=z(69), betas=z(10), transl=z(3), pred_cam=z(3), joint_uncertainty=z(24))
    now = time.monotonic_ns()
    return PosesFrame(frame_id=frame_id, t_capture_ns=now - 5_000_000, generation=1, source_epoch=0,
                      frame_height=240, frame_width=320, model="m", backend="b", precision="fp32",
                      untrained=True, n_found=1, stamps_ns={"publish": now}, persons=[person])


def test_merger_tags_streams_and_drops_malformed(tmp_path):
    import zmq

    from pipeline.sinks.native import encode_frame

    ctx = zmq.Context()
    pubs = {}
    for name in ("p0", "p1"):
        pubs[name] = ctx.socket(zmq.PUB)
        pubs[name].setsockopt(zmq.LINGER, 0)
        pubs[name].bind("tcp://127.0.0.1:*")
    merger = Merger(f"tcp://127.0.0.1:{free_port()}", record_path=tmp_path / "rec.npz")
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(merger.endpoint)
    try:
        for name, pub in pubs.items():
            merger.follow(name, pub.getsockopt(zmq.LAST_ENDPOINT).decode(), "127.0.0.1", "run1")
        time.sleep(0.3)  # SUB connections are asynchronous
        for i in range(3):
            for pub in pubs.values():
                pub.send_multipart(list(encode_frame(_frame(10 + i))))
        pubs["p0"].send_multipart([b"not msgpack", b""])
        got = []
        deadline = time.monotonic() + 5
        while len(got) < 6 and time.monotonic() < deadline:
            merger.pump(0.05)
            while sub.poll(0):
                got.append(msgpack.unpackb(sub.recv_multipart()[0], raw=False))
        pairs = [(h["stream"], h["frame_id"]) for h in got]
        assert sorted(pairs) == [(s, i) for s in ("p0", "p1") for i in range(3)], pairs
        assert all(h["node_frame_id"] == h["frame_id"] + 10 for h in got)
        merger.pump(0.2)
        assert merger.malformed == 1
    finally:
        merger.close()
        sub.close(0)
        for pub in pubs.values():
            pub.close(0)
        ctx.term()
    from pipeline.sinks.recording import load_recording

    assert list(load_recording(tmp_path / "rec.p0.npz")["frame_id"]) == [0, 1, 2]


def test_scaleout_sockets_carry_no_pickle():
    import ast

    for path in sorted((REPO / "pipeline" / "scaleout").glob("*.py")):
        tree = ast.parse(path.read_text())
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not imported & {"pickle", "_pickle", "cloudpickle", "dill", "marshal", "shelve"}, path


def test_ray_flag_without_ray_says_how_to_install(tmp_path):
    code = ("import sys; sys.modules['ray'] = None; from pipeline.cli.main import main; "
            "main(['start', '--ray', 'local', '--no-check'])")
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode != 0 and "pip install 'posepipe[ray]'" in proc.stderr, proc.stderr


# -- a local Ray head, two pipelines ------------------------------------------------------
class MergedLog(SubscriberThread):
    """Every header on the merged stream: (arrival time, stream, frame_id, node_frame_id, segment)."""

    def __init__(self, endpoint):
        self.items = []
        super().__init__(endpoint, name="merged")

    def on_message(self, parts, t):
        from pipeline.client import decode

        decode(parts)  # the merged stream is a valid native stream
        h = msgpack.unpackb(parts[0], raw=False)
        with self._lock:
            self.items.append((t, h["stream"], h["frame_id"], h["node_frame_id"], h["segment"]))

    def of(self, stream):
        with self._lock:
            return [i for i in self.items if i[1] == stream]


def _wait(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def _head_status(runtime: Path) -> dict:
    return json.loads((runtime / "posepipe" / "ray-head.json").read_text())


def _processes_of(tag: str) -> list[str]:
    """Processes (Ray's included: they inherit the head's environment) that carry our run tag."""
    import psutil

    found = []
    for p in psutil.process_iter(["pid", "name"]):
        if p.pid == os.getpid():
            continue
        try:
            if f"POSEPIPE_RUN_TAG={tag}".encode() in Path(f"/proc/{p.pid}/environ").read_bytes().split(b"\0"):
                found.append(f"{p.pid} {p.info['name']}")
        except (OSError, psutil.Error):
            continue
    return found


def _listening_off_loopback(tag: str) -> list:
    """(pid, address, port) of every listening socket of our processes not on loopback."""
    import psutil

    found = []
    for entry in _processes_of(tag):
        pid = int(entry.split()[0])
        try:
            conns = psutil.Process(pid).net_connections(kind="inet")
        except psutil.Error:
            continue
        found += [(entry, c.laddr.ip, c.laddr.port) for c in conns
                  if c.status == psutil.CONN_LISTEN and not _is_loopback(c.laddr.ip)]
    return found


def _is_loopback(text: str) -> bool:
    import ipaddress

    ip = ipaddress.ip_address(text.split("%")[0])
    mapped = getattr(ip, "ipv4_mapped", None)  # gRPC listens on ::ffff:127.0.0.1
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


def _kill_tagged(tag: str) -> None:
    """After a failed run: Ray's processes are not our children once the head is gone."""
    for entry in _processes_of(tag):
        try:
            os.kill(int(entry.split()[0]), signal.SIGKILL)
        except OSError:
            pass


@pytest.mark.skipif(not HAVE_RAY, reason="Ray is not installed: pip install 'posepipe[ray]' (issue 20 item 2)")
def test_two_pipelines_on_a_local_ray_head(pipeline_env, tmp_path, request):
    runtime, tag = pipeline_env["runtime"], pipeline_env["tag"]
    request.addfinalizer(lambda: _kill_tagged(tag))
    home_ray_before = (Path.home() / ".ray").exists()
    tmp_ray_before = Path("/tmp/ray").exists()
    config = write_pipeline_config(tmp_path / "p.yaml", at_end="loop",
                                   settings="restart: on-failure, health_timeout: 10")
    # Two pipelines on two cores: no metrics worker (the defaults would add one per pipeline).
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    with open(tmp_path / "head.out", "w") as out, open(tmp_path / "head.err", "w") as err:
        head = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "start", "--ray", "local", "--ray-pipelines",
                                 "2", "--ray-cpus", "1", "--config", str(config), "--seconds", "240",
                                 f"sinks.native.endpoint={endpoint}", "workers.metrics.enabled=false"],
                                stdout=out, stderr=err, cwd=REPO, env=dict(os.environ))
    merged = MergedLog(endpoint)
    timings = {}
    try:
        _wait(lambda: len(merged.of("p0")) >= 3 and len(merged.of("p1")) >= 3 or head.poll() is not None, 150,
              "both pipelines")
        assert head.poll() is None, (tmp_path / "head.err").read_text()[-3000:]
        timings["both_streams_s"] = time.monotonic() - t0
        status = _head_status(runtime)
        assert status["local"] and status["auth"] == "token" and status["cluster"].startswith("127.0.0.1:")
        rows = {r["pipeline"]: r for r in status["pipelines"]}
        assert set(rows) == {"p0", "p1"} and all(r["node"] == "127.0.0.1" for r in rows.values())
        public = _listening_off_loopback(tag)
        assert not public, f"processes of the local head listen beyond loopback: {public}"
        shown = subprocess.run([sys.executable, "-m", "pipeline.cli", "status", "--ray"], check=False,
                               capture_output=True, text=True, timeout=60, cwd=REPO, env=dict(os.environ))
        assert shown.returncode == 0 and "p0" in shown.stdout and "p1" in shown.stdout, shown.stderr

        # SIGKILL p0's actor: Ray restarts it, its new pipeline publishes again.
        victim = _wait(lambda: _head_status(runtime)["pipelines"][0].get("actor_pid"), 10, "p0's actor pid")
        os.kill(victim, signal.SIGKILL)
        t_kill = time.monotonic()

        def new_run():  # the first frame of p0's restarted run (the head's second segment of p0)
            return [i for i in merged.of("p0") if i[4] >= 2][:1]

        try:
            back = _wait(lambda: new_run() or head.poll() is not None, RECOVERY_LIMIT_S + 30,
                         "p0 back after the kill")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nhead status: {_head_status(runtime)}\np0 frames: {merged.of('p0')[-5:]}\n"
                                 f"head output: {(tmp_path / 'head.out').read_text()[-2000:]}") from None
        assert head.poll() is None, (tmp_path / "head.err").read_text()[-3000:]
        timings["recovery_s"] = back[0][0] - t_kill
        p1_during = [i for i in merged.of("p1") if t_kill < i[0] < back[0][0]]
        status = _head_status(runtime)
        timings.update({f"head_{k}": v for k, v in status["timings"].items()})
        p0 = next(r for r in status["pipelines"] if r["pipeline"] == "p0")
        assert p0["actor_pid"] != victim and p0["ray_restarts"] >= 1, p0
        n0 = len(merged.of("p0")) + len(merged.of("p1"))
        time.sleep(4)
        timings["merged_fps"] = (len(merged.of("p0")) + len(merged.of("p1")) - n0) / 4
    finally:
        head.send_signal(signal.SIGINT)
        try:
            head.wait(90)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()
        merged.close()
    timings["total_s"] = time.monotonic() - t0
    print("ray test timings:", {k: round(v, 2) for k, v in timings.items()})
    stdout = (tmp_path / "head.out").read_text()
    assert head.returncode == 0, stdout + (tmp_path / "head.err").read_text()[-3000:]
    assert "NOT cleanly" not in stdout

    pairs = [(s, f) for _, s, f, _, _ in merged.items]
    assert len(pairs) == len(set(pairs)), "duplicated (stream, frame_id) pairs on the merged stream"
    for stream in ("p0", "p1"):
        ids = [f for _, s, f, _, _ in merged.items if s == stream]
        assert ids == sorted(ids), f"{stream}: frame ids not increasing"
    assert timings["recovery_s"] <= RECOVERY_LIMIT_S, timings
    assert p1_during or timings["recovery_s"] < 2, "p1 stopped publishing while p0 was down"

    # Nothing left: processes (Ray's own included), rings, Ray's temp folder, files in ~ or /tmp/ray.
    _wait(lambda: not _processes_of(tag), 20, f"processes of {tag} to exit: {_processes_of(tag)}")
    assert not leftover_rings(tag)
    assert not list((runtime / "posepipe").glob("ray-*")), list((runtime / "posepipe").iterdir())
    assert (Path.home() / ".ray").exists() == home_ray_before
    assert Path("/tmp/ray").exists() == tmp_ray_before


@pytest.mark.skipif(not HAVE_RAY, reason="Ray is not installed: pip install 'posepipe[ray]' (issue 20 item 2)")
def test_a_pipeline_that_cannot_start_is_reported_with_its_error(pipeline_env, tmp_path, request):
    """Ray's restarts used up (here none): the head stops with the node's own error, leaving nothing."""
    runtime, tag = pipeline_env["runtime"], pipeline_env["tag"]
    request.addfinalizer(lambda: _kill_tagged(tag))
    config = write_pipeline_config(tmp_path / "p.yaml", settings="restart: never")
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "start", "--ray", "local", "--ray-pipelines", "1",
                           "--ray-cpus", "1", "--ray-max-restarts", "0", "--ray-source", "p0=/nonexistent/clip.mp4",
                           "--config", str(config), "workers.metrics.enabled=false"],
                          check=False, capture_output=True, text=True, timeout=180, cwd=REPO, env=dict(os.environ))
    assert proc.returncode == 2, proc.stdout + proc.stderr[-3000:]
    assert "pipeline p0" in proc.stderr and "/nonexistent/clip.mp4" in proc.stderr, proc.stderr[-3000:]
    assert "dead" in proc.stdout
    _wait(lambda: not _processes_of(tag), 20, "the local head's processes to exit")
    assert not leftover_rings(tag)
    assert not list((runtime / "posepipe").glob("ray-*")), list((runtime / "posepipe").iterdir())
