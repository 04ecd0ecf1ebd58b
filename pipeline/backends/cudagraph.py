"""`cudagraph` backend: the eager network, prepared for batch-1 latency, captured into one CUDA
graph per batch size and replayed.

What is captured: BatchNorm folded into the convolutions; conv+ReLU and conv+add+ReLU as
single cuDNN kernels (`conv_fusion`); the backbone in fp16 channels-last (head and uncertainty
fp32, as everywhere); and HRNet's independent branches on parallel streams
(`branch_streams`), which the capture turns into parallel paths of the graph. No Inductor
compile: ready in seconds instead of the `compile` backend's 40-110 s.

Options (BackendConfig.options):
    streams       int, default 8: CUDA streams for the backbone's independent chains (1 = serial;
                  H100, POCO-CLIFF batch 1: 2.92 ms with 1, 1.78 ms with 4, 1.53 ms with 8)
    cudnn_fusion  bool, default True
    batch_sizes   "all" (default) | "pow2" | "1,2,4": one graph per size; other batches are
                  split/padded to these
    background_capture  bool, default True: `warmup()` captures only the sizes the first
                  frames need (BackendConfig.warm_batches: batch 1 and the persons in view) and
                  a background thread captures the others while frames are served; until a
                  size is captured its batches run as chunks of captured sizes. False: every
                  size before `ready` (~1.5 s each on an H100, mostly cuDNN autotuning).
Needs a CUDA GPU; fails in `load()` otherwise.

The background thread captures with capture_error_mode="thread_local", so the serving thread
may keep replaying graphs, uploading and synchronising its own streams meanwhile (all of
them non-blocking streams, which a capture on another stream does not interfere with).
"""
from __future__ import annotations

import logging
import threading
import time

from pipeline.backends import batching
from pipeline.backends.base import Backend, BackendConfig

log = logging.getLogger(__name__)

DEFAULT_STREAMS = 8
WARMUP_CALLS = 3   # cuDNN picks its algorithms (benchmark mode) before the capture


class CudaGraphBackend(Backend):
    name = "cudagraph"

    def __init__(self, config: BackendConfig):
        super().__init__(config)
        self._module = None
        self._graphs: dict = {}
        self._sizes: tuple[int, ...] = ()
        self._ready: tuple[int, ...] = ()     # captured sizes, what submit() plans with
        self._info: dict = {"name": self.name, "loaded": False}
        self._lock = threading.Lock()         # _info and _ready, shared with the capture thread
        self._background: threading.Thread | None = None
        self._closing = threading.Event()

    def load(self) -> None:
        import torch

        from pipeline.backends import network as net
        from pipeline.backends.branch_streams import StreamedGraph

        cfg, opts = self.config, self.config.options
        net.validate_config(cfg)
        streams = int(opts.get("streams", DEFAULT_STREAMS))
        if not 1 <= streams <= 16:
            raise ValueError(f"cudagraph option streams must be in 1..16, got {streams}")
        device = net.resolve_device(cfg, self.name, cpu_ok=False)
        sizes = batching.parse_sizes(opts.get("batch_sizes", "all"), int(cfg.max_batch))
        t0 = time.perf_counter()
        torch.backends.cudnn.benchmark = True
        model = net.build_network(cfg, device)
        prepared = net.prepare_network(model, cfg.precision, True, fold_bn=True,
                                       cudnn_fusion=bool(opts.get("cudnn_fusion", True)))
        holder, attr = _backbone_slot(prepared.module)
        graph = getattr(holder, attr, None)
        plan = None
        if isinstance(graph, torch.fx.GraphModule):
            streamed = StreamedGraph(graph, streams)
            setattr(holder, attr, streamed)
            plan = streamed.plan
        elif streams > 1:
            log.warning("cudagraph: the backbone is not an fx graph (BatchNorm not folded), so it "
                        "runs on one stream")
        self._module = net.FlatNetwork(prepared.module, True).eval()
        self._device, self._sizes = device, sizes
        self.asynchronous = True
        from pipeline.backends.pinned import PinnedUploader
        self._uploader = PinnedUploader(device)
        self._host = net.HostOutputs(device, int(cfg.max_batch))
        self._dev_out = None
        self._info = {
            "name": self.name, "loaded": True, "device": str(device),
            "device_name": torch.cuda.get_device_name(device),
            "precision": cfg.precision, "precision_detail": prepared.precision_detail,
            "bn_folded": prepared.bn_folded, "bn_left": prepared.bn_left, "channels_last": True,
            "cudnn_fusion": prepared.fused or False,
            "streams": plan.streams_used if plan else 1,
            "stream_plan": ({"nodes": plan.nodes, "depth": plan.depth, "chains": plan.chains,
                             "cross_stream_waits": plan.cross_edges} if plan else None),
            "batch_sizes": list(sizes), "untrained": cfg.checkpoint is None,
            "checkpoint": net.network_identity(cfg),
            "load_s": round(time.perf_counter() - t0, 3), "warmed_up": False,
        }
        log.info("cudagraph backend loaded (%s, %s, %s streams); capturing sizes %s",
                 device, prepared.precision_detail, self._info["streams"], list(sizes))

    def warmup(self) -> None:
        import torch

        from pipeline.backends import network as net
        self._require_loaded()
        background = bool(self.config.options.get("background_capture", True))
        first = batching.warm_sizes(self.config.warm_batches, self._sizes) if background else self._sizes
        t_all = time.perf_counter()
        self._info["warmup_per_size_s"] = {}
        try:
            for size in first:
                self._capture_size(size, "global")
        except torch.cuda.OutOfMemoryError as exc:
            raise RuntimeError(net.oom_message(self.name, self.config, exc)) from exc
        rest = [s for s in self._sizes if s not in self._graphs]
        with self._lock:
            self._info.update(warmup_s=round(time.perf_counter() - t_all, 2), warmed_up=True,
                              background_pending=list(rest))
        if rest:
            self._background = threading.Thread(target=self._capture_rest, args=(rest,),
                                                name="cudagraph-capture", daemon=True)
            self._background.start()

    def wait_background(self, timeout: float | None = None) -> bool:
        """Wait for the background captures; True when none is left running."""
        if self._background is not None:
            self._background.join(timeout)
        return self._background is None or not self._background.is_alive()

    def _capture_size(self, size: int, mode: str) -> None:
        t0 = time.perf_counter()
        captured = self._capture(size, mode)
        with self._lock:
            self._graphs[size] = captured
            self._ready = tuple(sorted(self._graphs))
            self._info["warmup_per_size_s"][size] = round(time.perf_counter() - t0, 2)
            self._info["captured"] = list(self._ready)

    def _capture_rest(self, sizes) -> None:
        import torch

        try:
            if self._device.type == "cuda":
                torch.cuda.set_device(self._device)   # a new thread starts on device 0
            for size in sizes:
                if self._closing.is_set():
                    return
                self._capture_size(size, "thread_local")
                with self._lock:
                    self._info["background_pending"] = [s for s in sizes if s not in self._graphs]
        except Exception as exc:  # the served sizes keep working; bigger batches run as chunks
            log.warning("cudagraph: background capture stopped (%s: %s); batches run as chunks of "
                        "the captured sizes %s", type(exc).__name__, exc, list(self._ready))
            with self._lock:
                self._info["background_error"] = f"{type(exc).__name__}: {exc}"

    def _capture(self, size: int, mode: str = "global"):
        import torch

        from pipeline.backends import network as net
        img = torch.randn(size, 3, net.CROP, net.CROP, device=self._device)
        bbox = torch.randn(size, 3, device=self._device) * 0.3
        from pipeline.backends.graphs import capture_graph

        with torch.inference_mode():
            graph, out = capture_graph(lambda: self._module(img, bbox), self._device,
                                       warmup_calls=WARMUP_CALLS, capture_error_mode=mode)
        # Only this thread's streams: a device-wide sync would also wait for the frames the
        # serving thread has queued meanwhile.
        torch.cuda.current_stream(self._device).synchronize()
        return _Captured(graph, img, bbox, out)

    def _run(self, img, bbox):
        captured = self._graphs.get(int(img.shape[0]))
        if captured is None:
            raise RuntimeError(f"cudagraph: no graph for batch {img.shape[0]} (captured: "
                               f"{sorted(self._graphs)}); call warmup() first")
        captured.img.copy_(img)
        captured.bbox.copy_(bbox)
        captured.graph.replay()
        return captured.out

    def infer(self, img, bbox_info) -> dict:
        return self.submit(img, bbox_info).result()

    def submit(self, img, bbox_info):
        """Queues the input copies, the graph replay(s) and the output copy; returns at once."""
        from pipeline.backends import network as net
        self._require_loaded()
        ready = self._ready
        if not ready:
            raise RuntimeError("cudagraph backend: call warmup() before infer()")
        pending, self._dev_out = net.submit_chunked(self._run, img, bbox_info, ready,
                                                    self._dev_out, self._uploader, self._host)
        return pending

    def info(self) -> dict:
        with self._lock:
            info = dict(self._info)
            info["warmup_per_size_s"] = dict(info.get("warmup_per_size_s") or {})
            return info

    def close(self) -> None:
        # No new capture starts; one in progress (~1.5 s) is waited for, within the stop
        # grace the supervisor gives a worker before SIGKILL (supervisor.shutdown_grace, 3 s).
        self._closing.set()
        self.wait_background(2.0)
        self._graphs.clear()
        self._ready = ()
        self._module = None
        try:
            import torch
            torch.cuda.empty_cache()
        except Exception:  # closing must never raise
            pass

    def _require_loaded(self):
        if self._module is None:
            raise RuntimeError("cudagraph backend: call load() before warmup()/infer()")


class _Captured:
    __slots__ = ("graph", "img", "bbox", "out")

    def __init__(self, graph, img, bbox, out):
        self.graph, self.img, self.bbox, self.out = graph, img, bbox, out


def _backbone_slot(model):
    """(object, attribute) holding the backbone's fx graph: inside the fp16 island if any."""
    from pipeline.backends.network import _HalfIsland
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, _HalfIsland):
        return backbone, "inner"
    return model, "backbone"
