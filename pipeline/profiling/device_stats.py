"""GPU numbers a worker on a GPU adds to every heartbeat (docs/architecture.md §10, docs/metrics.md).

`DeviceStats.for_device("cuda:0")` is created by a worker whose model runs on a GPU; the runner
calls `sample()` at each heartbeat (every 0.5 s, on its control thread) and merges the result
into the heartbeat extras, from where the metrics worker fills the CSV's `GPU Util (%)` /
`GPU Memory (MB)` columns and Prometheus' `posepipe_gpu_util_percent` /
`posepipe_gpu_memory_bytes`. On the CPU there is no DeviceStats: those numbers are "not
measured" (empty CSV cells, no Prometheus series), never 0.

What is measured:
- `gpu_util_percent`: NVML's utilisation of the whole device (share of the last sample period
  in which a kernel ran, any process). Only with NVML (the `gpu` extra, nvidia-ml-py).
- `gpu_proc_util_percent`: this process's share of the SMs since the previous heartbeat
  (NVML process-utilisation samples; the highest sample); where the GPU supports them. A/B
  reports it as variant B's GPU cost.
- `gpu_mem_bytes`: this process's device memory. NVML's per-process figure (CUDA context
  included) when the driver lists our pid; otherwise (no NVML, or a pid namespace hides our
  pid) what torch's caching allocator holds (`torch.cuda.memory_reserved`), which misses the
  CUDA context and memory other libraries allocate (e.g. onnxruntime's arena).
  `gpu_mem_source` says which ("nvml" or "torch").
"""
from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


class DeviceStats:
    def __init__(self, index: int, torch, nvml=None, handle=None):
        self.index = index
        self._torch = torch
        self._nvml = nvml
        self._handle = handle
        self._pid = os.getpid()
        self._failed: set[str] = set()
        self._last_ts = 0          # NVML process-utilisation samples are read from this time on

    @classmethod
    def for_device(cls, device, nvml=None) -> DeviceStats | None:
        """Stats for a torch device string ("cuda", "cuda:1", "0"); None for the CPU.
        `nvml` lets tests pass a fake pynvml module."""
        name = str(device).strip().lower()
        if name.isdigit():
            name = f"cuda:{name}"
        if not name.startswith("cuda"):
            return None
        import torch

        if not torch.cuda.is_available():
            return None
        index = torch.device(name).index
        index = torch.cuda.current_device() if index is None else index
        nvml, handle = _nvml_handle(torch, index, nvml)
        return cls(index, torch, nvml, handle)

    @property
    def has_nvml(self) -> bool:
        return self._handle is not None

    def sample(self) -> dict:
        """{"gpu_util_percent", "gpu_proc_util_percent", "gpu_mem_bytes", "gpu_mem_source"}; a
        number that cannot be measured here is left out, never reported as 0."""
        out: dict = {}
        if self._handle is not None:
            util = self._try("utilisation", self._nvml.nvmlDeviceGetUtilizationRates, self._handle)
            if util is not None:
                out["gpu_util_percent"] = float(util.gpu)
            mem = self._process_memory()
            if mem is not None:
                out["gpu_mem_bytes"], out["gpu_mem_source"] = mem, "nvml"
                # Only when NVML lists our pid: behind a pid namespace our share would read 0.
                share = self._process_util()
                if share is not None:
                    out["gpu_proc_util_percent"] = share
        if "gpu_mem_bytes" not in out:
            mem = self._try("torch memory", self._torch.cuda.memory_reserved, self.index)
            if mem is not None:
                out["gpu_mem_bytes"], out["gpu_mem_source"] = int(mem), "torch"
        return out

    def _process_util(self) -> float | None:
        try:
            samples = self._nvml.nvmlDeviceGetProcessUtilization(self._handle, self._last_ts)
        except Exception as exc:
            if type(exc).__name__ == "NVMLError_NotFound":
                return 0.0   # no process used the GPU since the last sample
            self._not_measured("process utilisation", exc)
            return None
        if not samples:
            return 0.0
        self._last_ts = max(int(s.timeStamp) for s in samples)
        return float(max((s.smUtil for s in samples if int(s.pid) == self._pid), default=0))

    def _process_memory(self) -> int | None:
        procs = self._try("process memory", self._nvml.nvmlDeviceGetComputeRunningProcesses, self._handle) or []
        for p in procs:
            used = getattr(p, "usedGpuMemory", None)
            # N/A is reported as None or a huge sentinel on some drivers
            if int(getattr(p, "pid", -1)) == self._pid and isinstance(used, int) and 0 <= used < (1 << 60):
                return used
        return None

    def _try(self, what: str, fn, *args):
        try:
            return fn(*args)
        except Exception as exc:  # NVML_ERROR_NOT_SUPPORTED on some GPUs/drivers (MIG, vGPU)
            self._not_measured(what, exc)
            return None

    def _not_measured(self, what: str, exc: Exception) -> None:
        if what not in self._failed:
            self._failed.add(what)
            log.info("GPU %s is not measured here: %s", what, exc)


def _nvml_handle(torch, index: int, nvml=None):
    """(pynvml module, NVML handle of CUDA device `index`) or (None, None) without NVML. CUDA and
    NVML number devices differently (CUDA_VISIBLE_DEVICES, ordering), so match by UUID, then
    by PCI bus id; never by index."""
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError:
            log.info("GPU utilisation is not measured: pynvml is not installed (pip install nvidia-ml-py)")
            return None, None
    try:
        nvml.nvmlInit()
    except Exception as exc:
        log.info("GPU utilisation is not measured: NVML is not usable here (%s)", exc)
        return None, None
    props = torch.cuda.get_device_properties(index)
    uuid = str(getattr(props, "uuid", "") or "")
    if uuid:
        key = uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"
        try:
            return nvml, nvml.nvmlDeviceGetHandleByUUID(key)
        except Exception:
            pass
    if all(hasattr(props, a) for a in ("pci_domain_id", "pci_bus_id", "pci_device_id")):
        bus = f"{props.pci_domain_id:08X}:{props.pci_bus_id:02X}:{props.pci_device_id:02X}.0"
        try:
            return nvml, nvml.nvmlDeviceGetHandleByPciBusId(bus)
        except Exception:
            pass
    log.info("GPU utilisation is not measured: NVML has no device matching CUDA device %d", index)
    return None, None
