"""`onnx` backend: the network exported once to ONNX (dynamic batch) and run by onnxruntime,
on the CPU or through onnxruntime-gpu's CUDA provider (architecture.md §6).

The .onnx file is cached under data/engines/ with a key sidecar (engine_cache), so the
export (tens of seconds for HRNet-W48) happens once per checkpoint. fp32 only: fp16 on the
GPU is the job of the compile and trt backends. Once the file exists, loading it needs no
torch at all (the key is computed without importing it): a restarted CPU worker is ready in
about a second instead of paying torch's import.

Options: opset (default 18), threads (onnxruntime intra-op threads, default: the worker's
CPU budget, pipeline/runtime/cpu.py), spinning (default: the budget's, off: idle pool threads
sleep instead of spinning), on_stale ("rebuild" | "refuse"), engine_path (use/produce this
file), exporter ("dynamo" default, "torchscript").
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from pipeline.backends import batching, layout
from pipeline.backends.base import Backend, BackendConfig, BackendUnavailable
from pipeline.backends.engine_cache import EngineCache, EngineKey, checkpoint_identity

log = logging.getLogger(__name__)

INSTALL_HINT = 'pip install "onnxruntime>=1.17" "onnx>=1.16,<1.18"  (part of the base install)'
MIN_OPSET = 17
DEFAULT_OPSET = 18
# What the int8 ranges were calibrated on (onnx_variants.quantize_int8_static): part of its key.
INT8_CALIBRATION = "bundled-photos-32-seed0"


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailable(f"backend 'onnx' needs onnxruntime, which is not installed "
                                 f"({exc}); install it with: {INSTALL_HINT}") from exc
    return onnxruntime


def torch_release() -> str:
    """torch's version ("2.14.1") without importing torch, for the engine key."""
    import sys
    from importlib.metadata import PackageNotFoundError, version

    loaded = sys.modules.get("torch")
    try:
        full = loaded.__version__ if loaded is not None else version("torch")
    except PackageNotFoundError:
        return "none"
    return str(full).split("+")[0]


def export_onnx(module, path: Path, max_batch: int, opset: int = DEFAULT_OPSET,
                exporter: str = "dynamo") -> None:
    """Export a FlatNetwork (img, bbox_info) -> (B, 253) with a dynamic batch axis."""
    import torch
    from pipeline.backends.layout import CROP
    if opset < MIN_OPSET:
        raise ValueError(f"opset must be >= {MIN_OPSET}, got {opset}")
    example = (torch.randn(2, 3, CROP, CROP), torch.randn(2, 3) * 0.3)
    names = dict(input_names=["img", "bbox_info"], output_names=["flat"], opset_version=opset)
    if exporter == "dynamo":
        batch = torch.export.Dim("batch", min=1, max=max(2, max_batch))
        try:
            torch.onnx.export(module, example, str(path), dynamo=True, external_data=False,
                              dynamic_shapes={"img": {0: batch}, "bbox_info": {0: batch}}, **names)
            return
        except Exception as exc:
            log.warning("dynamo ONNX export failed (%s); retrying with the TorchScript exporter", exc)
    elif exporter != "torchscript":
        raise ValueError(f"exporter must be 'dynamo' or 'torchscript', got {exporter!r}")
    torch.onnx.export(module, example, str(path), dynamo=False,
                      dynamic_axes={"img": {0: "batch"}, "bbox_info": {0: "batch"},
                                    "flat": {0: "batch"}}, **names)


class OnnxBackend(Backend):
    name = "onnx"
    precisions = ("fp32", "int8")

    def __init__(self, config: BackendConfig):
        super().__init__(config)
        self._session = None
        self._info: dict = {"name": self.name, "loaded": False}

    @classmethod
    def auto_device(cls, device: str) -> str:
        # The GPU only through onnxruntime-gpu's CUDA provider; the plain onnxruntime wheel
        # (the base install) runs on the CPU even on a GPU host.
        if not device.startswith("cuda"):
            return device
        try:
            import onnxruntime
        except ImportError:
            return device   # load() says what to install
        return device if "CUDAExecutionProvider" in onnxruntime.get_available_providers() else "cpu"

    @classmethod
    def auto_precision(cls, device: str) -> str:
        # fp32 on every device: onnxruntime's CPU fp16 kernels are slower than fp32 on x86
        # (tools/bench_model.py), and GPU fp16 is the job of the compile/cudagraph/trt backends.
        return "fp32"

    def engine_key(self, precision: str = "fp32") -> EngineKey:
        opset = int(self.config.options.get("opset", DEFAULT_OPSET))
        extra = (("opset", opset),) + ((("calibration", INT8_CALIBRATION),) if precision == "int8" else ())
        return EngineKey(kind="onnx",
                         checkpoint=checkpoint_identity(self.config.checkpoint,
                                                        int(self.config.options.get("seed", 0))),
                         variant=self.config.model, precision=precision, min_batch=1,
                         max_batch=int(self.config.max_batch),
                         runtime_version=f"torch-{torch_release()}", extra=extra)

    def cache(self) -> EngineCache:
        return EngineCache(self.config.data_path("engines"), ext="onnx")

    def load(self) -> None:
        ort = import_onnxruntime()
        from pipeline.backends import onnx_variants
        from pipeline.runtime import cpu
        cfg, opts = self.config, self.config.options
        if cfg.precision not in self.precisions:
            raise ValueError(f"backend 'onnx' has no {cfg.precision} (it runs fp32, or int8 on the CPU); "
                             f"use precision=fp32 or auto, or backend=compile/cudagraph/trt for fp16")
        layout.validate_config(cfg, self.precisions)
        providers = self._providers(ort)
        t0 = time.perf_counter()
        cache = self.cache()
        key = self.engine_key()
        path, built = self._fp32_engine(cache, key)
        checks = {}
        if cfg.precision == "int8":
            path, built_int8, checks = self._int8_engine(cache, path)
            built = built or built_int8
        threads = int(opts.get("threads") or cpu.worker_threads() or 0)
        spin = bool(opts["spinning"]) if "spinning" in opts else cpu.spinning_allowed()
        self._session = onnx_variants.session(path, "all", threads, providers, spin=spin)
        self._sizes = tuple(range(1, key.max_batch + 1))
        self._info = {
            "name": self.name, "loaded": True, "device": cfg.device,
            "providers": self._session.get_providers(), "precision": cfg.precision,
            "threads": threads or "onnxruntime default", "spinning": spin,
            "engine": str(path), "engine_built": built, **checks,
            "untrained": cfg.checkpoint is None, "checkpoint": key.checkpoint,
            "batch_sizes": list(self._sizes), "load_s": round(time.perf_counter() - t0, 3),
            "onnxruntime": ort.__version__,
        }

    def _fp32_engine(self, cache: EngineCache, key: EngineKey) -> tuple[Path, bool]:
        """The exported fp32 graph: from the cache, else exported now (once per checkpoint)."""
        opts = self.config.options
        found = cache.find(key, opts)
        if found.status == "hit":
            return found.engine_path, False
        log.info("onnx: exporting the network to %s (once per checkpoint)", found.engine_path)
        module = self._export_module()
        path = cache.store(key, lambda p: export_onnx(module, p, key.max_batch, dict(key.extra)["opset"],
                                                      opts.get("exporter", "dynamo")),
                           opts.get("engine_path"))
        return path, True

    def _int8_engine(self, cache: EngineCache, fp32_path: Path) -> tuple[Path, bool, dict]:
        """The int8 graph quantised from `fp32_path` (built once per checkpoint, then cached)
        with its rotation error against fp32 on held-out crops; refused above the bound."""
        from pipeline.backends import onnx_variants as variants
        if self.config.device != "cpu":
            raise ValueError("backend 'onnx' runs int8 on the CPU only; on a GPU use precision=fp16 with "
                             "backend=cudagraph, compile or trt")
        key = self.engine_key("int8")
        found = cache.find(key, {"on_stale": self.config.options.get("on_stale", "rebuild")})
        built = found.status != "hit"
        if built:
            log.info("onnx: quantising the network to int8 into %s (once per checkpoint)", found.engine_path)
            cache.store(key, lambda p: variants.quantize_int8_static(fp32_path, p),
                        check=lambda p: {"rotation_error": variants.check_against_fp32(fp32_path, p)})
        error = cache.checks(found.engine_path).get("rotation_error")
        if not isinstance(error, (int, float)) or not error <= variants.ROTATION_TOLERANCE:
            raise ValueError(f"backend 'onnx' int8: the quantised network is {error} off fp32 on rotation-matrix "
                             f"entries (bound {variants.ROTATION_TOLERANCE:g}) for this checkpoint; use "
                             f"precision=fp32 (engine {found.engine_path})")
        return found.engine_path, built, {"rotation_error_vs_fp32": round(float(error), 5)}

    def _providers(self, ort) -> list[str]:
        available = ort.get_available_providers()
        if self.config.device.startswith("cuda"):
            if "CUDAExecutionProvider" not in available:
                raise BackendUnavailable(
                    f"backend 'onnx' on {self.config.device!r} needs onnxruntime's CUDA provider, "
                    f"but this onnxruntime {ort.__version__} offers only {available}; install "
                    f"onnxruntime-gpu matching your CUDA, or use device=cpu")
            index = self.config.device.partition(":")[2] or "0"
            return [("CUDAExecutionProvider", {"device_id": int(index)}), "CPUExecutionProvider"]
        if self.config.device != "cpu":
            raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {self.config.device!r}")
        return ["CPUExecutionProvider"]

    def _export_module(self):
        from pipeline.backends import network as net
        model = net.build_network(self.config, "cpu")
        prepared = net.prepare_network(model, "fp32", channels_last=False, fold_bn=True)
        return net.FlatNetwork(prepared.module).eval()

    def warmup(self) -> None:
        """Runs the batch sizes the first frames need (config.warm_batches). onnxruntime takes
        any batch size without preparation; a first run of a new size only plans its memory
        (a few ms), so other sizes are simply prepared when they first come."""
        import numpy as np
        self._require_loaded()
        t0 = time.perf_counter()
        sizes = batching.warm_sizes(self.config.warm_batches, self._sizes)
        for size in sizes:
            img = np.random.default_rng(0).standard_normal((size, 3, 224, 224), dtype=np.float32)
            self.infer(img, np.zeros((size, 3), np.float32))
        self._info.update(warmup_s=round(time.perf_counter() - t0, 3), warm_batches=list(sizes))

    def infer(self, img, bbox_info) -> dict:
        import numpy as np

        from pipeline.backends import onnx_variants
        self._require_loaded()
        img, bbox_info = _to_numpy(img), _to_numpy(bbox_info)
        n = layout.check_inputs(img, bbox_info)
        parts = []
        for c in batching.plan(n, self._sizes):
            parts.append(onnx_variants.run_batch(self._session, img[c.start:c.stop], bbox_info[c.start:c.stop]))
        flat = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return layout.split_flat(flat)

    def info(self) -> dict:
        return dict(self._info)

    def close(self) -> None:
        self._session = None

    def _require_loaded(self):
        if self._session is None:
            raise RuntimeError("onnx backend: call load() before warmup()/infer()")


def _to_numpy(x):
    import numpy as np
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    if not isinstance(x, np.ndarray):
        raise TypeError(f"expected a numpy array or torch tensor, got {type(x).__name__}")
    return np.ascontiguousarray(x, dtype=np.float32)
