"""Inference backends (architecture.md §6). `get_backend(name)` imports only the module asked for.

One module per backend behind one interface (`load`, `warmup`, `submit`/`infer`, `info`), plus
what touches the inference device: pinned uploads (`pinned`) and GPU crops (`gpu_preprocess`).
May import: `pipeline.models` and torch (inside the backend that needs it).
"""
from __future__ import annotations

import importlib

from pipeline.backends.base import Backend, BackendConfig, BackendUnavailable

BACKEND_NAMES = ("torch", "compile", "cudagraph", "trt", "onnx")
# What `backend: auto` runs: on a CPU the fastest CPU backend (onnx: tools/bench_model.py
# measures it against eager torch); on a GPU cudagraph, 10.9x eager per crop on an H100
# (tools/device/results/h100_cliff_run4.md) for ~20 s of capture at start (docs/architecture.md §6).
AUTO_BACKEND = {"cpu": "onnx", "cuda": "cudagraph"}

__all__ = ["Backend", "BackendConfig", "BackendUnavailable", "BACKEND_NAMES", "get_backend",
           "resolve_backend", "cuda_available"]


def cuda_available() -> bool:
    """torch.cuda.is_available(), without importing torch on a Linux host that has no NVIDIA
    driver at all: importing torch costs a restarting CPU worker ~3 s on a 2-core box."""
    import sys
    if sys.platform.startswith("linux"):
        import ctypes
        try:
            ctypes.CDLL("libcuda.so.1")
        except OSError:
            return False
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def resolve_backend(name: str, device: str) -> str:
    """The backend `name` names on `device` ("cpu", "cuda", "cuda:N"): `auto` -> AUTO_BACKEND."""
    key = str(name).strip().lower()
    if key != "auto":
        return key
    return AUTO_BACKEND["cuda" if str(device).startswith("cuda") else "cpu"]


def get_backend(name: str) -> type[Backend]:
    """The Backend subclass implemented in `pipeline/backends/<name>.py`."""
    key = str(name).strip().lower()
    if key not in BACKEND_NAMES:
        raise ValueError(f"unknown inference backend {name!r}; allowed: {', '.join(BACKEND_NAMES)}")
    try:
        module = importlib.import_module(f"pipeline.backends.{key}")
    except ModuleNotFoundError as exc:
        if exc.name == f"pipeline.backends.{key}":
            raise BackendUnavailable(f"backend {key!r} is not part of this installation "
                                     f"(pipeline/backends/{key}.py missing)") from exc
        raise BackendUnavailable(f"backend {key!r} needs the package {exc.name!r}; install it "
                                 f"(e.g. pip install {exc.name})") from exc
    found = [obj for obj in vars(module).values()
             if isinstance(obj, type) and issubclass(obj, Backend) and obj is not Backend
             and obj.__module__ == module.__name__]
    named = [cls for cls in found if getattr(cls, "name", None) == key]
    if named:
        return named[0]
    if len(found) == 1:
        return found[0]
    raise BackendUnavailable(f"pipeline/backends/{key}.py defines {len(found)} Backend classes "
                             f"({[c.__name__ for c in found]}); expected one with name={key!r}")
