"""NVML sampling against a fake pynvml module, and the torch profiler helper on a tiny CPU model."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest

from pipeline.profiling.gpu import GpuSampler
from pipeline.profiling.torch_trace import TorchTraceError, TorchTraceRecorder, parse_profile_request


class FakeNvml:
    NVML_CLOCK_SM = 1
    NVML_PCIE_UTIL_TX_BYTES = 0
    NVML_PCIE_UTIL_RX_BYTES = 1

    def __init__(self, count=1, fail_init=False):
        self.count, self.fail_init, self.shut = count, fail_init, False

    def nvmlInit(self):
        if self.fail_init:
            raise RuntimeError("NVML Shared Library Not Found")

    def nvmlShutdown(self):
        self.shut = True

    def nvmlDeviceGetCount(self):
        return self.count

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetName(self, h):
        return b"NVIDIA H100"

    def nvmlDeviceGetUtilizationRates(self, h):
        return SimpleNamespace(gpu=87, memory=40)

    def nvmlDeviceGetMemoryInfo(self, h):
        return SimpleNamespace(used=3 << 30, total=80 << 30)

    def nvmlDeviceGetClockInfo(self, h, kind):
        return 1980

    def nvmlDeviceGetPowerUsage(self, h):
        return 312_000

    def nvmlDeviceGetPcieThroughput(self, h, kind):
        return 2048 if kind == self.NVML_PCIE_UTIL_TX_BYTES else 1024

    def nvmlDeviceGetComputeRunningProcesses(self, h):
        return [SimpleNamespace(pid=11, usedGpuMemory=1 << 30), SimpleNamespace(pid=12, usedGpuMemory=None)]

    def nvmlDeviceGetProcessUtilization(self, h, ts):
        raise RuntimeError("Not Supported")


def test_device_and_process_values():
    sampler, reason = GpuSampler.open(FakeNvml())
    assert sampler is not None and reason == ""
    devices, procs = sampler.sample()
    d = devices[0]
    assert (d.name, d.util_percent, d.sm_clock_mhz, d.power_w) == ("NVIDIA H100", 87, 1980, 312)
    assert d.mem_used_bytes == 3 << 30 and d.pcie_tx_mb_s == 2 and d.pcie_rx_mb_s == 1
    assert procs[11].mem_bytes == 1 << 30
    assert math.isnan(procs[12].mem_bytes)            # the driver gave no per-process number
    assert math.isnan(procs[11].sm_util_percent)      # process utilisation not supported: left out
    sampler.close()


def test_without_detail_the_slow_queries_are_skipped_and_last_values_repeated():
    nvml = FakeNvml()
    calls = []
    for name in ("nvmlDeviceGetPcieThroughput", "nvmlDeviceGetComputeRunningProcesses"):
        real = getattr(nvml, name)
        setattr(nvml, name, lambda *a, _real=real, _name=name: calls.append(_name) or _real(*a))
    sampler, _ = GpuSampler.open(nvml)
    sampler.sample()
    n = len(calls)
    devices, procs = sampler.sample(detail=False)
    assert len(calls) == n, "no PCIe or per-process query without detail"
    assert devices[0].util_percent == 87 and devices[0].pcie_tx_mb_s == 2   # fresh / repeated
    assert procs[11].mem_bytes == 1 << 30                                     # repeated


def test_without_nvml_says_why():
    sampler, reason = GpuSampler.open(FakeNvml(fail_init=True))
    assert sampler is None and "NVML is not usable" in reason
    sampler, reason = GpuSampler.open(FakeNvml(count=0))
    assert sampler is None and "no GPU" in reason


def test_parse_profile_request(tmp_path):
    assert parse_profile_request(50, tmp_path) == (50, tmp_path)
    assert parse_profile_request({"iterations": 3, "out_dir": "/x"}, tmp_path) == (3, tmp_path.__class__("/x"))
    for bad in (0, -1, True, "50", 10**6, {"iterations": 2, "dir": "/x"}):
        with pytest.raises(TorchTraceError):
            parse_profile_request(bad, tmp_path)


def test_torch_trace_of_n_iterations(tmp_path):
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    rec = TorchTraceRecorder(tmp_path / "default")
    assert rec.step() is None and not rec.active                  # nothing recorded until asked
    path = rec.start(3, tmp_path / "out")
    with pytest.raises(TorchTraceError, match="already being recorded"):
        rec.start(2)
    results = []
    for _ in range(5):
        with torch.no_grad():
            model(torch.randn(4, 8))
        results.append(rec.step())
    assert results[:2] == [None, None] and results[2] == path and results[3:] == [None, None]
    assert not rec.active and rec.last_trace == path
    trace = json.loads(path.read_text())
    names = {e.get("name", "") for e in trace["traceEvents"]}
    assert any("linear" in n or "addmm" in n for n in names)
    with pytest.raises(TorchTraceError):
        rec.start(0)
