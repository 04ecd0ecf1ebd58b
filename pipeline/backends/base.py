"""The one small interface every inference backend implements (architecture.md §6).

A backend module (`pipeline/backends/<name>.py`) keeps its heavy imports (torch_tensorrt,
onnxruntime, ...) inside itself, and fails in `load()` with a message that says what to
install when it cannot run on this machine.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any


class BackendUnavailable(RuntimeError):
    """Raised by `load()` when the backend cannot run here; the message says what to install."""


@dataclass
class BackendConfig:
    model: str = "cliff"              # "cliff" | "pare"
    checkpoint: str | None = None     # None -> random init, flagged untrained
    device: str = "cpu"               # "cpu", "cuda", "cuda:0"
    precision: str = "fp32"           # "fp32" | "fp16"
    max_batch: int = 8                # largest batch (= max_persons) the backend must accept
    channels_last: bool = False
    cache_dir: str | None = None      # compile caches / engine files
    options: dict[str, Any] = field(default_factory=dict)


MAX_IN_FLIGHT = 2


class Pending:
    """An inference in flight: `result()` blocks until its outputs are on the host."""

    def result(self) -> dict:
        raise NotImplementedError


class Done(Pending):
    """A result that was computed synchronously."""

    def __init__(self, outputs: dict):
        self._outputs = outputs

    def result(self) -> dict:
        return self._outputs


class Backend(ABC):
    name: str = "base"
    # True when submit() returns before the device has finished (GPU backends): the caller may
    # prepare the next batch meanwhile. False: submit() is infer() and the result is ready.
    asynchronous: bool = False

    def __init__(self, config: BackendConfig):
        self.config = config

    @abstractmethod
    def load(self) -> None:
        """Build/load the network. Raise BackendUnavailable with an install hint if impossible."""

    @abstractmethod
    def warmup(self) -> None:
        """Run every batch size the backend will see so the first real frame is not slow."""

    @abstractmethod
    def infer(self, img, bbox_info) -> dict:
        """img (B,3,224,224) float32 ImageNet-normalised (torch tensor or numpy), bbox_info (B,3).

        Returns numpy float32 arrays: pred_pose (B,24,3,3), pred_shape (B,10),
        pred_cam (B,3), var_pose (B,24). Any B >= 1 is accepted (split/padded internally).
        """

    def submit(self, img, bbox_info) -> Pending:
        """Start inference on one batch; same inputs and outputs as `infer`, through `result()`.

        At most `MAX_IN_FLIGHT` submitted batches may be waiting for `result()` at once."""
        return Done(self.infer(img, bbox_info))

    @abstractmethod
    def info(self) -> dict:
        """name, device, precision, untrained flag, batch sizes, load/warm-up seconds, ..."""

    def close(self) -> None:
        """Release GPU memory / sessions. Optional."""
