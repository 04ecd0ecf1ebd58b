"""The CPU budget (pipeline/runtime/cpu.py, issue 18): threads per worker from the cores and its
role, the config section that overrides it, the environment a worker is started with, what
`pipeline status` shows."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pipeline.config import ConfigError, load_config
from pipeline.runtime import cpu


@pytest.mark.parametrize("cores, model, detector, light", [
    (1, 1, 1, 1), (2, 2, 1, 1), (4, 4, 1, 1), (8, 4, 2, 1), (16, 8, 4, 1), (64, 56, 4, 1),
])
def test_model_gets_the_most_and_small_roles_stay_small(cores, model, detector, light):
    assert cpu.threads_for("model", cores) == model
    assert cpu.threads_for("detector", cores) == cpu.threads_for("decoder", cores) == detector
    assert cpu.threads_for("light", cores) == light
    with pytest.raises(ValueError, match="unknown CPU role 'gpu'; allowed: model, detector, decoder, light"):
        cpu.threads_for("gpu", cores)


def test_plan_applies_overrides_by_worker_name():
    roles = {"capture": "decoder", "inference": "model", "metrics": "light"}
    assert cpu.plan(roles, 2) == {"capture": 1, "inference": 2, "metrics": 1}
    assert cpu.plan(roles, 2, {"inference": 3}) == {"capture": 1, "inference": 3, "metrics": 1}


def test_worker_env_sizes_every_pool_and_makes_idle_threads_sleep(monkeypatch):
    env = cpu.worker_env(3)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENCV_FOR_THREADS_NUM",
                "POSEPIPE_THREADS"):
        assert env[key] == "3", key
    assert env["OMP_WAIT_POLICY"] == "PASSIVE" and env["GOMP_SPINCOUNT"] == "0"
    spinning = cpu.worker_env(3, spin=True)
    assert "OMP_WAIT_POLICY" not in spinning and spinning["POSEPIPE_SPIN"] == "1"
    monkeypatch.setenv("POSEPIPE_THREADS", "3")
    monkeypatch.setenv("POSEPIPE_SPIN", "0")
    assert cpu.worker_threads() == 3
    assert cpu.ort_spinning_entries() == {"session.intra_op.allow_spinning": "0",
                                          "session.inter_op.allow_spinning": "0"}
    assert cpu.ort_spinning_entries(True)["session.intra_op.allow_spinning"] == "1"
    monkeypatch.setenv("POSEPIPE_THREADS", "zero")
    assert cpu.worker_threads() is None


def test_libraries_read_the_budget_from_the_environment():
    """What the supervisor sets at spawn reaches torch's and OpenCV's pools in a fresh process."""
    code = "import cv2, torch; print(torch.get_num_threads(), cv2.getNumThreads())"
    env = {**os.environ, **cpu.worker_env(1)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                         check=True).stdout.split()
    assert out == ["1", "1"]


@pytest.mark.parametrize("override, message", [
    ("cpu.cores=0", "cpu.cores = 0 — must be auto or an integer >= 1"),
    ("cpu.cores=lots", "cpu.cores = 'lots' — must be auto or an integer >= 1"),
    ("cpu.threads.infrence=2", "cpu.threads.infrence names no worker — workers: metrics, publisher, inference"),
    ("cpu.threads.inference=0", "cpu.threads.inference = 0 — must be an integer in 1..1024"),
    ("cpu.threads.inference=two", "cpu.threads.inference = 'two' — must be an integer in 1..1024"),
    ("cpu.threads=[1]", "cpu.threads = [1] — expected a mapping"),
    ("cpu.spin=maybe", "cpu.spin = 'maybe' — expected true or false"),
    ("cpu.bogus=1", "cpu.bogus is not a known key — allowed: cores, threads, spin"),
])
def test_cpu_config_errors_name_the_key_and_the_fix(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[override])
    assert message in str(err.value)


def test_cpu_config_defaults_and_overrides():
    cfg = load_config()
    assert (cfg.cpu.cores, cfg.cpu.threads, cfg.cpu.spin) == ("auto", {}, False)
    cfg = load_config(overrides=["cpu.threads.inference=3", "cpu.cores=4"])
    assert cfg.cpu.threads == {"inference": 3} and cfg.cpu.cores == 4


def test_supervisor_gives_each_worker_its_budget():
    from pipeline.runtime.supervisor import Supervisor
    from pipeline.runtime.supervisor.state import WorkerState

    sup = Supervisor(load_config(overrides=["cpu.cores=16", "cpu.threads.metrics=2"]))
    threads = {name: sup._cpu_threads(ws) for name, ws in sup.workers.items()}
    assert threads == {"metrics": 2, "publisher": 1, "inference": 8, "detection": 4, "capture": 4}
    side = WorkerState("inference_b", sup.workers["inference"].cfg)   # an A/B variant: same role
    assert sup._cpu_threads(side) == 8


def test_status_table_shows_threads_and_what_a_starting_worker_does():
    from pipeline.cli.progress import status_table

    def row(name, state, **kw):
        return {"name": name, "module": f"workers.{name}", "pid": 10, "generation": 2, "state": state,
                "fps": 0.0, "p50_ms": 0.0, "p99_ms": 0.0, "frames_in": 0, "frames_out": 0, "drops": 0,
                "cpu_percent": 0.0, "rss_bytes": 0, "restarts": 0, "info": {}, "extras": {}, "role": "",
                "progress": "", "threads": 1, "starting_s": None, **kw}

    status = {"workers": [row("inference", "starting", threads=2, starting_s=3.2,
                              progress="warming up batch sizes [1, 3]"), row("capture", "running"),
                          row("detection", "running", extras={"warming_batches": "2,4"}),
                          row("detection", "running", extras={"detector_warming": "compiling 1920x1080"})]}
    lines = status_table(status).splitlines()
    assert lines[0].split()[-2:] == ["thr", "info"]
    assert "[warming up batch sizes [1, 3], 3 s]" in lines[1] and " 2 " in lines[1]
    assert "[" not in lines[2]
    assert lines[3].rstrip().endswith("preparing batch sizes 2,4")
    assert lines[4].rstrip().endswith("compiling 1920x1080 (frames run the slower engine until then)")


def test_video_decoder_threads_follow_the_budget(monkeypatch, tmp_path):
    import cv2
    import numpy as np

    from pipeline.sources import open_source

    path = tmp_path / "clip.mp4"    # MPEG-4 part 2: a codec FFmpeg decodes with several threads
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (320, 240))
    for i in range(10):
        writer.write(np.full((240, 320, 3), 20 * i, np.uint8))
    writer.release()
    for threads in ("1", "2"):
        monkeypatch.setenv("POSEPIPE_THREADS", threads)
        src = open_source(str(path))
        try:
            assert src._cap.get(cv2.CAP_PROP_N_THREADS) == int(threads)
            assert src.read() is not None
        finally:
            src.close()
