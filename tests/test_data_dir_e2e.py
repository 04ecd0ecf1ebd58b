"""One data folder, wherever the pipeline is started from (issue 21 items 4 and 5).

* Started from another working directory, the inference worker loads the weights from the
  pipeline's `data_dir` (here: $POSEPIPE_DATA_DIR, as `pipeline doctor` reports it), never from
  a `data/` of the current directory.
* `pipeline export` writes the engine where the inference worker looks for it: a start right
  after the export uses it and builds nothing (onnx backend on the CPU).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline_helpers import request, workers

pytestmark = [pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parent.parent


def _cli(*args, cwd, timeout=300):
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=dict(os.environ))


def test_started_from_another_directory_the_data_dir_is_the_same(pipeline_env, small_config, tmp_path):
    from pipeline.testing.checkpoints import make_checkpoint

    data = Path(os.environ["POSEPIPE_DATA_DIR"])
    weights = make_checkpoint("pare", data / "poco_pare.pt", calibrate_bn=False)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "data").mkdir(parents=True)
    (elsewhere / "data" / "poco_pare.pt").write_bytes(b"")  # a decoy: loading it would fail setup

    doctor = _cli("doctor", cwd=elsewhere, timeout=120)
    assert f"data dir          {data}" in doctor.stdout, doctor.stdout + doctor.stderr
    assert "found   poco_pare.pt" in doctor.stdout, doctor.stdout

    started = _cli("start", "--detach", "--config", small_config, cwd=elsewhere)
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        info = workers(request("status"))["inference"]["info"]
        assert info["checkpoint"] == str(weights) and info["untrained"] is False, info
    finally:
        stop = _cli("stop", cwd=elsewhere, timeout=60)
    assert stop.returncode == 0, stop.stderr


def test_an_exported_engine_is_used_by_the_next_start_without_a_rebuild(pipeline_env, small_config):
    data = Path(os.environ["POSEPIPE_DATA_DIR"])
    export = _cli("export", "--backend", "onnx", "--model", "pare", "--max-persons", "4", cwd=REPO, timeout=550)
    assert export.returncode == 0, export.stdout + export.stderr
    engines = sorted((data / "engines").glob("*.onnx"))
    assert len(engines) == 1, sorted((data / "engines").iterdir())
    before = {p: p.stat().st_mtime_ns for p in (data / "engines").iterdir()}

    started = _cli("start", "--detach", "--config", small_config, "inference.backend=onnx", cwd=REPO)
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        info = workers(request("status"))["inference"]["info"]
        assert info["backend"] == "onnx" and info["engine"] == str(engines[0]), info
        assert info["engine_built"] is False, info
    finally:
        stop = _cli("stop", cwd=REPO, timeout=60)
    assert stop.returncode == 0, stop.stderr
    assert {p: p.stat().st_mtime_ns for p in (data / "engines").iterdir()} == before
