"""Pipeline configuration (architecture.md §11): one YAML validated into typed dataclasses.

Resolution order: built-in defaults (identical to ``configs/default.yaml``) <- the user's
YAML file (deep-merged, so a file only names what it changes) <- dotted command-line
overrides (``key.sub=value``, values parsed as YAML) <- short flags (`FLAG_KEYS`).

Errors are `ConfigError` with one line naming the key path, the bad value and what is allowed::

    config error: workers.capture.restart = 'sometimes' — allowed: never, on-failure, always

Worker params are validated against the ``Params`` dataclass of each worker class, so a new
worker gets validation for free. Override shorthand: ``inference.backend=trt`` means
``workers.inference.params.backend=trt`` when ``inference`` is a worker name.
"""
from __future__ import annotations

import copy
import dataclasses
import importlib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from pipeline.config_streams import expand_workers, resolve_streams
from pipeline.runtime.worker import Worker, WorkerError, find_worker_class

RESTART_POLICIES = ("never", "on-failure", "always")
READ_POLICIES = ("latest", "next")
RING_NAMES = ("frames", "detections", "poses", "published")
DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"
REPO_DATA_DIR = DEFAULT_CONFIG_PATH.parent.parent / "data"

# Short CLI flags -> config keys.
FLAG_KEYS = {
    "source": "source.spec",
    "backend": "workers.inference.params.backend",
    "model": "workers.inference.params.model",
    "checkpoint": "workers.inference.params.checkpoint",
    "device": "workers.inference.params.device",
    "detector": "workers.detection.params.kind",
    "weights": "workers.detection.params.model",
    "seconds": "supervisor.seconds",
    "every_frame": "source.every_frame",
    "sources": "sources",   # --source given several times, or as NAME=SPEC (config_streams.py)
}


class ConfigError(ValueError):
    def __init__(self, message: str):
        super().__init__(message if message.startswith("config error") else f"config error: {message}")


@dataclass
class SourceConfig:
    spec: Union[int, str] = "sample"   # webcam index, video path, folder/glob, URL or "sample"
    options: dict = field(default_factory=dict)   # passed to pipeline.sources.open_source
    # end of a file/folder; auto: stop in lossless mode, else loop
    at_end: Literal["stop", "loop", "auto"] = "auto"
    # lossless mode (architecture.md §2): every frame once, in order, at the slowest stage's pace.
    # auto: on for a video file or image folder played with options.realtime=false.
    every_frame: Union[bool, Literal["auto"]] = "auto"


@dataclass
class FramesRingConfig:
    slots: int = 8
    max_height: int = 1080  # larger frames are downscaled by capture to fit
    max_width: int = 1920


@dataclass
class RingConfig:
    slots: int = 16


@dataclass
class RingsConfig:
    frames: FramesRingConfig = field(default_factory=FramesRingConfig)
    detections: RingConfig = field(default_factory=lambda: RingConfig(16))
    poses: RingConfig = field(default_factory=lambda: RingConfig(16))
    published: RingConfig = field(default_factory=lambda: RingConfig(64))
    max_persons: int = 8


@dataclass
class WorkerConfig:
    module: str
    enabled: bool = True
    params: dict = field(default_factory=dict)
    input: Union[str, None] = None     # default: the worker class's `input`
    output: Union[str, None] = None    # default: the worker class's `output`
    policy: Union[Literal["latest", "next"], None] = None
    restart: Literal["never", "on-failure", "always"] = "on-failure"
    max_restarts: int = 5              # within restart_window seconds
    restart_window: float = 60.0
    restart_delay: float = 0.5         # doubles per restart in the window, capped below
    max_restart_delay: float = 10.0
    health_timeout: float = 5.0        # silence after `ready` before the worker is killed
    loop_timeout: float = 30.0         # main loop not coming round after `ready`: hung, killed (one
                                       # process() call may take seconds: a big batch on a CPU, a compile)
    start_timeout: float = 300.0       # hello -> ready, tolerant of slow model loads
    # Filled by validation from the worker class:
    reads: tuple = ()
    params_obj: Any = None
    # Filled by the stream expansion (pipeline/config_streams.py), several sources only:
    inputs: tuple = ()                 # every input ring (frames.<stream> ...); `input` is the first
    stream: Union[int, None] = None    # a per-stream worker (capture.<stream>): its stream's index


@dataclass
class ControlConfig:
    transport: Literal["ipc", "tcp"] = "ipc"
    host: str = "127.0.0.1"


@dataclass
class SupervisorConfig:
    seconds: Union[float, None] = None  # stop after this many seconds (None: run until stopped)
    drain: float = 0.5                  # after capture stops, let the rest finish in-flight frames
    shutdown_grace: float = 3.0         # SIGTERM -> SIGKILL
    status_interval: float = 0.5        # foreground progress line refresh


@dataclass
class CpuConfig:
    """The CPU budget (pipeline/runtime/cpu.py): threads per worker from the cores and what each
    worker needs; `threads.<worker>` overrides one worker's count."""
    cores: Union[int, str] = "auto"     # cores the pipeline may use (auto: those this process may run on)
    threads: dict = field(default_factory=dict)   # worker name -> threads, e.g. {inference: 2}
    spin: bool = False                  # let idle thread pools spin (OpenMP, onnxruntime); false: they sleep


@dataclass
class NativeSinkConfig:
    endpoint: str = "tcp://127.0.0.1:5560"
    hwm: int = 20                       # frames queued per subscriber before dropping


@dataclass
class PipelineConfig:
    source: SourceConfig = field(default_factory=SourceConfig)
    rings: RingsConfig = field(default_factory=RingsConfig)
    workers: dict = field(default_factory=dict)   # name -> WorkerConfig, in start order
    sinks: dict = field(default_factory=dict)     # sink name -> options
    control: ControlConfig = field(default_factory=ControlConfig)
    supervisor: SupervisorConfig = field(default_factory=SupervisorConfig)
    cpu: CpuConfig = field(default_factory=CpuConfig)
    # Both resolved once, by `validate`, to absolute paths (see resolve_dirs):
    data_dir: Union[str, None] = None     # weights, SMPL files, engines, caches
    output_dir: Union[str, None] = None   # the only place control commands may write files
    raw: dict = field(default_factory=dict, init=False)  # the merged plain dict, for spawning
    # The sources (`sources:`, or the one `source:`), filled by validation (config_streams.py)
    streams: list = field(default_factory=list, init=False)

    def enabled_workers(self) -> dict:
        return {n: w for n, w in self.workers.items() if w.enabled}


DEFAULTS: dict = {
    "source": {"spec": "sample", "options": {}, "at_end": "auto", "every_frame": "auto"},
    "rings": {"frames": {"slots": 8, "max_height": 1080, "max_width": 1920},
              "detections": {"slots": 16}, "poses": {"slots": 16}, "published": {"slots": 64},
              "max_persons": 8},
    "workers": {
        "capture": {"module": "workers.capture", "restart": "on-failure"},
        "detection": {"module": "workers.detection", "restart": "on-failure"},
        "inference": {"module": "workers.inference", "restart": "on-failure"},
        "publisher": {"module": "workers.publisher", "restart": "always"},
        "metrics": {"module": "workers.metrics", "restart": "on-failure"},
    },
    "sinks": {"native": {"endpoint": "tcp://127.0.0.1:5560"}},
    "control": {"transport": "ipc", "host": "127.0.0.1"},
    "supervisor": {"seconds": None, "drain": 0.5, "shutdown_grace": 3.0, "status_interval": 0.5},
    "cpu": {"cores": "auto", "threads": {}, "spin": False},
    "data_dir": None,
    "output_dir": None,
}


def default_data_dir() -> Path:
    """$POSEPIPE_DATA_DIR, else the repository's data/ folder (absolute)."""
    env = os.environ.get("POSEPIPE_DATA_DIR")
    return Path(env).expanduser().resolve() if env else REPO_DATA_DIR


def default_output_dir() -> Path:
    """$POSEPIPE_OUTPUT_DIR, else the directory the command runs in (absolute)."""
    return Path(os.environ.get("POSEPIPE_OUTPUT_DIR") or ".").expanduser().resolve()


def resolve_dirs(cfg: "PipelineConfig", raw: dict) -> None:
    """data_dir and output_dir become absolute here, once: a relative value is taken against the
    directory `pipeline start` runs in, and the absolute path is written back into `raw`, so the
    detached supervisor and every worker (whatever their working directory) use the same folders
    as `pipeline doctor` (docs/architecture.md §11)."""
    for key, default in (("data_dir", default_data_dir), ("output_dir", default_output_dir)):
        value = getattr(cfg, key)
        path = Path(value).expanduser().resolve() if value else default()
        setattr(cfg, key, str(path))
        raw[key] = str(path)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple = (),
                flags: dict | None = None) -> PipelineConfig:
    raw = copy.deepcopy(DEFAULTS)
    if path is not None:
        raw = deep_merge(raw, read_yaml(path))
    for item in overrides:
        key, value = parse_override(item)
        set_dotted(raw, expand_key(key, raw), value)
    flags = dict(flags or {})
    if flags.pop("allow_unsafe_checkpoint", False):
        allow_unsafe_checkpoints(raw)
    for flag, value in flags.items():
        if value is not None:
            _check_flag_target(raw, flag, value)
            set_dotted(raw, FLAG_KEYS[flag], value)
    return validate(raw)


UNSAFE_PARAM = "allow_unsafe_checkpoint"


def allow_unsafe_checkpoints(raw: dict) -> list[str]:
    """`--allow-unsafe-checkpoint`: the one opt-in to full unpickling, for every worker that loads
    weights (its Params has `allow_unsafe_checkpoint`: inference for POCO, detection for YOLO).
    Returns the keys set."""
    keys = []
    for name, wraw in (raw.get("workers") or {}).items():
        if not isinstance(wraw, dict) or "module" not in wraw:
            continue
        cls = load_worker_class(wraw["module"], f"workers.{name}")
        if dataclasses.is_dataclass(cls.Params) and UNSAFE_PARAM in {f.name for f in dataclasses.fields(cls.Params)}:
            keys.append(f"workers.{name}.params.{UNSAFE_PARAM}")
            set_dotted(raw, keys[-1], True)
    return keys


def _check_flag_target(raw: dict, flag: str, value) -> None:
    """--backend/--model need a worker whose Params has that field; say which one does not."""
    parts = FLAG_KEYS[flag].split(".")
    if parts[0] != "workers":
        return
    worker, param = parts[1], parts[-1]
    wraw = raw.get("workers", {}).get(worker)
    if not isinstance(wraw, dict) or "module" not in wraw:
        raise ConfigError(f"--{flag} {value}: there is no `workers.{worker}` in the config")
    cls = load_worker_class(wraw["module"], f"workers.{worker}")
    names = {f.name for f in dataclasses.fields(cls.Params)} if dataclasses.is_dataclass(cls.Params) else set()
    if param not in names:
        what = f" ({cls.description})" if getattr(cls, "description", "") else ""
        raise ConfigError(f"--{flag} {value}: workers.{worker} runs {wraw['module']}{what}, which has no "
                          f"`{param}` setting; set workers.{worker}.module to the real worker")


def read_yaml(path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{p} is not valid YAML{where}: {problem}; fix the syntax there (indentation, "
                          f"brackets, quotes)") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p} must contain a mapping at the top level, got {type(data).__name__}")
    return data


def deep_merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_override(item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r} must look like key.sub=value")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    return key, value


def expand_key(key: str, raw: dict) -> str:
    """`inference.backend` -> `workers.inference.params.backend` for worker names."""
    head, _, rest = key.partition(".")
    if head not in raw and head in raw.get("workers", {}) and rest:
        field_names = {f.name for f in dataclasses.fields(WorkerConfig)}
        if rest.split(".")[0] in field_names:
            return f"workers.{head}.{rest}"
        return f"workers.{head}.params.{rest}"
    return key


def set_dotted(raw: dict, key: str, value) -> None:
    node = raw
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"{'.'.join(parts[:i + 1])} = {nxt!r} is not a mapping; cannot set {key}")
        node = nxt
    node[parts[-1]] = value


# ---------------------------------------------------------------------------- validation

def validate(raw: dict) -> PipelineConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"config must be a mapping, got {type(raw).__name__}")
    workers_raw = raw.get("workers", {})
    cfg = build_dataclass(PipelineConfig, {k: v for k, v in raw.items()
                                           if k not in ("workers", "raw", "sources", "streams")}, "")
    if not isinstance(workers_raw, dict) or not workers_raw:
        raise ConfigError(f"workers = {workers_raw!r} — expected a mapping of worker name -> settings")
    workers = {}
    for name, wraw in workers_raw.items():
        workers[name] = _validate_worker(str(name), wraw)
    cfg.sinks = _validate_sinks(raw.get("sinks", {}))
    if raw.get("sources") is None:
        _resolve_every_frame(cfg.source)
    cfg.streams = resolve_streams(cfg, raw.get("sources"), _resolve_every_frame)
    cfg.source = cfg.streams[0].source  # the first (or only) stream: what single-source code reads
    cfg.workers = order_workers(expand_workers(workers, cfg.streams))
    _check_ranges(cfg)
    resolve_dirs(cfg, raw)
    cfg.raw = raw
    return cfg


def _validate_worker(name: str, wraw) -> WorkerConfig:
    path = f"workers.{name}"
    if not isinstance(wraw, dict):
        raise ConfigError(f"{path} = {wraw!r} — expected a mapping with at least `module`")
    if "module" not in wraw:
        raise ConfigError(f"{path}.module is missing — name the worker module, e.g. workers.{name}")
    banned = {"reads", "params_obj", "inputs", "stream"} & set(wraw)
    if banned:
        raise ConfigError(f"{path}.{sorted(banned)[0]} is not a config key")
    if isinstance(wraw.get("params"), dict) and "data_dir" in wraw["params"]:
        raise ConfigError(f"{path}.params.data_dir: the data folder is one setting for the whole pipeline now; "
                          f"set the top-level data_dir instead (e.g. data_dir=/path/to/data)")
    wc = build_dataclass(WorkerConfig, wraw, path)
    cls = load_worker_class(wc.module, path)
    wc.input = wc.input if "input" in wraw else cls.input
    wc.output = wc.output if "output" in wraw else cls.output
    wc.policy = wc.policy or cls.policy
    wc.reads = tuple(cls.reads)
    wc.params_obj = build_dataclass(cls.Params, wc.params or {}, f"{path}.params")
    for key in ("input", "output"):
        ring = getattr(wc, key)
        if ring is not None and ring not in RING_NAMES:
            raise ConfigError(f"{path}.{key} = {ring!r} — allowed: {', '.join(RING_NAMES)}")
    return wc


def load_worker_class(module_name: str, path: str = "worker") -> type[Worker]:
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{path}.module = {module_name!r} cannot be imported: {exc}") from exc
    try:
        return find_worker_class(module)
    except WorkerError as exc:
        raise ConfigError(f"{path}.module = {module_name!r}: {exc}") from exc


def order_workers(workers: dict) -> dict:
    """Start order: consumers before producers, so nothing a producer writes is missed."""
    remaining = dict(workers)
    ordered = {}
    while remaining:
        for name, wc in remaining.items():
            blocked = wc.output is not None and any(
                o.input == wc.output or wc.output in o.reads or wc.output in o.inputs
                for n, o in remaining.items() if n != name and o.enabled)
            if not blocked or not wc.enabled:
                break
        else:  # a cycle; keep the declared order for the rest
            name = next(iter(remaining))
        ordered[name] = remaining.pop(name)
    return ordered


# The names a `sinks:` mapping may use. The config owns its schema; `pipeline.sinks` maps each
# name to the module that implements it (and checks at import that the two lists agree).
SINK_NAMES = ("native", "remi", "vmc", "recording", "viewer", "display", "video")


def _validate_sinks(sinks) -> dict:
    if sinks is None:
        return {}
    if not isinstance(sinks, dict):
        raise ConfigError(f"sinks = {sinks!r} — expected a mapping of sink name -> options")
    out = {}
    for name, opts in sinks.items():
        if name not in SINK_NAMES:
            raise ConfigError(f"sinks.{name} is not a known sink — allowed: {', '.join(SINK_NAMES)}")
        if opts is None or opts is False:
            continue  # `sinks.vmc: null` / `false` disables a sink
        if opts is True:
            opts = {}
        if not isinstance(opts, dict):
            raise ConfigError(f"sinks.{name} = {opts!r} — expected a mapping of options")
        if name == "native":
            build_dataclass(NativeSinkConfig, opts, "sinks.native")
        out[name] = opts
    return out


def _check_ranges(cfg: PipelineConfig) -> None:
    def positive(path, value, minimum=1):
        if value < minimum:
            raise ConfigError(f"{path} = {value!r} — must be >= {minimum}")

    r = cfg.rings
    positive("rings.frames.slots", r.frames.slots, 2)
    positive("rings.frames.max_height", r.frames.max_height, 16)
    positive("rings.frames.max_width", r.frames.max_width, 16)
    for n in ("detections", "poses", "published"):
        positive(f"rings.{n}.slots", getattr(r, n).slots, 2)
    if not 1 <= r.max_persons <= 64:
        raise ConfigError(f"rings.max_persons = {r.max_persons!r} — must be in 1..64")
    for name, w in cfg.workers.items():
        for key in ("restart_window", "restart_delay", "max_restart_delay", "health_timeout", "loop_timeout",
                    "start_timeout"):
            if getattr(w, key) <= 0:
                raise ConfigError(f"workers.{name}.{key} = {getattr(w, key)!r} — must be > 0")
        positive(f"workers.{name}.max_restarts", w.max_restarts, 0)
    if not is_loopback(cfg.control.host):
        # Commands (stop, swap, set) arrive here: never from another machine, --listen or not.
        raise ConfigError(f"control.host = {cfg.control.host!r} — the control socket always stays on loopback "
                          f"(127.0.0.1 or ::1), also with --listen (which moves only the native stream, "
                          f"viewer and Prometheus)")
    s = cfg.supervisor
    if s.seconds is not None and s.seconds <= 0:
        raise ConfigError(f"supervisor.seconds = {s.seconds!r} — must be > 0 (or null to run until stopped)")
    _check_cpu(cfg)


def _check_cpu(cfg: PipelineConfig) -> None:
    c = cfg.cpu
    if c.cores != "auto" and (isinstance(c.cores, bool) or not isinstance(c.cores, int) or c.cores < 1):
        raise ConfigError(f"cpu.cores = {c.cores!r} — must be auto or an integer >= 1")
    if not isinstance(c.threads, dict):
        raise ConfigError(f"cpu.threads = {c.threads!r} — expected a mapping of worker name -> threads")
    for name, n in c.threads.items():
        if name not in cfg.workers and not any(w.startswith(f"{name}.") for w in cfg.workers):
            raise ConfigError(f"cpu.threads.{name} names no worker — workers: {', '.join(cfg.workers)}")
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 1024:
            raise ConfigError(f"cpu.threads.{name} = {n!r} — must be an integer in 1..1024")


def _resolve_every_frame(src: SourceConfig) -> None:
    """Turn `every_frame`/`at_end` auto into what runs (architecture.md §2): lossless for a
    recorded file or folder played as fast as possible, and then the run ends with the file."""
    from pipeline.sources import SourceError, source_kind

    try:
        kind = source_kind(src.spec)
    except SourceError:
        kind = None  # a bad spec is reported when the source is opened
    realtime = src.options.get("realtime") if isinstance(src.options, dict) else None
    if src.every_frame == "auto":
        src.every_frame = kind in ("video", "images") and realtime is False
    elif src.every_frame and kind in ("webcam", "stream"):
        raise ConfigError(f"source.every_frame = true needs a recorded source (video file, image folder, "
                          f"sample); {src.spec!r} is a live {kind}, which cannot wait for the pipeline — "
                          f"drop --every-frame")
    if src.every_frame:
        if realtime is True:
            raise ConfigError("source.every_frame = true plays the source as fast as the slowest stage allows, "
                              "but source.options.realtime = true paces it and drops late frames — remove "
                              "realtime=true (or --every-frame)")
        if kind in ("video", "images", "sample"):
            src.options = {**src.options, "realtime": False}
    if src.at_end == "auto":
        src.at_end = "stop" if src.every_frame else "loop"


LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost."""
    import ipaddress

    text = str(host).strip().strip("[]")
    if text in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(text).is_loopback
    except ValueError:
        return False


def build_dataclass(cls, data, path: str):
    """Validate a plain mapping into dataclass `cls`; unknown keys and wrong types are errors."""
    where = path or "config"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where} = {data!r} — expected a mapping")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        allowed = ", ".join(fields) or "(none)"
        raise ConfigError(f"{_join(path, unknown[0])} is not a known key — allowed: {allowed}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, _join(path, name))
    missing = [n for n, f in fields.items() if n not in kwargs and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{_join(path, missing[0])} is missing")
    return cls(**kwargs)


def _join(path: str, key) -> str:
    return f"{path}.{key}" if path else str(key)


def _coerce(tp, value, path: str):
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed or isinstance(value, bool) != any(isinstance(a, bool) for a in allowed):
            raise ConfigError(f"{path} = {value!r} — allowed: {', '.join(map(str, allowed))}")
        return value
    if origin in (Union, types.UnionType):
        errors = []
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, path)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        names = [_type_name(a) for a in args]
        raise ConfigError(f"{path} = {value!r} — expected {' or '.join(names)}")
    if dataclasses.is_dataclass(tp):
        return build_dataclass(tp, value, path)
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path} = {value!r} — expected a list")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        return type(value)(_coerce(item_tp, v, f"{path}[{i}]") for i, v in enumerate(value)) \
            if tp in (list, tuple) else [_coerce(item_tp, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path} = {value!r} — expected a mapping")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path} = {value!r} — expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path} = {value!r} — expected an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path} = {value!r} — expected a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path} = {value!r} — expected a string")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{path} = {value!r} — expected {_type_name(tp)}")
    return value


def _type_name(tp) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true/false", dict: "a mapping",
             type(None): "null"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def to_plain(cfg: PipelineConfig) -> dict:
    """The resolved config as plain data (for spawning a detached supervisor)."""
    return copy.deepcopy(cfg.raw)


# ---------------------------------------------------------------------------- sink flags of `start`

PUBLISH_CHOICES = ("remi", "vmc", "record:PATH.npz")


def sink_flag_overrides(config_path=None, publish=(), viewer: bool = True, viewer_port=None,
                        smoothing=None, display: bool = False, output=None, source=None) -> list[str]:
    """Dotted overrides for the sink flags of `pipeline start`.

    They go before the user's own overrides, so `sinks.viewer.port=9000` typed on the command
    line still wins. The viewer is on unless `--no-viewer` or the config file says
    `sinks.viewer: false`. `--output` with a file source is the offline mode: the file plays once
    (`source.at_end=stop`) in lossless mode (`source.every_frame=true`: every frame read, in order,
    at the slowest stage's pace), so the video holds one overlaid frame per source frame.
    """
    import json
    import os

    file_raw = read_yaml(config_path) if config_path is not None else {}
    merged = deep_merge(DEFAULTS, file_raw)
    file_sinks = file_raw.get("sinks") if isinstance(file_raw.get("sinks"), dict) else {}
    out: list[str] = []

    def enable(name: str) -> None:
        if not isinstance(file_sinks.get(name), dict):
            out.append(f"sinks.{name}={{}}")

    for item in publish or ():
        kind, _, arg = str(item).partition(":")
        if kind in ("remi", "vmc") and not arg:
            enable(kind)
        elif kind in ("record", "recording") and arg:
            out.append(f"sinks.recording.path={json.dumps(os.path.abspath(os.path.expanduser(arg)))}")
        elif kind == "native" and not arg:
            pass  # always on
        else:
            raise ConfigError(f"--publish {item!r} — allowed: {', '.join(PUBLISH_CHOICES)}")
    viewer_off = "viewer" in file_sinks and file_sinks["viewer"] in (None, False)
    if viewer and not viewer_off:
        enable("viewer")
        if viewer_port is not None:
            if isinstance(viewer_port, bool) or not isinstance(viewer_port, int) or not 0 <= viewer_port <= 65535:
                raise ConfigError(f"--viewer-port {viewer_port!r} — must be an integer 0..65535")
            out.append(f"sinks.viewer.port={viewer_port}")
    elif not viewer and "viewer" in merged.get("sinks", {}):
        out.append("sinks.viewer=false")
    if smoothing is not None:
        out.append(f"workers.publisher.params.smoothing={json.dumps(smoothing)}")
    if display:
        enable("display")
    if output:
        out.append(f"sinks.video.path={json.dumps(os.path.abspath(os.path.expanduser(str(output))))}")
        spec = merged.get("source", {}).get("spec") if source is None else source
        if isinstance(spec, str) and os.path.isfile(spec):
            out += ["source.at_end=stop", "source.every_frame=true"]
    return out
