"""GPU numbers for worker heartbeats (pipeline/profiling/device_stats.py) with fake NVML and torch.

The real thing runs in tests/metrics/test_gpu_columns.py (gpu-marked)."""
import os
import types

import pytest

from pipeline.profiling.device_stats import DeviceStats, _nvml_handle


class FakeNvml:
    def __init__(self, procs=(), util=37, uuid="GPU-1234", fail=(), shares=()):
        self.procs, self.util, self.uuid, self.fail = list(procs), util, uuid, set(fail)
        self.shares = list(shares)   # (pid, smUtil, timeStamp) process-utilisation samples
        self.since = []
        self.inits = 0

    def nvmlInit(self):
        if "init" in self.fail:
            raise RuntimeError("NVML Shared Library Not Found")
        self.inits += 1

    def nvmlDeviceGetHandleByUUID(self, uuid):
        if uuid != self.uuid:
            raise RuntimeError("Not Found")
        return "handle"

    def nvmlDeviceGetHandleByPciBusId(self, bus):
        if "pci" in self.fail:
            raise RuntimeError("Not Found")
        return f"pci:{bus}"

    def nvmlDeviceGetUtilizationRates(self, handle):
        if "util" in self.fail:
            raise RuntimeError("Not Supported")
        return types.SimpleNamespace(gpu=self.util, memory=5)

    def nvmlDeviceGetProcessUtilization(self, handle, since):
        self.since.append(since)
        if "share" in self.fail:
            raise RuntimeError("Not Supported")
        fresh = [s for s in self.shares if s[2] > since]
        if not fresh:
            raise type("NVMLError_NotFound", (Exception,), {})("Not Found")
        return [types.SimpleNamespace(pid=pid, smUtil=sm, timeStamp=ts) for pid, sm, ts in fresh]

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        return [types.SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in self.procs]


def fake_torch(reserved=123 << 20, uuid="1234", pci=(0, 0x41, 0)):
    props = types.SimpleNamespace(uuid=uuid, pci_domain_id=pci[0], pci_bus_id=pci[1], pci_device_id=pci[2])
    cuda = types.SimpleNamespace(memory_reserved=lambda index: reserved,
                                 get_device_properties=lambda index: props)
    return types.SimpleNamespace(cuda=cuda)


def test_cpu_has_no_device_stats():
    assert DeviceStats.for_device("cpu") is None


def test_nvml_gives_device_utilisation_and_this_process_memory_and_share():
    me = os.getpid()
    nvml = FakeNvml(procs=[(1, 999), (me, 700 << 20)], util=37, shares=[(1, 50, 10), (me, 20, 11), (me, 30, 12)])
    nv, handle = _nvml_handle(fake_torch(), 0, nvml)
    stats = DeviceStats(0, fake_torch(), nv, handle)
    assert stats.has_nvml
    assert stats.sample() == {"gpu_util_percent": 37.0, "gpu_mem_bytes": 700 << 20, "gpu_mem_source": "nvml",
                              "gpu_proc_util_percent": 30.0}
    # the next heartbeat reads only newer samples; none means we did not use the GPU: 0
    assert stats.sample()["gpu_proc_util_percent"] == 0.0 and nvml.since == [0, 12]


def test_pid_not_listed_falls_back_to_torch_memory_and_keeps_utilisation():
    # a container's pid namespace hides our pid from NVML; N/A memory is a huge sentinel
    nvml = FakeNvml(procs=[(os.getpid() + 1, 5 << 20), (os.getpid(), (1 << 64) - 1)], util=0,
                    shares=[(os.getpid(), 40, 5)])
    stats = DeviceStats(0, fake_torch(reserved=42), *_nvml_handle(fake_torch(), 0, nvml))
    # no per-process share either: with our pid unlisted it would read 0 for the wrong reason
    assert stats.sample() == {"gpu_util_percent": 0.0, "gpu_mem_bytes": 42, "gpu_mem_source": "torch"}


def test_without_nvml_utilisation_is_not_measured_not_zero():
    stats = DeviceStats(0, fake_torch(reserved=7 << 20), *_nvml_handle(fake_torch(), 0, FakeNvml(fail={"init"})))
    assert not stats.has_nvml
    out = stats.sample()
    assert "gpu_util_percent" not in out and out["gpu_mem_bytes"] == 7 << 20


def test_unsupported_utilisation_is_left_out():
    nvml = FakeNvml(procs=[(os.getpid(), 10)], fail={"util", "share"})
    stats = DeviceStats(0, fake_torch(), *_nvml_handle(fake_torch(), 0, nvml))
    assert stats.sample() == {"gpu_mem_bytes": 10, "gpu_mem_source": "nvml"}


@pytest.mark.parametrize("torch_uuid, nvml_uuid, expect", [
    ("1234", "GPU-1234", "handle"),            # torch's uuid without the prefix
    ("GPU-1234", "GPU-1234", "handle"),        # or with it
    ("abcd", "GPU-1234", "pci:00000000:41:00.0"),  # no UUID match: PCI bus id
])
def test_nvml_device_is_matched_by_uuid_then_pci_bus(torch_uuid, nvml_uuid, expect):
    _, handle = _nvml_handle(fake_torch(uuid=torch_uuid), 0, FakeNvml(uuid=nvml_uuid))
    assert handle == expect


def test_no_matching_nvml_device_means_no_nvml():
    nv, handle = _nvml_handle(fake_torch(uuid="abcd"), 0, FakeNvml(fail={"pci"}))
    assert nv is None and handle is None
