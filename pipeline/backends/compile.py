"""`compile` backend: torch.compile(mode="reduce-overhead") = Inductor kernels replayed as
CUDA graphs, channels-last, in the precision asked for (fp16 = fp16 backbone, fp32 head;
the inference worker's `auto` picks fp16 on CUDA) (architecture.md §6).

At batch 1 eager POCO is CPU-launch-bound (~37 ms on an H100 for ~35 GFLOP), so the win
comes from replaying the whole network (backbone + head + uncertainty + output packing) as
one CUDA graph per batch size. Every size the worker may see is compiled and captured in
`warmup()`, before the worker reports ready; a frame with B persons runs on the smallest
captured size >= B (padded), and batches above max_batch are split.

Options (BackendConfig.options):
    batch_sizes   "all" (default) | "pow2" | "1,2,4,8": sizes to capture.
    dynamic       None (default: Inductor specialises batch 1, then makes one batch-dynamic
                  graph for the others; CUDA graphs are still one per size) | True | False
                  (False = one full compile per size, slowest to build).
    mode          torch.compile mode, default "reduce-overhead" on CUDA, "default" on CPU.
    fullgraph     bool, default False (a graph break is logged, not fatal).
    freezing      bool, default False: Inductor freezing (weights become constants).
    cudnn_fusion  bool, default False: conv+ReLU and conv+add+ReLU as single cuDNN kernels
                  (backends/conv_fusion.py); CUDA only.
    allow_cpu     bool: opt in to Inductor on CPU (slow to build; no CUDA graphs there).
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from pipeline.backends.base import Backend, BackendConfig, BackendUnavailable
from pipeline.backends import batching

log = logging.getLogger(__name__)

def configure_compile_cache(cache_dir: str | os.PathLike | None) -> Path | None:
    """Point Inductor's and Triton's on-disk caches under our cache dir (read at compile
    time, so this must run before the first compiled call)."""
    if cache_dir is None:
        return None
    root = Path(cache_dir)
    (root / "inductor").mkdir(parents=True, exist_ok=True)
    (root / "triton").mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(root / "inductor")
    os.environ["TRITON_CACHE_DIR"] = str(root / "triton")
    return root


class CompileBackend(Backend):
    name = "compile"

    def __init__(self, config: BackendConfig):
        super().__init__(config)
        self._compiled = None
        self._sizes: tuple[int, ...] = ()
        self._info: dict = {"name": self.name, "loaded": False}

    # -- lifecycle ---------------------------------------------------------------------
    def load(self) -> None:
        import torch
        from pipeline.backends import network as net

        cfg, opts = self.config, self.config.options
        net.validate_config(cfg)
        device = net.resolve_device(cfg, self.name, cpu_ok=True)
        if device.type == "cpu" and not opts.get("allow_cpu", False):
            raise BackendUnavailable(
                "backend 'compile' needs a CUDA GPU (its speed comes from CUDA graphs). "
                "Inductor on CPU takes minutes to build and gains little here: use "
                "backend=torch or backend=onnx on CPU, or set options allow_cpu=true to try it")
        cuda = device.type == "cuda"
        if "keep_fp32" in opts:
            raise ValueError("compile option keep_fp32 no longer exists: the backend runs the precision "
                             "asked for; use precision=fp32 (or fp16)")
        precision = cfg.precision
        if precision == "fp16" and not cuda:
            raise BackendUnavailable("compile fp16 needs a CUDA GPU (CPU half convolutions are slow and "
                                     "inexact); use precision=fp32 on CPU")
        channels_last = cuda or cfg.channels_last
        sizes = batching.parse_sizes(opts.get("batch_sizes", "all"), int(cfg.max_batch))
        cache_root = configure_compile_cache(cfg.data_path("cache"))

        t0 = time.perf_counter()
        if cuda:
            torch.backends.cudnn.benchmark = True
        model = net.build_network(cfg, device)
        prepared = net.prepare_network(model, precision, channels_last,
                                       fold_bn=opts.get("fold_bn", True),
                                       cudnn_fusion=bool(opts.get("cudnn_fusion", False)) and cuda)
        module = net.FlatNetwork(prepared.module, channels_last).eval()

        import torch._dynamo
        # One specialised graph per batch size must not hit dynamo's recompile limit.
        limit = 4 * len(sizes) + 8
        for attr in ("recompile_limit", "cache_size_limit"):
            if hasattr(torch._dynamo.config, attr):
                setattr(torch._dynamo.config, attr, max(getattr(torch._dynamo.config, attr), limit))
        mode = opts.get("mode", "reduce-overhead" if cuda else "default")
        kwargs = dict(fullgraph=bool(opts.get("fullgraph", False)), dynamic=opts.get("dynamic", None))
        if opts.get("freezing", False):
            # Freezing (weights as constants: folded, pre-laid-out) is an Inductor option, and
            # torch.compile takes either a mode or options: spell reduce-overhead out.
            if mode not in ("reduce-overhead", "default"):
                raise ValueError(f"compile option freezing works with mode reduce-overhead or "
                                 f"default, got {mode!r}")
            kwargs["options"] = {"freezing": True,
                                 "triton.cudagraphs": cuda and mode == "reduce-overhead"}
        else:
            kwargs["mode"] = mode
        self._compiled = torch.compile(module, **kwargs)
        self._device = device
        self.asynchronous = cuda
        from pipeline.backends.pinned import PinnedUploader
        self._uploader = PinnedUploader(device)
        self._sizes = sizes
        self._host = net.HostOutputs(device, int(cfg.max_batch))
        self._dev_out = torch.empty((int(cfg.max_batch), net.FLAT_WIDTH), device=device)
        self._info = {
            "name": self.name, "loaded": True, "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if cuda else "cpu",
            "precision": precision, "precision_detail": prepared.precision_detail,
            "bn_folded": prepared.bn_folded, "bn_left": prepared.bn_left, "channels_last": channels_last,
            "cudnn_fusion": prepared.fused or False,
            "mode": mode, "freezing": bool(opts.get("freezing", False)),
            "dynamic": opts.get("dynamic", None), "batch_sizes": list(sizes),
            "untrained": cfg.checkpoint is None, "checkpoint": net.network_identity(cfg),
            "cache_dir": str(cache_root) if cache_root else None,
            "load_s": round(time.perf_counter() - t0, 3), "warmed_up": False,
        }
        log.info("compile backend loaded (%s, %s); warm-up compiles sizes %s",
                 device, prepared.precision_detail, list(sizes))

    def warmup(self) -> None:
        import torch
        from pipeline.backends import network as net
        self._require_loaded()
        per_size = {}
        t_all = time.perf_counter()
        try:
            for size in self._sizes:
                img = torch.randn(size, 3, net.CROP, net.CROP, device=self._device)
                bbox = torch.randn(size, 3, device=self._device) * 0.3
                t0 = time.perf_counter()
                # reduce-overhead: 1st call compiles + warms, 2nd records the graph, 3rd replays.
                for _ in range(3):
                    self._run(img, bbox)
                if self._device.type == "cuda":
                    torch.cuda.synchronize(self._device)
                per_size[size] = round(time.perf_counter() - t0, 2)
                log.info("compile: batch %d ready in %.1f s", size, per_size[size])
        except torch.cuda.OutOfMemoryError as exc:
            raise RuntimeError(net.oom_message(self.name, self.config, exc)) from exc
        self._info.update(warmup_s=round(time.perf_counter() - t_all, 2),
                          warmup_per_size_s=per_size, warmed_up=True,
                          graph_breaks=_graph_break_count())

    def infer(self, img, bbox_info) -> dict:
        return self.submit(img, bbox_info).result()

    def submit(self, img, bbox_info):
        """Queues the graph replay(s) and the output copy; returns before the GPU is done."""
        from pipeline.backends import network as net
        self._require_loaded()
        pending, self._dev_out = net.submit_chunked(self._run, img, bbox_info, self._sizes, self._dev_out,
                                                    self._uploader, self._host)
        return pending

    def info(self) -> dict:
        return dict(self._info)

    def close(self) -> None:
        self._compiled = None
        try:
            import torch
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # closing must never raise
            pass

    # -- internals ---------------------------------------------------------------------
    def _run(self, img, bbox):
        import torch
        if self._device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()
        with torch.inference_mode():
            return self._compiled(img, bbox)

    def _require_loaded(self):
        if self._compiled is None:
            raise RuntimeError("compile backend: call load() before warmup()/infer()")


def _graph_break_count() -> int:
    try:
        from torch._dynamo.utils import counters
        return int(sum(counters["graph_break"].values()))
    except Exception:
        return -1
