"""NVML sampling (pynvml, from the `nvidia-ml-py` package), imported only when asked for.

Per device: utilisation (SM and memory controller), memory used/total, SM clock, power and PCIe
throughput. Per process: GPU memory used (where the driver reports it; some drivers and
containers give none) and SM utilisation from NVML's process-utilisation samples (where
supported). Without pynvml or a GPU, `GpuSampler.open()` returns None and a reason the profiler
prints ("profiling CPU only: ...").
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from pipeline.profiling.sampler import NAN  # "not measured", as in the process samples

log = logging.getLogger(__name__)


@dataclass
class GpuDeviceSample:
    index: int
    name: str
    util_percent: float = NAN
    mem_util_percent: float = NAN
    mem_used_bytes: float = NAN
    mem_total_bytes: float = NAN
    sm_clock_mhz: float = NAN
    power_w: float = NAN
    pcie_tx_mb_s: float = NAN
    pcie_rx_mb_s: float = NAN


@dataclass
class GpuProcessSample:
    pid: int
    device: int
    mem_bytes: float = NAN
    sm_util_percent: float = NAN


class GpuSampler:
    def __init__(self, nvml, handles: list):
        self.nvml = nvml
        self.handles = handles
        self.names = [_text(nvml.nvmlDeviceGetName(h)) for h in handles]
        self._last_proc_ts = [0] * len(handles)
        self._last_pcie: list[tuple[float, float]] = [(NAN, NAN)] * len(handles)
        self._last_procs: dict[int, GpuProcessSample] = {}
        self._warned: set[str] = set()

    @classmethod
    def open(cls, nvml=None) -> tuple[GpuSampler | None, str]:
        """(sampler, "") or (None, why GPU profiling is off). `nvml` lets tests pass a fake module."""
        if nvml is None:
            try:
                import pynvml as nvml
            except ImportError:
                return None, "pynvml is not installed (pip install nvidia-ml-py)"
        try:
            nvml.nvmlInit()
            count = nvml.nvmlDeviceGetCount()
        except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
            return None, f"NVML is not usable here ({exc}); no NVIDIA driver/GPU?"
        if count == 0:
            return None, "NVML found no GPU"
        try:
            handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            return cls(nvml, handles), ""
        except Exception as exc:
            return None, f"NVML could not open the GPUs: {exc}"

    def close(self) -> None:
        try:
            self.nvml.nvmlShutdown()
        except Exception:
            pass

    def sample(self, detail: bool = True) -> tuple[list[GpuDeviceSample], dict[int, GpuProcessSample]]:
        """detail=False skips the slower queries (PCIe throughput, per-process memory and
        utilisation) and repeats their last values: the profiler's cost governor asks for that."""
        devices, procs = [], {}
        for i, h in enumerate(self.handles):
            d = GpuDeviceSample(i, self.names[i])
            util = self._try("utilization", self.nvml.nvmlDeviceGetUtilizationRates, h)
            if util is not None:
                d.util_percent, d.mem_util_percent = float(util.gpu), float(util.memory)
            mem = self._try("memory", self.nvml.nvmlDeviceGetMemoryInfo, h)
            if mem is not None:
                d.mem_used_bytes, d.mem_total_bytes = float(mem.used), float(mem.total)
            clock = self._try("sm clock", self.nvml.nvmlDeviceGetClockInfo, h, self.nvml.NVML_CLOCK_SM)
            d.sm_clock_mhz = _num(clock)
            power = self._try("power", self.nvml.nvmlDeviceGetPowerUsage, h)
            d.power_w = _num(power) / 1000.0  # milliwatts
            devices.append(d)
            if not detail:
                d.pcie_tx_mb_s, d.pcie_rx_mb_s = self._last_pcie[i]
                continue
            # NVML reports PCIe throughput in KB/s over a 20 ms window.
            tx = self._try("pcie", self.nvml.nvmlDeviceGetPcieThroughput, h, self.nvml.NVML_PCIE_UTIL_TX_BYTES)
            rx = self._try("pcie", self.nvml.nvmlDeviceGetPcieThroughput, h, self.nvml.NVML_PCIE_UTIL_RX_BYTES)
            d.pcie_tx_mb_s, d.pcie_rx_mb_s = _num(tx) / 1024.0, _num(rx) / 1024.0
            self._last_pcie[i] = (d.pcie_tx_mb_s, d.pcie_rx_mb_s)
            running = self._try("process memory", self.nvml.nvmlDeviceGetComputeRunningProcesses, h) or []
            for p in running:
                used = getattr(p, "usedGpuMemory", None)
                entry = procs.setdefault(int(p.pid), GpuProcessSample(int(p.pid), i))
                if isinstance(used, int) and used >= 0 and used < (1 << 60):  # N/A is a huge sentinel
                    entry.mem_bytes = (0.0 if math.isnan(entry.mem_bytes) else entry.mem_bytes) + float(used)
            utils = self._try("process utilisation", self.nvml.nvmlDeviceGetProcessUtilization, h,
                              self._last_proc_ts[i])
            if utils:
                self._last_proc_ts[i] = max(int(u.timeStamp) for u in utils)
                for u in utils:
                    entry = procs.setdefault(int(u.pid), GpuProcessSample(int(u.pid), i))
                    entry.sm_util_percent = max(_zero(entry.sm_util_percent), float(u.smUtil))
            elif self._last_proc_ts[i] == 0:
                self._last_proc_ts[i] = int(time.time() * 1e6) - 1_000_000
        if not detail:
            return devices, dict(self._last_procs)
        self._last_procs = procs
        return devices, procs

    def _try(self, what: str, fn, *args):
        try:
            return fn(*args)
        except Exception as exc:  # NVML_ERROR_NOT_SUPPORTED / NOT_FOUND on some GPUs and drivers
            if what not in self._warned:
                self._warned.add(what)
                log.info("NVML gives no %s here: %s", what, exc)
            return None


def _num(value) -> float:
    return float(value) if isinstance(value, (int, float)) else NAN


def _zero(value: float) -> float:
    return 0.0 if math.isnan(value) else value


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
