"""GPU columns of the metrics CSV from a real pipeline whose inference runs on the GPU (issue 22
item 1): the inference worker's heartbeat carries its device memory and NVML utilisation, and
`pipeline record` writes them. gpu-marked: run on the device machine."""
from __future__ import annotations

import csv

import pytest

from pipeline_helpers import request, wait_for, workers

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(300)]


def test_inference_on_gpu_fills_the_gpu_columns(run_cli, small_config, tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    out_csv = tmp_path / "m.csv"
    # the test pipeline (sample, center boxes, POCO-PARE random weights) with inference on the GPU
    run_cli("start", "--detach", "--config", small_config, "inference.device=cuda", "inference.precision=fp32",
            timeout=240, check=True)
    try:
        wait_for(lambda: workers(request("status"))["publisher"]["frames_out"] > 20, timeout=120,
                 what="published frames")
        extras = workers(request("status"))["inference"]["extras"]
        assert extras["gpu_mem_bytes"] > 50 * 2**20, extras   # PARE's weights alone are ~140 MB in fp32
        proc = run_cli("record", "--seconds", "2", "--csv", out_csv)
        assert proc.returncode == 0, proc.stderr
    finally:
        stop = run_cli("stop")
    assert stop.returncode == 0, stop.stderr
    row = list(csv.DictReader(out_csv.open()))[-1]
    print({k: row[k] for k in ("GPU Util (%)", "GPU Memory (MB)", "Avg Processing FPS")},
          "source:", extras.get("gpu_mem_source"))
    assert float(row["GPU Memory (MB)"]) > 50, row
    try:
        import pynvml  # noqa: F401  (the `gpu` extra)
    except ImportError:
        assert row["GPU Util (%)"] == "", row        # not measured without NVML, never 0
    else:
        assert 0 < float(row["GPU Util (%)"]) <= 100, row   # the network ran on this GPU
