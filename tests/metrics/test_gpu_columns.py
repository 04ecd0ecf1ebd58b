"""GPU columns of the metrics CSV from a real pipeline whose inference runs on the GPU (issue 22
item 1): the inference worker's heartbeat carries its device memory and NVML utilisation, and
`pipeline record` writes them. gpu-marked: run on the device machine."""
from __future__ import annotations

import csv

import pytest

from pipeline_helpers import free_port, request, wait_for, workers

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(300)]

CONFIG = """
source:
  spec: sample
  options: {{width: 320, height: 240, fps: 30}}
rings:
  frames: {{slots: 8, max_height: 240, max_width: 320}}
  max_persons: 2
workers:
  capture: {{module: workers.capture}}
  detection: {{module: workers.detection, params: {{kind: center}}}}
  inference: {{module: workers.inference, params: {{model: poco-pare, smpl: 'off', device: cuda, precision: fp32,
               data_dir: /nonexistent-posepipe-data, backend_options: {{seed: 0}}}}}}
  publisher: {{module: workers.publisher}}
  metrics: {{module: workers.metrics, params: {{prometheus: false}}}}
sinks:
  native: {{endpoint: "tcp://127.0.0.1:{port}"}}
"""


def test_inference_on_gpu_fills_the_gpu_columns(run_cli, tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    config = tmp_path / "gpu.yaml"
    config.write_text(CONFIG.format(port=free_port()))
    out_csv = tmp_path / "m.csv"
    run_cli("start", "--detach", "--config", config, timeout=240, check=True)
    try:
        wait_for(lambda: workers(request("status"))["publisher"]["frames_out"] > 20, timeout=120,
                 what="published frames")
        extras = workers(request("status"))["inference"]["extras"]
        assert extras["gpu_mem_bytes"] > 50 * 2**20, extras   # weights alone are ~150 MB in fp32
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
