"""`trt` backend: the network (backbone + head + uncertainty; SMPL stays outside) compiled by
torch-tensorrt's dynamo path into a TensorRT engine with a dynamic batch 1..max_batch
(architecture.md §6, issue 11).

Engines live under data/engines/ (or <cache_dir>/engines) as torch-exported programs
(`.ep`) with a JSON key sidecar: checkpoint hash, variant, precision, batch range, GPU name
and TensorRT version. `load()` reuses a matching engine, builds a missing one (logging that
it is building and how long it took), and rebuilds or refuses (option on_stale) one whose
key does not match. Batches above the engine's range are split.

Missing torch-tensorrt/TensorRT or CUDA is a `BackendUnavailable` naming what to install.
There is no silent fallback: only `options["fallback"]` = "compile" | "cudagraph" | "torch" | "onnx"
enables one, and `info()` then says `fallback_from: trt` with the reason.

Options: on_stale ("rebuild" default | "refuse"), engine_path, opt_batch (TensorRT's
optimisation profile point, default 1: single-person frames are the common case),
fallback, workspace_gb.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from pipeline.backends.base import Backend, BackendConfig, BackendUnavailable
from pipeline.backends.engine_cache import EngineCache, EngineKey

log = logging.getLogger(__name__)

FALLBACKS = ("compile", "cudagraph", "torch", "onnx")


def install_hint() -> str:
    try:
        import torch
        tv = torch.__version__.split("+")[0]
    except ImportError:
        tv = "your torch"
    return (f'pip install "posepipe[trt]" (torch-tensorrt built for torch {tv}; it brings '
            f'the TensorRT libraries) on a machine with an NVIDIA GPU, its driver and a CUDA '
            f'build of torch')


def import_tensorrt(device: str = "cuda"):
    """(torch_tensorrt module, TensorRT version) or one BackendUnavailable naming every
    missing piece at once."""
    problems = []
    tt = None
    try:
        import torch_tensorrt as tt  # noqa: F811
    except ImportError as exc:
        problems.append(f"torch-tensorrt is not importable ({exc})")
    except Exception as exc:  # a broken TensorRT install raises OSError/RuntimeError on import
        problems.append(f"torch-tensorrt failed to import ({type(exc).__name__}: {exc})")
    try:
        import torch
        if not str(device).startswith("cuda"):
            problems.append(f"device is {device!r}: TensorRT runs on CUDA GPUs only")
        elif not torch.cuda.is_available():
            problems.append(f"torch {torch.__version__} sees no CUDA GPU")
    except ImportError:
        problems.append("torch is not installed")
    if problems:
        raise BackendUnavailable("backend 'trt' cannot run here: " + "; ".join(problems)
                                 + ". Install: " + install_hint()
                                 + ". (No automatic fallback: pick backend=cudagraph (the fastest "
                                 "without TensorRT on a GPU), compile or torch, or set the trt "
                                 "option fallback=cudagraph to allow one.)")
    try:
        import tensorrt
        trt_version = tensorrt.__version__
    except ImportError:
        trt_version = getattr(tt, "__tensorrt_version__", "unknown")
    return tt, str(trt_version)


def build_engine(tt, module, path: Path, precision: str, min_batch: int, opt_batch: int,
                 max_batch: int, workspace_gb: float | None = None) -> None:
    """Compile a FlatNetwork with torch-tensorrt (dynamo IR) and save it as an exported program."""
    import torch
    from pipeline.backends.network import CROP
    device = next(module.parameters()).device
    inputs = [
        tt.Input(min_shape=(min_batch, 3, CROP, CROP), opt_shape=(opt_batch, 3, CROP, CROP),
                 max_shape=(max_batch, 3, CROP, CROP), dtype=torch.float32, name="img"),
        tt.Input(min_shape=(min_batch, 3), opt_shape=(opt_batch, 3), max_shape=(max_batch, 3),
                 dtype=torch.float32, name="bbox_info"),
    ]
    precisions = {torch.float16, torch.float32} if precision == "fp16" else {torch.float32}
    kwargs = dict(ir="dynamo", inputs=inputs, enabled_precisions=precisions, min_block_size=1)
    if workspace_gb:
        kwargs["workspace_size"] = int(workspace_gb * (1 << 30))
    trt_module = tt.compile(module, **kwargs)
    example = [torch.randn(opt_batch, 3, CROP, CROP, device=device),
               torch.randn(opt_batch, 3, device=device) * 0.3]
    tt.save(trt_module, str(path), output_format="exported_program", inputs=example)


class TrtBackend(Backend):
    name = "trt"

    def __init__(self, config: BackendConfig):
        super().__init__(config)
        self._engine = None
        self._fallback: Backend | None = None
        self._info: dict = {"name": self.name, "loaded": False}

    def engine_key(self, device_name: str, trt_version: str, tt_version: str) -> EngineKey:
        from pipeline.backends import network as net
        return EngineKey(kind="trt", checkpoint=net.network_identity(self.config),
                         variant=self.config.model, precision=self.config.precision,
                         min_batch=1, max_batch=int(self.config.max_batch),
                         device_name=device_name,
                         runtime_version=f"tensorrt-{trt_version}/torch_tensorrt-{tt_version}",
                         extra=(("opt_batch", self._opt_batch()),))

    def _opt_batch(self) -> int:
        opt = int(self.config.options.get("opt_batch", 1))
        if not 1 <= opt <= int(self.config.max_batch):
            raise ValueError(f"opt_batch must be in 1..max_batch={self.config.max_batch}, got {opt}")
        return opt

    def cache(self) -> EngineCache:
        return EngineCache(self.config.data_path("engines"), ext="ep")

    def load(self) -> None:
        fallback = self.config.options.get("fallback")
        if fallback is not None and fallback not in FALLBACKS:
            raise ValueError(f"trt option fallback must be one of {FALLBACKS} or unset, got {fallback!r}")
        try:
            self._load_trt()
        except BackendUnavailable as exc:
            if fallback is None:
                raise
            log.warning("trt unavailable, running the requested fallback %r instead: %s", fallback, exc)
            self._fallback = _make_backend(fallback, self.config)
            self._fallback.load()
            self.asynchronous = self._fallback.asynchronous
            self._info = {**self._fallback.info(), "fallback_from": "trt", "fallback_reason": str(exc)}

    def _load_trt(self) -> None:
        from pipeline.backends import network as net
        net.validate_config(self.config)
        tt, trt_version = import_tensorrt(self.config.device)
        import torch
        device = net.resolve_device(self.config, self.name, cpu_ok=False)
        device_name = torch.cuda.get_device_name(device)
        key = self.engine_key(device_name, trt_version, getattr(tt, "__version__", "unknown"))
        cache, opts = self.cache(), self.config.options
        t0 = time.perf_counter()
        found = cache.find(key, opts)
        built = False
        if found.status != "hit":
            log.warning("trt: building a TensorRT engine for %s %s batch 1..%d on %s; this takes "
                        "minutes once, later starts load it from %s", self.config.model,
                        self.config.precision, key.max_batch, device_name, found.engine_path)
            model = net.build_network(self.config, device)
            # BN stays for TensorRT to fuse itself; SMPL is not part of the network.
            module = net.FlatNetwork(model).eval()
            cache.store(key, lambda p: build_engine(tt, module, p, key.precision, key.min_batch,
                                                    self._opt_batch(), key.max_batch,
                                                    opts.get("workspace_gb")),
                        opts.get("engine_path"))
            built = True
            del model, module
            torch.cuda.empty_cache()
            log.warning("trt: engine built in %.1f s", time.perf_counter() - t0)
        self._engine = tt.load(str(found.engine_path)).module()
        self._device = device
        self._sizes = tuple(range(1, key.max_batch + 1))
        self._host = net.HostOutputs(device, key.max_batch)
        self.asynchronous = True
        from pipeline.backends.pinned import PinnedUploader
        self._uploader = PinnedUploader(device)
        self._scratch = None
        self._info = {
            "name": self.name, "loaded": True, "device": str(device), "device_name": device_name,
            "precision": key.precision, "engine": str(found.engine_path), "engine_built": built,
            "tensorrt": trt_version, "batch_range": [key.min_batch, key.max_batch],
            "untrained": self.config.checkpoint is None, "checkpoint": key.checkpoint,
            "load_s": round(time.perf_counter() - t0, 3), "warmed_up": False,
        }

    def warmup(self) -> None:
        if self._fallback is not None:
            self._fallback.warmup()
            return
        import torch
        from pipeline.backends import network as net
        self._require_loaded()
        t0 = time.perf_counter()
        try:
            for size in self._sizes:
                img = torch.randn(size, 3, net.CROP, net.CROP, device=self._device)
                self.infer(img, torch.randn(size, 3, device=self._device) * 0.3)
        except torch.cuda.OutOfMemoryError as exc:
            raise RuntimeError(net.oom_message(self.name, self.config, exc)) from exc
        self._info.update(warmup_s=round(time.perf_counter() - t0, 2), warmed_up=True)

    def infer(self, img, bbox_info) -> dict:
        return self.submit(img, bbox_info).result()

    def submit(self, img, bbox_info):
        """Queues the engine run(s) and the output copy; returns before the GPU is done."""
        if self._fallback is not None:
            return self._fallback.submit(img, bbox_info)
        import torch
        from pipeline.backends import network as net
        self._require_loaded()
        with torch.inference_mode():
            pending, self._scratch = net.submit_chunked(self._engine, img, bbox_info, self._sizes,
                                                        self._scratch, self._uploader, self._host)
        return pending

    def info(self) -> dict:
        return dict(self._info)

    def close(self) -> None:
        if self._fallback is not None:
            self._fallback.close()
        self._engine = None

    def _require_loaded(self):
        if self._engine is None:
            raise RuntimeError("trt backend: call load() before warmup()/infer()")


def _make_backend(name: str, config: BackendConfig) -> Backend:
    from pipeline.backends import get_backend
    return get_backend(name)(config)
