"""Keys and on-disk cache for exported engines (TensorRT engines, ONNX graphs).

An engine is only valid for the exact network weights, variant, precision, batch range and
(for TensorRT) the GPU and TensorRT version it was built for. Every engine file therefore
has a JSON sidecar holding the full key plus the engine file's own sha256; `lookup()`
compares both, so a stale engine (other weights, other GPU, other TensorRT) or a foreign /
truncated file is detected instead of being loaded (architecture.md §6).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".json"
_HASH_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def checkpoint_identity(checkpoint: str | os.PathLike | None, seed: int = 0) -> str:
    """sha256 of the checkpoint file, or ``random-seed-N`` for randomly initialised weights."""
    if checkpoint is None:
        return f"random-seed-{int(seed)}"
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {str(path)!r} does not exist; put the POCO weights there or leave "
            f"the checkpoint unset to run random (untrained) weights")
    return "sha256:" + sha256_file(path)


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on. Two equal keys mean the engine may be reused."""
    kind: str                 # "trt" | "onnx"
    checkpoint: str           # checkpoint_identity()
    variant: str              # "cliff" | "pare"
    precision: str            # "fp32" | "fp16" | "int8" (onnx, CPU)
    min_batch: int
    max_batch: int
    device_name: str = ""     # GPU name (TensorRT engines are GPU-specific); "" when irrelevant
    runtime_version: str = "" # TensorRT / opset+torch version the engine was made with
    extra: tuple = field(default_factory=tuple)  # (name, value) pairs, e.g. ("opset", 17)

    def __post_init__(self):
        if self.kind not in ("trt", "onnx"):
            raise ValueError(f"engine kind must be 'trt' or 'onnx', got {self.kind!r}")
        if self.precision not in ("fp32", "fp16", "int8"):
            raise ValueError(f"precision must be 'fp32', 'fp16' or 'int8', got {self.precision!r}")
        if not 1 <= self.min_batch <= self.max_batch:
            raise ValueError(
                f"batch range must satisfy 1 <= min <= max, got {self.min_batch}..{self.max_batch}")

    def as_dict(self) -> dict:
        d = asdict(self)
        d["extra"] = [list(p) for p in self.extra]
        return d

    @classmethod
    def from_dict(cls, data: dict) -> "EngineKey":
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown engine key fields {sorted(unknown)}")
        data = dict(data)
        data["extra"] = tuple(tuple(p) for p in data.get("extra", ()))
        return cls(**data)

    def digest(self) -> str:
        blob = json.dumps(self.as_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()

    def file_stem(self) -> str:
        # Human-readable prefix for `ls data/engines`; the digest makes it unique.
        return (f"poco-{self.variant}-{self.kind}-{self.precision}-"
                f"b{self.min_batch}-{self.max_batch}-{self.digest()[:16]}")

    def diff(self, other: "EngineKey") -> list[str]:
        """Names of the fields that differ, with both values, for error messages."""
        a, b = self.as_dict(), other.as_dict()
        return [f"{k}: engine has {b[k]!r}, need {a[k]!r}" for k in a if a[k] != b[k]]


@dataclass
class Lookup:
    status: str               # "hit" | "miss" | "stale"
    engine_path: Path
    reason: str = ""


class EngineCache:
    """Engines under one directory, each ``<stem>.<ext>`` beside ``<stem>.<ext>.json``."""

    def __init__(self, root: str | os.PathLike, ext: str = "engine"):
        self.root = Path(root)
        self.ext = ext

    def path_for(self, key: EngineKey) -> Path:
        return self.root / f"{key.file_stem()}.{self.ext}"

    @staticmethod
    def sidecar_for(engine_path: Path) -> Path:
        return engine_path.with_name(engine_path.name + SIDECAR_SUFFIX)

    def lookup(self, key: EngineKey, engine_path: str | os.PathLike | None = None,
               verify_hash: bool = True) -> Lookup:
        """Is there a valid engine for `key`? `engine_path` overrides the derived file name
        (a user-supplied engine), which is where foreign engines usually come from."""
        path = Path(engine_path) if engine_path else self.path_for(key)
        sidecar = self.sidecar_for(path)
        if not path.exists():
            return Lookup("miss", path, "no engine file")
        if not sidecar.exists():
            return Lookup("stale", path, f"engine {path} has no key sidecar {sidecar.name}; "
                                         f"its origin is unknown")
        try:
            meta = json.loads(sidecar.read_text())
            stored = EngineKey.from_dict(meta["key"])
            stored_sha = meta["engine_sha256"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return Lookup("stale", path, f"unreadable key sidecar {sidecar}: {exc}")
        if stored != key:
            return Lookup("stale", path, "engine was built for something else: "
                                         + "; ".join(key.diff(stored)))
        if verify_hash and sha256_file(path) != stored_sha:
            return Lookup("stale", path, f"engine file {path.name} does not match the hash in "
                                         f"its sidecar (truncated or replaced)")
        return Lookup("hit", path)

    def find(self, key: EngineKey, options: dict) -> Lookup:
        """`lookup` with a backend's options: `engine_path` (a user-supplied engine) and the
        `on_stale` policy applied to a stale engine (rebuild: returned as stale; refuse: raises)."""
        found = self.lookup(key, options.get("engine_path"))
        if found.status == "stale":
            resolve_stale(found, options.get("on_stale", "rebuild"))
        return found

    def store(self, key: EngineKey, write_engine: Callable[[Path], None],
              engine_path: str | os.PathLike | None = None,
              check: Callable[[Path], dict] | None = None) -> Path:
        """Build via `write_engine(tmp_path)` and move the engine + sidecar into place.

        Written to a temporary name first so a crash mid-build never leaves a half engine
        that a later run would take for a valid one. `check(tmp_path)` may measure the built
        engine (e.g. its error against fp32); what it returns is kept in the sidecar under
        "checks" and read back with `checks()`, so later runs need not measure again."""
        path = Path(engine_path) if engine_path else self.path_for(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            t0 = time.perf_counter()
            write_engine(tmp)
            build_s = time.perf_counter() - t0
            if not tmp.exists() or tmp.stat().st_size == 0:
                raise RuntimeError(f"engine build wrote nothing to {tmp}")
            meta = {"key": key.as_dict(), "engine_sha256": sha256_file(tmp),
                    "build_seconds": round(build_s, 3), "created_unix": int(time.time())}
            if check is not None:
                meta["checks"] = check(tmp)
            os.replace(tmp, path)
            sidecar = self.sidecar_for(path)
            sidecar_tmp = sidecar.with_name(sidecar.name + ".tmp")
            sidecar_tmp.write_text(json.dumps(meta, indent=2, sort_keys=True))
            os.replace(sidecar_tmp, sidecar)
        finally:
            tmp.unlink(missing_ok=True)
        log.info("engine stored: %s (%.1f s to build)", path, build_s)
        return path

    def checks(self, engine_path: Path) -> dict:
        """What `store(check=...)` measured for this engine ({} when nothing was)."""
        try:
            found = json.loads(self.sidecar_for(Path(engine_path)).read_text()).get("checks")
        except (OSError, ValueError, AttributeError):
            return {}
        return found if isinstance(found, dict) else {}

    def remove(self, engine_path: Path) -> None:
        engine_path.unlink(missing_ok=True)
        self.sidecar_for(engine_path).unlink(missing_ok=True)


def resolve_stale(lookup: Lookup, on_stale: str) -> bool:
    """Policy for a stale engine: True -> rebuild it; raises when the user asked to refuse."""
    if on_stale == "rebuild":
        log.warning("rebuilding engine %s: %s", lookup.engine_path, lookup.reason)
        return True
    if on_stale == "refuse":
        raise RuntimeError(
            f"refusing stale engine {lookup.engine_path}: {lookup.reason}. Delete it, or run "
            f"`pipeline export` to build a matching one, or set on_stale=rebuild")
    raise ValueError(f"on_stale must be 'rebuild' or 'refuse', got {on_stale!r}")
