"""Output sinks (architecture.md §7) and the registry the publisher builds them from.

Config ``sinks: {<name>: {<options>}}``; each name maps to a module imported only when that
sink is configured (viser, python-osc, ... stay out of processes that do not need them).
The module defines one `Sink` subclass whose ``name`` equals the config name; it is built
with ``from_config(options)`` when the class has it, else ``Class(**options)``.

Also here: what the sinks draw (`overlay`, `display` for the OpenCV window and video file,
`viewer_scene` for the browser viewer's geometry).
May import: `pipeline.pose`, `pipeline.runtime.records` and `pipeline.runtime.control` (the
display's keys and the viewer's record button talk to the supervisor); never the CLI.
"""
from __future__ import annotations

import importlib
import inspect

from pipeline.config import SINK_NAMES
from pipeline.sinks.base import Sink, SinkError

SINKS = {
    "native": "pipeline.sinks.native",
    "remi": "pipeline.sinks.remi",
    "vmc": "pipeline.sinks.vmc",
    "recording": "pipeline.sinks.recording",
    "viewer": "pipeline.sinks.viewer",
    "display": "pipeline.sinks.display",     # --display: overlay in an OpenCV window
    "video": "pipeline.sinks.display",       # --output out.mp4: the same overlay into a video file
}
if tuple(SINKS) != SINK_NAMES:  # the config validates names against its own list
    raise ImportError(f"pipeline.sinks.SINKS {tuple(SINKS)} and pipeline.config.SINK_NAMES {SINK_NAMES} differ")


def sink_class(name: str) -> type[Sink]:
    if name not in SINKS:
        raise SinkError(f"unknown sink {name!r} — allowed: {', '.join(SINKS)}")
    try:
        module = importlib.import_module(SINKS[name])
    except ImportError as exc:
        raise SinkError(f"sink {name!r} is not available: {exc}") from exc
    found = [obj for obj in vars(module).values()
             if inspect.isclass(obj) and issubclass(obj, Sink) and obj is not Sink
             and obj.__module__ == module.__name__ and getattr(obj, "name", None) == name]
    if len(found) != 1:
        raise SinkError(f"module {module.__name__} must define one Sink subclass with name = {name!r}")
    return found[0]


def build_sink(name: str, options: dict | None) -> Sink:
    """A configured, not yet opened sink; SinkError names a bad option and what is allowed."""
    cls = sink_class(name)
    options = dict(options or {})
    factory = getattr(cls, "from_config", None)
    if callable(factory):
        return factory(options)
    params = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    allowed = [n for n, p in params.items() if n != "self" and p.kind not in
               (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
    unknown = [k for k in options if k not in allowed]
    if unknown and not takes_any:
        raise SinkError(f"config error: sinks.{name}.{unknown[0]} is not a known option — "
                        f"allowed: {', '.join(allowed) or '(none)'}")
    try:
        return cls(**options)
    except TypeError as exc:
        raise SinkError(f"config error: sinks.{name}: {exc}") from exc


__all__ = ["SINKS", "Sink", "SinkError", "build_sink", "sink_class"]
