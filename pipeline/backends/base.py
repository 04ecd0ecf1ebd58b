"""The one small interface every inference backend implements (architecture.md §6).

A backend module (`pipeline/backends/<name>.py`) keeps its heavy imports (torch_tensorrt,
onnxruntime, ...) inside itself, and fails in `load()` with a message that says what to
install when it cannot run on this machine.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
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
    cache_dir: str | None = None      # the data folder: engines/, cache/ (compile), smpl_mean_params.npz
    options: dict[str, Any] = field(default_factory=dict)
    # Batch sizes `warmup()` makes ready before the worker says `ready`: the ones the next
    # frames need. Backends prepare any other size lazily or in the background
    # (docs/architecture.md §6), so a restart is not held up by sizes nobody uses yet.
    warm_batches: tuple = (1,)

    def data_path(self, *parts: str) -> Path:
        """A path in the data folder: under `cache_dir`, else under the pipeline's default data_dir
        (the worker passes its data_dir, `pipeline export` the same default: engines land where
        the worker looks, docs/architecture.md §6)."""
        if self.cache_dir:
            return Path(self.cache_dir).joinpath(*parts)
        from pipeline.config import default_data_dir

        return default_data_dir().joinpath(*parts)


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
    # Precisions `load()` accepts.
    precisions: tuple[str, ...] = ("fp32", "fp16")

    def __init__(self, config: BackendConfig):
        self.config = config

    @classmethod
    def auto_device(cls, device: str) -> str:
        """What `device: auto` means for this backend when the machine offers `device`
        ("cuda" when a GPU is usable, else "cpu"). Default: the machine's choice."""
        return device

    @classmethod
    def auto_precision(cls, device: str) -> str:
        """What `precision: auto` means for this backend on `device`: the fastest precision it
        runs there. Default: fp16 on CUDA, fp32 elsewhere."""
        return "fp16" if str(device).startswith("cuda") and "fp16" in cls.precisions else "fp32"

    @abstractmethod
    def load(self) -> None:
        """Build/load the network. Raise BackendUnavailable with an install hint if impossible."""

    @abstractmethod
    def warmup(self) -> None:
        """Make `config.warm_batches` ready so the first real frames are not slow; other batch
        sizes may be prepared lazily (on first use) or in the background."""

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
