"""Typed control-plane messages (architecture.md §3) and their wire encoding.

Every message is a dataclass encoded as a msgpack map with a ``type`` tag. Nothing here
ever uses pickle: `decode` only builds the dataclasses below from plain msgpack values and
rejects anything else with `MessageError`, which receivers log before dropping the message.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import msgpack

MAX_MESSAGE_BYTES = 1 << 20  # control traffic is small; anything bigger is a bug or an attack


class MessageError(ValueError):
    """A control message could not be decoded or did not match its schema."""


@dataclass
class Hello:
    name: str
    generation: int
    pid: int


@dataclass
class Ready:
    name: str
    generation: int
    info: dict = field(default_factory=dict)


@dataclass
class Stats:
    frames_in: int = 0
    frames_out: int = 0
    drops: int = 0          # items lost: overwritten before a `next` reader got them, or dropped
    overruns: int = 0       # reads that found their item overwritten (never returned torn)
    skipped: int = 0        # items a `latest` reader passed over by design (newest wins), not lost
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    cpu_percent: float = 0.0
    rss_bytes: int = 0
    extras: dict = field(default_factory=dict)


@dataclass
class Heartbeat:
    name: str
    generation: int
    stats: Stats = field(default_factory=Stats)


@dataclass
class Bye:
    name: str
    generation: int
    reason: str = ""


@dataclass
class Command:
    id: int
    cmd: str
    args: dict = field(default_factory=dict)


@dataclass
class Reply:
    id: int
    ok: bool
    result: Any = None
    error: str = ""


@dataclass
class Event:
    kind: str
    data: dict = field(default_factory=dict)


MESSAGE_TYPES = {cls.__name__.lower(): cls for cls in (Hello, Ready, Heartbeat, Bye, Command, Reply, Event)}
_NESTED = {"stats": Stats}
# Field annotations are strings (postponed evaluation); map them to runtime checks.
_TYPE_CHECKS = {
    "str": (str,),
    "int": (int,),
    "bool": (bool,),
    "float": (float, int),
    "dict": (dict,),
    "Any": (object,),
    "Stats": (dict,),
}


def to_plain(msg) -> dict:
    if type(msg) not in MESSAGE_TYPES.values():
        raise MessageError(f"not a control message: {type(msg).__name__}")
    data = dataclasses.asdict(msg)
    data["type"] = type(msg).__name__.lower()
    return data


def encode(msg) -> bytes:
    try:
        return msgpack.packb(to_plain(msg), use_bin_type=True)
    except (TypeError, ValueError) as exc:
        raise MessageError(f"cannot encode {type(msg).__name__}: {exc}") from exc


def decode(data: bytes):
    """Bytes from a socket -> one of the message dataclasses, or MessageError."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MessageError(f"message must be bytes, got {type(data).__name__}")
    if len(data) > MAX_MESSAGE_BYTES:
        raise MessageError(f"message of {len(data)} bytes exceeds the {MAX_MESSAGE_BYTES} byte limit")
    try:
        obj = msgpack.unpackb(bytes(data), raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated exception types
        raise MessageError(f"message is not valid msgpack: {exc}") from exc
    return from_plain(obj)


def from_plain(obj) -> Any:
    if not isinstance(obj, dict):
        raise MessageError(f"message must be a map, got {type(obj).__name__}")
    kind = obj.get("type")
    cls = MESSAGE_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise MessageError(f"unknown message type {kind!r}; known: {', '.join(MESSAGE_TYPES)}")
    return _build(cls, {k: v for k, v in obj.items() if k != "type"}, kind)


def _build(cls, values: dict, where: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(fields)
    if unknown:
        raise MessageError(f"{where}: unknown field(s) {sorted(map(str, unknown))}")
    kwargs = {}
    for name, f in fields.items():
        if name not in values:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise MessageError(f"{where}: missing field {name!r}")
            continue
        value = values[name]
        allowed = _TYPE_CHECKS[str(f.type)]
        if isinstance(value, bool) and bool not in allowed and object not in allowed:
            raise MessageError(f"{where}.{name}: expected {f.type}, got bool")
        if not isinstance(value, allowed):
            raise MessageError(f"{where}.{name}: expected {f.type}, got {type(value).__name__}")
        if name in _NESTED:
            value = _build(_NESTED[name], value, f"{where}.{name}")
        kwargs[name] = value
    return cls(**kwargs)
