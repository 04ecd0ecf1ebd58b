"""Shared plumbing for the accelerated backends (compile, trt, onnx).

- `build_network`: the POCO network from `pipeline.models.load_poco` (or a factory passed in
  `options["network_factory"]`, used by tests and tools with stand-in networks).
- `prepare_network`: BatchNorm folding and the fp16 policy.
- `HostOutputs`: one device->host copy of all outputs per call, into pinned memory.

Only imported by backends that already need torch.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from pipeline.backends.base import BackendConfig, BackendUnavailable
from pipeline.backends.engine_cache import checkpoint_identity
# The numpy side of the input/output layout lives in `layout` (torch-free); re-exported here.
from pipeline.backends.layout import (  # noqa: F401
    CROP,
    FLAT_WIDTH,
    OUTPUT_NAMES,
    OUTPUT_SHAPES,
    PRECISIONS,
    VARIANTS,
    check_inputs,
    split_flat,
    validate_config,
)

log = logging.getLogger(__name__)



def resolve_device(config: BackendConfig, backend: str, cpu_ok: bool) -> torch.device:
    device = torch.device(config.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise BackendUnavailable(
                f"backend {backend!r} was asked for device {config.device!r} but this torch "
                f"({torch.__version__}) sees no CUDA GPU; install a CUDA build of torch and an "
                f"NVIDIA driver, or use device=cpu" + ("" if cpu_ok else
                                                      " with another backend (torch, onnx)"))
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    elif device.type != "cpu":
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {config.device!r}")
    elif not cpu_ok:
        raise BackendUnavailable(f"backend {backend!r} needs a CUDA GPU (device=cuda), got "
                                 f"device={config.device!r}. On CPU use backend=onnx (fastest there) "
                                 f"or backend=torch")
    return device


def network_identity(config: BackendConfig) -> str:
    return checkpoint_identity(config.checkpoint, int(config.options.get("seed", 0)))


def build_network(config: BackendConfig, device: torch.device | str = "cpu") -> nn.Module:
    """The fp32 POCO network in eval mode on `device`. The checkpoint is read without unpickling
    unless options["allow_unsafe_checkpoint"] (--allow-unsafe-checkpoint): the one switch reaches
    every backend built on this (compile, cudagraph, trt, onnx)."""
    if config.checkpoint is None:
        # Untrained weights must still be reproducible: engine keys say "random-seed-N".
        torch.manual_seed(int(config.options.get("seed", 0)))
    factory = config.options.get("network_factory")
    if factory is not None:
        return factory(config.model, config.checkpoint, str(device)).eval().to(device)
    try:
        from pipeline.models import load_poco
    except ImportError as exc:
        raise BackendUnavailable(
            f"the POCO model code (pipeline.models.load_poco) cannot be imported: {exc}") from exc
    model = load_poco(config.model, config.checkpoint, str(device), mean_params=config.data_path("smpl_mean_params.npz"),
                      allow_unsafe_checkpoint=bool(config.options.get("allow_unsafe_checkpoint", False)))
    return model.eval().to(device)


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Conv+BN pairs folded into the conv (in fp32, before any cast to fp16).

    Folding first keeps BN's variance/epsilon arithmetic out of fp16 and saves a kernel per
    conv. Uses torch.fx; a module that fx cannot trace is returned unchanged (logged)."""
    from torch.fx.experimental.optimization import fuse
    try:
        return fuse(module.eval())
    except Exception as exc:  # fx raises many types for untraceable code
        log.warning("BatchNorm not folded (%s cannot be traced by torch.fx: %s)",
                    type(module).__name__, exc)
        return module


class _HalfIsland(nn.Module):
    """Runs the wrapped part in fp16 and hands fp32 back to the rest of the network."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner.half()

    def forward(self, x, *args, **kwargs):
        out = self.inner(x.half(), *args, **kwargs)
        return torch.utils._pytree.tree_map(
            lambda t: t.float() if isinstance(t, torch.Tensor) and t.is_floating_point() else t, out)


@dataclass
class PreparedNetwork:
    module: nn.Module
    precision_detail: str     # what really runs in which precision
    bn_folded: int            # BatchNorm modules folded into their convs
    bn_left: int              # BatchNorm modules still in the network (e.g. PARE's head, never folded)
    fused: dict = field(default_factory=dict)   # conv_fusion counts, when asked for


def count_batchnorm(module: nn.Module) -> int:
    # An fx GraphModule keeps only the submodules its graph still calls, so after folding this
    # counts the BatchNorms that really run.
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def prepare_network(model: nn.Module, precision: str, channels_last: bool,
                    fold_bn: bool = True, cudnn_fusion: bool = False) -> PreparedNetwork:
    """fp16 policy: the backbone (≈all the FLOPs) runs in fp16; the iterative regressor,
    the 6D->rotation Gram-Schmidt and the uncertainty head stay fp32 because they are tiny at
    these batch sizes and are where fp16 error would land directly on the rotations."""
    target = model.backbone if hasattr(model, "backbone") else None
    bn_before = count_batchnorm(model)
    traced = False
    if fold_bn:
        if target is not None:
            new = fold_batchnorm(target)
            traced = new is not target
            model.backbone = target = new
        else:
            new = fold_batchnorm(model)
            traced = new is not model
            model = new
    bn_left = count_batchnorm(model)
    fused = {}
    if cudnn_fusion:
        from pipeline.backends.conv_fusion import fuse_conv_relu
        graph = target if target is not None else model
        if not (traced and isinstance(graph, torch.fx.GraphModule)):
            raise ValueError("cudnn_fusion needs the BatchNorm-folded, fx-traced network (fold_bn=true)")
        graph, fused = fuse_conv_relu(graph)
        log.info("cuDNN fusion: %d conv+relu, %d conv+add+relu", fused["conv_relu"], fused["conv_add_relu"])
    if precision == "fp16":
        if target is not None:
            model.backbone = _HalfIsland(target)
            detail = "fp16 backbone, fp32 head/uncertainty"
        else:
            model = model.half()
            detail = "fp16 whole network"
    else:
        detail = "fp32"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return PreparedNetwork(model, detail, bn_before - bn_left, bn_left, fused)


class FlatNetwork(nn.Module):
    """The network with its four outputs packed into one (B, 253) fp32 tensor, so a compiled
    graph / engine / ONNX graph has a single output and the host needs a single copy."""

    def __init__(self, net: nn.Module, channels_last: bool = False):
        super().__init__()
        self.net = net
        self.channels_last = channels_last

    def forward(self, img, bbox_info):
        if self.channels_last:
            img = img.contiguous(memory_format=torch.channels_last)
        return flatten_outputs(self.net(img, bbox_info))


def as_input(x, device: torch.device, dtype=torch.float32, name: str = "input") -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be floating point, got {x.dtype}")
    return x.to(device=device, dtype=dtype, non_blocking=True)


def as_device_input(x, uploader, name: str = "input") -> torch.Tensor:
    """Like `as_input` on `uploader.device`; numpy arrays go through `uploader` (a
    pipeline.backends.pinned.PinnedUploader) on CUDA, so the copy does not wait for work already queued
    on the stream."""
    if uploader.cuda and isinstance(x, np.ndarray):
        if not np.issubdtype(x.dtype, np.floating):
            raise TypeError(f"{name} must be floating point, got {x.dtype}")
        return uploader.upload(x, np.float32)
    return as_input(x, uploader.device, name=name)


def flatten_outputs(out: dict, rows: int | None = None) -> torch.Tensor:
    """(B, 253) fp32: all four outputs side by side, so one copy moves them to the host."""
    missing = [k for k in OUTPUT_NAMES if k not in out]
    if missing:
        raise RuntimeError(f"network output lacks {missing}; got keys {sorted(out)}")
    parts = [out[k].reshape(out[k].shape[0], -1).float() for k in OUTPUT_NAMES]
    flat = torch.cat(parts, dim=1)
    return flat if rows is None else flat[:rows]


def run_chunked(fn, img: torch.Tensor, bbox_info: torch.Tensor, sizes, scratch: torch.Tensor | None):
    """Run `fn(img, bbox) -> (b, 253)` over any batch using only `sizes` (split + pad).

    Each chunk's rows are copied out before the next call because a CUDA-graph replay
    reuses its output memory. Returns (flat (n, 253) on the device, scratch buffer)."""
    from pipeline.backends import batching
    n = img.shape[0]
    chunks = batching.plan(n, sizes)
    if len(chunks) == 1:
        c = chunks[0]
        flat = fn(batching.pad_rows(img, c.run_size), batching.pad_rows(bbox_info, c.run_size))
        return flat[:n], scratch
    if scratch is None or scratch.shape[0] < n:
        scratch = torch.empty((n, FLAT_WIDTH), dtype=torch.float32, device=img.device)
    for c in chunks:
        flat = fn(batching.pad_rows(img[c.start:c.stop], c.run_size),
                  batching.pad_rows(bbox_info[c.start:c.stop], c.run_size))
        scratch[c.start:c.stop].copy_(flat[:c.count])
    return scratch[:n], scratch


def submit_chunked(fn, img, bbox_info, sizes, scratch, uploader, host: "HostOutputs"):
    """The asynchronous `submit` of a graph/engine backend: check and upload the inputs, run
    `fn` over the batch (`run_chunked`), queue the copy of the outputs to the host.
    Returns (pending result, scratch buffer)."""
    check_inputs(img, bbox_info)
    img = as_device_input(img, uploader, name="img")
    bbox_info = as_device_input(bbox_info, uploader, name="bbox_info")
    flat, scratch = run_chunked(fn, img, bbox_info, sizes, scratch)
    return host.fetch_async(flat), scratch


class HostOutputs:
    """Pinned host buffers that receive the (B, 253) output block in one async copy each.

    `fetch_async` returns at once with a handle (the copy is ordered after the network on the
    device's stream, an event marks its end), so the caller can prepare the next batch while
    the GPU works. Buffers rotate; a handle whose buffer was reused by later fetches raises
    instead of returning another batch's outputs."""

    def __init__(self, device: torch.device, max_rows: int, depth: int | None = None):
        from pipeline.backends.base import MAX_IN_FLIGHT
        self.device = device
        self.cuda = device.type == "cuda"
        self.depth = max(1, depth if depth is not None else MAX_IN_FLIGHT + 1)
        self.bufs = [self._alloc(max_rows) for _ in range(self.depth)]
        self.owner = [0] * self.depth      # ticket of the fetch whose rows a buffer holds
        self.ticket = 0

    def _alloc(self, rows: int) -> torch.Tensor:
        return torch.empty((rows, FLAT_WIDTH), dtype=torch.float32, pin_memory=self.cuda)

    def fetch(self, flat: torch.Tensor) -> dict:
        return self.fetch_async(flat).result()

    def fetch_async(self, flat: torch.Tensor) -> "HostPending":
        rows = flat.shape[0]
        self.ticket += 1
        i = self.ticket % self.depth
        if rows > self.bufs[i].shape[0]:
            self.bufs[i] = self._alloc(rows)
        self.owner[i] = self.ticket
        dst = self.bufs[i][:rows]
        dst.copy_(flat, non_blocking=True)
        event = None
        if self.cuda:
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(self.device))
        return HostPending(self, i, self.ticket, dst, event)


class HostPending:
    def __init__(self, host: HostOutputs, index: int, ticket: int, dst: torch.Tensor, event):
        self.host, self.index, self.ticket, self.dst, self.event = host, index, ticket, dst, event

    def result(self) -> dict:
        if self.event is not None:
            self.event.synchronize()
        if self.host.owner[self.index] != self.ticket:
            raise RuntimeError(f"inference result read after {self.host.depth} later batches reused "
                               f"its host buffer: read results in order, at most "
                               f"{self.host.depth - 1} in flight")
        # Copies: the buffer is reused a few batches later, the caller may keep the arrays.
        return {k: v.copy() for k, v in split_flat(self.dst.numpy()).items()}


def oom_message(backend: str, config: BackendConfig, exc: BaseException) -> str:
    lower = ("; or use precision=fp16" if config.precision == "fp32" else "")
    return (f"{backend}: out of GPU memory while warming up batch sizes up to "
            f"{config.max_batch} ({config.precision}): {exc}. Lower max_persons "
            f"(inference.max_persons, now {config.max_batch}){lower}, or free the GPU")
