"""`onnx` backend: the network exported once to ONNX (dynamic batch) and run by onnxruntime,
on the CPU or through onnxruntime-gpu's CUDA provider (architecture.md §6).

The .onnx file is cached under data/engines/ with a key sidecar (engine_cache), so the
export (tens of seconds for HRNet-W48) happens once per checkpoint. fp32 only: fp16 on the
GPU is the job of the compile and trt backends.

Options: opset (default 18), threads (onnxruntime intra-op threads, default: its own
choice), spinning (default False: idle worker threads sleep instead of spinning), on_stale ("rebuild" | "refuse"), engine_path (use/produce this file),
exporter ("dynamo" default, "torchscript").
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from pipeline.backends.base import Backend, BackendConfig, BackendUnavailable
from pipeline.backends import batching
from pipeline.backends.engine_cache import DEFAULT_ENGINE_DIR, EngineCache, EngineKey

log = logging.getLogger(__name__)

INSTALL_HINT = 'pip install "posepipe[onnx]"  (onnxruntime, onnx, onnxscript)'
MIN_OPSET = 17
DEFAULT_OPSET = 18


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailable(f"backend 'onnx' needs onnxruntime, which is not installed "
                                 f"({exc}); install it with: {INSTALL_HINT}") from exc
    return onnxruntime


def export_onnx(module, path: Path, max_batch: int, opset: int = DEFAULT_OPSET,
                exporter: str = "dynamo") -> None:
    """Export a FlatNetwork (img, bbox_info) -> (B, 253) with a dynamic batch axis."""
    import torch
    from pipeline.backends.network import CROP
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

    def __init__(self, config: BackendConfig):
        super().__init__(config)
        self._session = None
        self._info: dict = {"name": self.name, "loaded": False}

    def engine_key(self) -> EngineKey:
        import torch
        from pipeline.backends import network as net
        opset = int(self.config.options.get("opset", DEFAULT_OPSET))
        return EngineKey(kind="onnx", checkpoint=net.network_identity(self.config),
                         variant=self.config.model, precision="fp32", min_batch=1,
                         max_batch=int(self.config.max_batch),
                         runtime_version=f"torch-{torch.__version__.split('+')[0]}",
                         extra=(("opset", opset),))

    def cache(self) -> EngineCache:
        root = Path(self.config.cache_dir) / "engines" if self.config.cache_dir else DEFAULT_ENGINE_DIR
        return EngineCache(root, ext="onnx")

    def load(self) -> None:
        ort = import_onnxruntime()
        from pipeline.backends import network as net
        cfg, opts = self.config, self.config.options
        net.validate_config(cfg)
        if cfg.precision != "fp32":
            raise ValueError("backend 'onnx' runs fp32 only; for fp16 use backend=compile or trt")
        providers = self._providers(ort)
        t0 = time.perf_counter()
        key = self.engine_key()
        cache = self.cache()
        found = cache.find(key, opts)
        built = False
        if found.status != "hit":
            log.info("onnx: exporting the network to %s (once per checkpoint)", found.engine_path)
            module = self._export_module()
            cache.store(key, lambda p: export_onnx(module, p, key.max_batch, dict(key.extra)["opset"],
                                                   opts.get("exporter", "dynamo")),
                        opts.get("engine_path"))
            built = True
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if opts.get("threads"):
            so.intra_op_num_threads = int(opts["threads"])
        if not opts.get("spinning", False):
            # Idle onnxruntime workers spin by default; on a few-core host that burns the CPU
            # the other pipeline processes (capture, detection) need between frames.
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(str(found.engine_path), sess_options=so, providers=providers)
        self._sizes = tuple(range(1, key.max_batch + 1))
        self._info = {
            "name": self.name, "loaded": True, "device": cfg.device,
            "providers": self._session.get_providers(), "precision": "fp32",
            "engine": str(found.engine_path), "engine_built": built,
            "untrained": cfg.checkpoint is None, "checkpoint": key.checkpoint,
            "batch_sizes": list(self._sizes), "load_s": round(time.perf_counter() - t0, 3),
            "onnxruntime": ort.__version__,
        }

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
        import numpy as np
        self._require_loaded()
        t0 = time.perf_counter()
        for size in sorted({1, max(self._sizes)}):
            img = np.random.default_rng(0).standard_normal((size, 3, 224, 224), dtype=np.float32)
            self.infer(img, np.zeros((size, 3), np.float32))
        self._info["warmup_s"] = round(time.perf_counter() - t0, 3)

    def infer(self, img, bbox_info) -> dict:
        import numpy as np
        from pipeline.backends import network as net
        self._require_loaded()
        img, bbox_info = _to_numpy(img), _to_numpy(bbox_info)
        n = net.check_inputs(img, bbox_info)
        parts = []
        for c in batching.plan(n, self._sizes):
            parts.append(self._session.run(["flat"], {"img": img[c.start:c.stop],
                                                      "bbox_info": bbox_info[c.start:c.stop]})[0])
        flat = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return net.split_flat(flat)

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
