"""Several sources in one pipeline (issue 20): the `sources:` list, `--source [NAME=]SPEC`, and the
per-stream workers and rings they expand into (docs/architecture.md, "Streams").

One source keeps today's pipeline exactly: worker `capture`, ring `frames`, stream name `main`
(or the name it was given). With several, every source gets its own capture worker
`capture.<stream>` writing its own frames ring `frames.<stream>`; the workers that read frames
(detection, inference, the publisher's image sinks) read all of them. Detections and poses stay
one ring each: every record carries its stream's index (`stream` in the record header).
"""
from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass

MAX_STREAMS = 16          # the rings keep one frame-id guard per stream (pipeline/runtime/ring.py)
DEFAULT_STREAM = "main"   # the name of the one stream of a single-source pipeline
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,23}$")
_SOURCE_KEYS = ("name", "spec", "options", "at_end", "every_frame")


@dataclass
class StreamConfig:
    name: str
    source: object            # pipeline.config.SourceConfig
    index: int = 0


def split_source_arg(text: str) -> tuple[str | None, str]:
    """`NAME=SPEC` -> (NAME, SPEC); a plain SPEC (also one holding '=', like a URL query) -> (None, SPEC).
    Only an identifier-like NAME counts, so `rtsp://h/x?a=b` stays one spec."""
    head, sep, tail = str(text).partition("=")
    if sep and _NAME_RE.match(head) and tail:
        return head, tail
    return None, str(text)


def spec_value(text: str):
    """A webcam index stays an int, as for a single `--source`."""
    return int(text) if isinstance(text, str) and text.strip().isdigit() else text


def sources_from_args(args) -> list[dict] | None:
    """Repeated `--source [NAME=]SPEC` -> a `sources:` list (None for zero or one plain source,
    which keeps using `source.spec`). Names default to cam0, cam1, ..."""
    args = [a for a in (args or ()) if a is not None]
    if not args:
        return None
    parsed = [split_source_arg(a) for a in args]
    if len(parsed) == 1 and parsed[0][0] is None:
        return None
    return [{"name": name or f"cam{i}", "spec": spec_value(spec)} for i, (name, spec) in enumerate(parsed)]


def check_name(name, where: str) -> str:
    from pipeline.config import ConfigError

    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError(f"{where} = {name!r} — a stream name is a letter or _ followed by up to 23 letters, "
                          f"digits or _ (it names the worker capture.<name> and the ring frames.<name>)")
    return name


def resolve_streams(cfg, sources_raw, resolve_every_frame) -> list[StreamConfig]:
    """Validate `sources:` into StreamConfigs (cfg.source is the single source when it is absent)."""
    from pipeline.config import ConfigError, SourceConfig, build_dataclass

    if sources_raw is None:
        return [StreamConfig(DEFAULT_STREAM, cfg.source, 0)]
    if not isinstance(sources_raw, list) or not sources_raw:
        raise ConfigError(f"sources = {sources_raw!r} — expected a non-empty list of "
                          f"{{name, spec, options, at_end}} (or leave it out and use source:)")
    if len(sources_raw) > MAX_STREAMS:
        raise ConfigError(f"sources: {len(sources_raw)} given — at most {MAX_STREAMS} streams per pipeline")
    streams, seen = [], set()
    for i, entry in enumerate(sources_raw):
        where = f"sources[{i}]"
        if isinstance(entry, (str, int)) and not isinstance(entry, bool):
            name, spec = split_source_arg(entry) if isinstance(entry, str) else (None, entry)
            entry = {"name": name or f"cam{i}", "spec": spec_value(spec)}
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} = {entry!r} — expected a mapping with name and spec")
        unknown = [k for k in entry if k not in _SOURCE_KEYS]
        if unknown:
            raise ConfigError(f"{where}.{unknown[0]} is not a known key — allowed: {', '.join(_SOURCE_KEYS)}")
        if "spec" not in entry:
            raise ConfigError(f"{where}.spec is missing — a webcam index, video file, folder, URL or 'sample'")
        name = entry.get("name")
        name = DEFAULT_STREAM if name is None and len(sources_raw) == 1 else name
        name = f"cam{i}" if name is None else name
        check_name(name, f"{where}.name")
        if name in seen:
            raise ConfigError(f"{where}.name = {name!r} — given twice; every stream needs its own name")
        seen.add(name)
        fields = {k: v for k, v in entry.items() if k != "name"}
        # `source:` holds the defaults of every entry that does not say otherwise: options typed as
        # `source.options.width=320` beside `--source a=... --source b=...`, `--every-frame`, at_end
        fields.setdefault("every_frame", cfg.source.every_frame)
        fields.setdefault("options", dict(cfg.source.options or {}))
        fields.setdefault("at_end", cfg.source.at_end)
        src = build_dataclass(SourceConfig, fields, where)
        resolve_every_frame(src)
        streams.append(StreamConfig(name, src, i))
    if len(streams) > 1 and any(s.source.every_frame for s in streams):
        lossless = [s.name for s in streams if s.source.every_frame]
        raise ConfigError(f"lossless mode (--every-frame, or a file played with realtime=false) is for one source; "
                          f"streams {', '.join(lossless)} ask for it with {len(streams)} sources. Play the files "
                          f"in real time (drop --every-frame / realtime=false) or run one pipeline per file")
    return streams


def expand_workers(workers: dict, streams: list[StreamConfig]) -> dict:
    """Per-stream workers and rings for several streams (one stream: unchanged). A source worker
    writing `frames` becomes `<name>.<stream>` writing `frames.<stream>`; a worker reading
    `frames` reads every `frames.<stream>` (`inputs`), one with `frames` in `reads` gets them all."""
    if len(streams) <= 1:
        return workers
    rings = tuple(f"frames.{s.name}" for s in streams)
    out = {}
    for name, wc in workers.items():
        if wc.input is None and wc.output == "frames":
            for s in streams:
                out[f"{name}.{s.name}"] = dataclasses.replace(wc, output=f"frames.{s.name}", stream=s.index,
                                                              params=copy.deepcopy(wc.params))
            continue
        changes = {}
        if wc.input == "frames":
            changes.update(input=rings[0], inputs=rings)
        if "frames" in wc.reads:
            changes["reads"] = tuple(r for x in wc.reads for r in (rings if x == "frames" else (x,)))
        out[name] = dataclasses.replace(wc, **changes) if changes else wc
    return out


def ring_kind(name: str) -> str:
    """`frames.cam0` -> `frames`: the record layout of a per-stream ring."""
    return str(name).split(".", 1)[0]
