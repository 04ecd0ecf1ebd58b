"""A YOLO detect network at model speed: letterbox, network, decode and NMS on the device.

Per frame the host does a fixed amount of work whatever the image size: one asynchronous
upload (on a GPU; by DMA straight from the frames ring when the detection worker page-locked
it with `register_host`, else after one copy into a page-locked buffer), a graph replay, one
read-back of the top `candidates` boxes into page-locked memory (the frame's only wait on the
GPU), and the thresholds and NMS on the host over those boxes. On the device, in one CUDA graph per frame size:
uint8 HWC -> float CHW, bilinear resize into the letterbox (grey 114 border, as ultralytics
pads): the long side `imgsz`, the short side padded to the model's stride, as ultralytics'
own rectangular inference does (a 16:9 frame runs at 640x384, not 640x640); a TensorRT engine
has one static input, so there the letterbox is the full `imgsz` square. Then /255, the network in fp16, box decoding, the person score of every
anchor (the anchor's best class must be class 0, as ultralytics' class filter does), and the
top `candidates` anchors by score mapped back to frame pixels. The confidence and NMS IoU
thresholds apply after the graph, so they stay live-settable.

Engines (`engine`; `auto` is trt where TensorRT is installed, else cudagraph, on a GPU):
  trt        a TensorRT engine exported once by ultralytics' own `export(format="engine")`
             (fp16, fixed imgsz, batch 1), cached beside a copy of the weights under
             `cache_dir`; run through ultralytics' AutoBackend. Needs the `tensorrt` package.
  compile    (opt-in) the cudagraph engine's steps compiled by Inductor (torch.compile, Triton
             kernels: the pointwise work around each convolution fused), then captured in a CUDA
             graph the same way. Half the GPU time of `cudagraph` standalone (yolo11n, 1080p
             frames, one H100: 0.64 against 1.27 ms per frame, tools/device/yolo_engines.py), but
             in the pipeline, where detection and inference take turns on the GPU, it measured
             +8 % FPS on one host (1 person) and -8 % on another (5 persons): not the default until
             more runs say which. Compiling takes ~20 s per frame size (seconds once Inductor's
             cache under `cache_dir` has it), so a new size is served by the `cudagraph` graph at
             once and compiled on a thread of its own; its graph takes over at the start of a
             later frame. Needs Triton (in the CUDA builds of torch).
  cudagraph  the fused PyTorch network captured in a CUDA graph with the pre- and
             post-processing (no TensorRT or Triton needed).
  eager      the same steps without a graph (the CPU path: fp32, letterbox with OpenCV).

YOLO26-style end-to-end heads (NMS-free, (1, 300, 6) outputs) skip the NMS step.
"""
from __future__ import annotations

import copy
import hashlib
import importlib.util
import logging
import shutil
import threading
import time
from pathlib import Path

import numpy as np

from pipeline.detectors.base import DetectorError

log = logging.getLogger(__name__)

ENGINES = ("auto", "trt", "compile", "cudagraph", "eager")
PAD = 114.0
MAX_GRAPHS = 4     # frame sizes kept captured at once; a new size beyond that drops the oldest


def letterbox_geometry(height: int, width: int, imgsz: int, stride: int | None = None):
    """(scale, new_h, new_w, top, left, canvas_h, canvas_w) of ultralytics' letterbox of an HxW
    image: into an imgsz square, or (stride given) into the smallest stride-multiple rectangle."""
    r = min(imgsz / height, imgsz / width)
    nw, nh = int(round(width * r)), int(round(height * r))
    cw, ch = (imgsz, imgsz) if stride is None else (nw + (imgsz - nw) % stride, nh + (imgsz - nh) % stride)
    left = int(round((cw - nw) / 2 - 0.1))
    top = int(round((ch - nh) / 2 - 0.1))
    return r, nh, nw, top, left, ch, cw


class YoloRunner:
    def __init__(self, model, path: str | Path, device: str, half: bool, imgsz: int, engine: str = "auto",
                 candidates: int = 300, cache_dir: str | Path | None = None, allow_unsafe_checkpoint: bool = False):
        import torch
        if engine not in ENGINES:
            raise DetectorError(f"yolo engine must be one of {ENGINES}, got {engine!r}")
        self.torch = torch
        self.device = torch.device(device if device != "cuda" else "cuda:0")
        self.cuda = self.device.type == "cuda"
        if engine in ("trt", "compile", "cudagraph") and not self.cuda:
            raise DetectorError(f"yolo engine {engine!r} needs a CUDA device, not {device!r}; use engine='eager'")
        if engine == "compile" and not _has_triton():
            raise DetectorError("yolo engine 'compile' needs Triton (torch.compile's GPU kernels), which this torch "
                                "install lacks; use engine='cudagraph'")
        self.half = bool(half)
        self.imgsz = int(imgsz)
        self.candidates = int(candidates)
        self.dtype = torch.float16 if self.half else torch.float32
        net = model.model
        self.head = net.model[-1]
        self.end2end = bool(getattr(self.head, "end2end", False))
        self.nc = int(getattr(self.head, "nc", 80))
        strides = getattr(net, "stride", None)
        self.stride = int(max(float(v) for v in strides)) if strides is not None and len(strides) else 32
        self.path = Path(path)
        self.allow_unsafe_checkpoint = bool(allow_unsafe_checkpoint)  # the engine export reloads the file
        if engine == "auto":
            engine = "eager" if not self.cuda else ("trt" if _has_tensorrt() else "cudagraph")
        self.engine = engine
        self.rect_stride = None if engine == "trt" else self.stride
        if engine == "trt":
            self._forward = self._trt_forward(model, cache_dir)
        else:
            net = net.fuse(verbose=False) if hasattr(net, "fuse") else net
            net = net.to(self.device).eval()
            if self.half:
                net = net.half()
            for p in net.parameters():
                p.requires_grad_(False)
            self._net = net
            self._forward = self._torch_forward
        self._graphs: dict = {}      # (h, w) -> _Captured
        self._compiled = None        # engine "compile": CompiledGraphs
        self.warming_up = False      # the detector's warm-up frame: its size is not compiled
        self._compile_net = None     # the network copy Inductor traces
        if engine == "compile":
            from pipeline.backends.compile import configure_compile_cache
            cache = Path(cache_dir) if cache_dir is not None else self.path.parent / "cache"
            try:
                configure_compile_cache(cache)
            except OSError as exc:   # e.g. weights in a read-only folder: compile each start instead
                log.warning("yolo: no compile cache under %s (%s); Inductor uses its default", cache, exc)
            self._compiled = CompiledGraphs(self._compiled_capture)
        from pipeline.backends.pinned import PageLocked
        self.locked = PageLocked(self.device)   # frames rings the detection worker registered

    # -- the network --------------------------------------------------------------------------
    def _torch_forward(self, x):
        out = self._net(x)
        return out[0] if isinstance(out, (tuple, list)) else out

    def _trt_forward(self, model, cache_dir):
        from ultralytics.nn.autobackend import AutoBackend
        engine_path = export_engine(model, self.path, self.imgsz, self.device, cache_dir,
                                    self.allow_unsafe_checkpoint)
        backend = AutoBackend(str(engine_path), device=self.device, fp16=True, verbose=False)
        self.half, self.dtype = True, self.torch.float16

        def forward(x):
            out = backend(x)
            return out[0] if isinstance(out, (tuple, list)) else out
        return forward

    # -- per frame ----------------------------------------------------------------------------
    def __call__(self, rgb: np.ndarray, conf: float, iou: float, max_det: int = 300):
        """Person boxes (N,4) x1,y1,x2,y2 in frame pixels and scores (N,), best first."""
        torch = self.torch
        h, w = rgb.shape[:2]
        with torch.inference_mode():
            if self.cuda:
                # One read-back of the fixed-size candidates and one wait per frame: thresholds
                # and NMS over <= `candidates` boxes then run on the host. Each extra device
                # sync (boolean indexing, NMS on the device) costs a turn of the GPU, which
                # inference's process holds about half the time (measured: 2.3 ms alone vs
                # 6.2 ms in the pipeline with four syncs per frame).
                boxes, scores = self._on_gpu(rgb, h, w)
            else:
                boxes, scores = self._candidates(self._forward(self._letterbox_cpu(rgb)), h, w)
            return self._select(boxes, scores, conf, iou, max_det)

    def _on_gpu(self, rgb, h, w):
        if self._compiled is not None:
            # the last frame was read back, so no work in flight uses the graphs replaced here
            for size, compiled in self._compiled.take().items():
                if size in self._graphs:
                    self._graphs[size] = compiled
        cap = self._graphs.get((h, w))
        if cap is None:
            cap = self._capture(h, w)
            if self._compiled is not None and not self.warming_up:
                self._compiled.request((h, w))
        # the previous frame's results were read back (a sync), so its upload from here is done
        if self.locked.contains(rgb):
            # straight from the page-locked ring slot: no host copy; the slot stays claimed
            # until the results are read back, which waits for this DMA too
            cap.frame.copy_(self.torch.from_numpy(rgb), non_blocking=True)
        else:
            np.copyto(cap.host_np, rgb)                       # the one host copy (a memcpy)
            cap.frame.copy_(cap.host, non_blocking=True)      # DMA from page-locked memory
        if cap.graph is not None:
            cap.graph.replay()
        else:
            cap.boxes, cap.scores = self._device_steps(cap.frame, h, w, cap.canvas)
        k = cap.boxes.shape[0]
        cap.host_boxes[:k].copy_(cap.boxes, non_blocking=True)
        cap.host_scores[:k].copy_(cap.scores, non_blocking=True)
        cap.done.record()
        cap.done.synchronize()
        return cap.host_boxes[:k], cap.host_scores[:k]

    def _buffers(self, h, w) -> "_Captured":
        torch = self.torch
        cap = _Captured()
        cap.host = torch.empty((h, w, 3), dtype=torch.uint8, pin_memory=True)
        cap.host_np = cap.host.numpy()
        cap.frame = torch.zeros((h, w, 3), dtype=torch.uint8, device=self.device)
        *_, ch, cw = letterbox_geometry(h, w, self.imgsz, self.rect_stride)
        cap.canvas = torch.full((1, 3, ch, cw), PAD / 255.0, dtype=self.dtype, device=self.device)
        cap.host_boxes = torch.empty((self.candidates, 4), dtype=torch.float32, pin_memory=True)
        cap.host_scores = torch.empty(self.candidates, dtype=torch.float32, pin_memory=True)
        cap.done = torch.cuda.Event()
        cap.graph = None
        cap.compiled = False
        return cap

    def _capture(self, h, w):
        if len(self._graphs) >= MAX_GRAPHS:
            dropped = next(iter(self._graphs))
            self._graphs.pop(dropped)
            if self._compiled is not None:
                self._compiled.forget(dropped)
        cap = self._buffers(h, w)
        if self.engine in ("cudagraph", "compile"):
            from pipeline.backends.graphs import capture_graph

            # the warm-up also builds the head's anchors, which must exist before the capture
            # beside a compile thread, a "global" capture would fail on that thread's CUDA calls
            mode = "thread_local" if self._compiled is not None else "global"
            cap.graph, (cap.boxes, cap.scores) = capture_graph(
                lambda: self._device_steps(cap.frame, h, w, cap.canvas), self.device, capture_error_mode=mode)
            log.info("yolo: captured a CUDA graph for %dx%d frames at imgsz %d (%s)", w, h, self.imgsz,
                     "fp16" if self.half else "fp32")
        self._graphs[(h, w)] = cap
        return cap

    def _compiled_capture(self, size) -> "_Captured":
        """The device steps of `size` frames compiled by Inductor and captured in a CUDA graph,
        with buffers of their own; runs on CompiledGraphs' thread."""
        torch = self.torch
        h, w = size
        torch.cuda.set_device(self.device)      # a new thread starts on device 0
        if self._compile_net is None:
            # Inductor traces a copy: ultralytics' head keeps the anchors of the last input shape
            # as attributes, which a capture of another frame size on the serving thread rewrites
            self._compile_net = copy.deepcopy(self._net)
        net = self._compile_net

        def forward(x):
            out = net(x)
            return out[0] if isinstance(out, (tuple, list)) else out

        def steps(frame, canvas):
            return self._device_steps(frame, h, w, canvas, forward)
        compiled = torch.compile(steps, dynamic=False)
        cap = self._buffers(h, w)
        from pipeline.backends.graphs import capture_graph
        t0 = time.perf_counter()
        with torch.inference_mode():
            # the first warm-up call compiles; "thread_local": the serving thread goes on meanwhile
            cap.graph, (cap.boxes, cap.scores) = capture_graph(
                lambda: compiled(cap.frame, cap.canvas), self.device, warmup_calls=3,
                capture_error_mode="thread_local")
        torch.cuda.current_stream(self.device).synchronize()
        cap.compiled = True
        log.info("yolo: compiled the device steps for %dx%d frames at imgsz %d in %.1f s; they take over "
                 "from the cudagraph engine's graph", w, h, self.imgsz, time.perf_counter() - t0)
        return cap

    def _device_steps(self, frame, h, w, canvas, forward=None):
        """uint8 HxWx3 on the device -> top candidates (K,4) frame px, (K,) scores."""
        import torch.nn.functional as F
        r, nh, nw, top, left, _, _ = letterbox_geometry(h, w, self.imgsz, self.rect_stride)
        x = frame.permute(2, 0, 1).unsqueeze(0).to(self.dtype)
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)
        canvas[:, :, top:top + nh, left:left + nw] = x.clamp_(0, 255) * (1.0 / 255.0)
        y = (forward or self._forward)(canvas)
        return self._decode(y, r, top, left)

    def _letterbox_cpu(self, rgb):
        import cv2
        h, w = rgb.shape[:2]
        r, nh, nw, top, left, ch, cw = letterbox_geometry(h, w, self.imgsz, self.rect_stride)
        canvas = np.full((ch, cw, 3), PAD, np.float32)
        canvas[top:top + nh, left:left + nw] = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_LINEAR)
        canvas *= 1.0 / 255.0
        return self.torch.from_numpy(canvas.transpose(2, 0, 1)[None].copy()).to(self.dtype)

    def _candidates(self, y, h, w):
        r, _, _, top, left, _, _ = letterbox_geometry(h, w, self.imgsz, self.rect_stride)
        return self._decode(y, r, top, left)

    def _decode(self, y, r, top, left):
        torch = self.torch
        if self.end2end:                            # (1, max_det, 6): x1, y1, x2, y2, score, class
            det = y[0].float()
            scores = torch.where(det[:, 5] == 0, det[:, 4], torch.zeros_like(det[:, 4]))
            boxes = det[:, :4]
        else:                                       # (1, 4 + nc, anchors): cx, cy, w, h, class scores
            y = y[0].float()
            best, label = y[4:4 + self.nc].max(0)
            scores = torch.where(label == 0, best, torch.zeros_like(best))
            xywh = y[:4].T
            boxes = torch.cat([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], dim=1)
        k = min(self.candidates, scores.shape[0])
        scores, idx = scores.topk(k)
        boxes = boxes[idx]
        # Python scalars, not a new device tensor: a host->device copy may not run inside graph capture
        boxes[:, 0::2] -= left
        boxes[:, 1::2] -= top
        return (boxes / r).float(), scores.float()

    def _select(self, boxes, scores, conf, iou, max_det):
        keep = scores > conf
        boxes, scores = boxes[keep], scores[keep]
        if not self.end2end and len(scores) > 1:
            keep = nms(boxes, scores, iou)
            boxes, scores = boxes[keep], scores[keep]
        boxes, scores = boxes[:max_det], scores[:max_det]
        # copies: on a GPU the inputs are views of page-locked buffers the next frame reuses
        return boxes.cpu().numpy().astype(np.float32), scores.cpu().numpy().astype(np.float32)

    def info(self) -> dict:
        out = {"engine": self.engine, "device": str(self.device), "half": self.half,
               "precision": "fp16" if self.half else "fp32", "imgsz": self.imgsz,
               "end2end": self.end2end, "graphs": len(self._graphs)}
        out.update(self.compile_state())
        return out

    def compile_state(self) -> dict:
        """Engine "compile": the sizes compiled and compiling, and the last error ({} otherwise)."""
        return self._compiled.state() if self._compiled is not None else {}

    def warming(self) -> str:
        """What is still being prepared while frames are served ('' when nothing)."""
        pending = self.compile_state().get("compiling")
        return f"compiling {', '.join(pending)}" if pending else ""

    def close(self) -> None:
        if self._compiled is not None:
            self._compiled.close()
        self._graphs.clear()


class _Captured:
    """Buffers (and the graph) for one frame size."""


class CompiledGraphs:
    """Graphs built by `build(size)` on a thread of their own, one frame size at a time, while
    the caller serves that size another way; `take()` hands over those finished since the last
    call. A build that fails is logged and reported in `state()`; the caller keeps its graph."""

    def __init__(self, build, close_wait_s: float = 2.0):
        self._build = build
        self._lock = threading.Lock()
        self._queue: list = []
        self._asked: set = set()
        self._ready: dict = {}
        self._done: list = []
        self._error: str | None = None
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()
        self._close_wait_s = close_wait_s

    def request(self, size) -> None:
        with self._lock:
            if size in self._asked or self._closing.is_set():
                return
            self._asked.add(size)
            self._queue.append(size)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="yolo-compile", daemon=True)
                self._thread.start()

    def take(self) -> dict:
        with self._lock:
            ready, self._ready = self._ready, {}
        return ready

    def forget(self, size) -> None:
        """The caller dropped this size: a later request builds it again."""
        with self._lock:
            self._asked.discard(size)
            self._ready.pop(size, None)
            if size in self._done:
                self._done.remove(size)

    def _run(self) -> None:
        while not self._closing.is_set():
            with self._lock:
                if not self._queue:
                    self._thread = None
                    return
                size = self._queue[0]
            try:
                built = self._build(size)
            except Exception as exc:  # noqa: BLE001 - the served graph keeps working
                log.warning("yolo: compiling for %s frames failed (%s: %s); they stay on the cudagraph engine",
                            _size_text(size), type(exc).__name__, exc)
                with self._lock:
                    self._error = f"{_size_text(size)}: {type(exc).__name__}: {exc}"
                    self._queue.pop(0)
                continue
            with self._lock:
                self._queue.pop(0)
                if not self._closing.is_set():
                    self._ready[size] = built
                    self._done.append(size)
        with self._lock:
            self._thread = None

    def state(self) -> dict:
        with self._lock:
            out = {"compiled": [_size_text(s) for s in self._done], "compiling": [_size_text(s) for s in self._queue]}
            if self._error:
                out["compile_error"] = self._error
            return out

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the builds asked so far; True when none is left."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                thread = self._thread
            if thread is None:
                return True
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            thread.join(left)

    def close(self) -> None:
        # no new build starts; one in progress is left to the daemon thread (a compile cannot be
        # interrupted) and waited for a moment only, so a stopping worker is not held up
        self._closing.set()
        with self._lock:
            self._queue = self._queue[:1]
            thread = self._thread
        if thread is not None:
            thread.join(self._close_wait_s)
        with self._lock:
            self._ready.clear()


def _size_text(size) -> str:
    h, w = size
    return f"{w}x{h}"


def nms(boxes, scores, iou: float):
    """Indices kept by greedy NMS, best first, on the boxes' device (torchvision's kernel)."""
    import torchvision
    return torchvision.ops.nms(boxes.float(), scores.float(), float(iou))


def _has_tensorrt() -> bool:
    return importlib.util.find_spec("tensorrt") is not None


def _has_triton() -> bool:
    return importlib.util.find_spec("triton") is not None


def export_engine(model, path: Path, imgsz: int, device, cache_dir, allow_unsafe: bool = False) -> Path:
    """The TensorRT engine of `path` at `imgsz` (fp16, batch 1), exported once by ultralytics and
    cached under cache_dir keyed by the weights' hash, the size and the GPU."""
    import torch
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    gpu = torch.cuda.get_device_name(device).replace(" ", "_")
    folder = Path(cache_dir or Path(path).parent / "engines")
    stem = f"yolo-{digest}-{imgsz}-fp16-{gpu}"
    engine = folder / f"{stem}.engine"
    if engine.is_file():
        log.info("yolo: TensorRT engine from cache %s", engine)
        return engine
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / f"{stem}.pt"          # ultralytics writes the engine beside the weights
    shutil.copyfile(path, weights)
    log.info("yolo: exporting %s to TensorRT (fp16, imgsz %d) with ultralytics; this takes minutes once",
             path, imgsz)
    try:
        from pipeline.detectors.yolo_model import load_yolo
        out = load_yolo(weights, allow_unsafe).export(format="engine", half=True, imgsz=imgsz, batch=1, dynamic=False,
                                        device=device.index or 0, verbose=False)
    except Exception as exc:
        raise DetectorError(f"TensorRT export of {path} failed ({type(exc).__name__}: {exc}); "
                            f"use detection engine=cudagraph") from exc
    out = Path(out)
    if out != engine:
        shutil.move(str(out), engine)
    return engine
