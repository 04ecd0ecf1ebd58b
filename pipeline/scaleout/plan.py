"""How many pipelines, which sources each, and each pipeline's own config (no Ray needed here).

One pipeline per GPU of the cluster; on a cluster without GPUs one per `cpus_per_pipeline`
CPUs; or the count the user asks for. Sources are given as `NAME=SPEC` (that pipeline, the
user's assignment) or `SPEC` (spread evenly: each goes to the pipeline with the fewest
sources so far); with no source at all every pipeline plays the config's own source.
"""
from __future__ import annotations

import copy
import logging
import re
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")
# Sinks that run at the head (recording) or only make sense on a machine with a screen or a
# local consumer; on a node only the native stream runs, for the head to subscribe to.
NODE_SINKS = ("native",)


class PlanError(ValueError):
    """The requested layout cannot be made; the message names the option to change."""


@dataclass
class PipelinePlan:
    name: str
    sources: list = field(default_factory=list)
    num_cpus: float = 1.0
    num_gpus: float = 0.0


def pipeline_count(resources: dict, cpus_per_pipeline: int, requested: int | None = None) -> int:
    """`requested`, else one per GPU, else one per `cpus_per_pipeline` CPUs of the cluster."""
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise PlanError(f"--ray-pipelines {requested!r} — expected an integer >= 1")
        return requested
    if not isinstance(cpus_per_pipeline, int) or cpus_per_pipeline < 1:
        raise PlanError(f"--ray-cpus {cpus_per_pipeline!r} — expected an integer >= 1")
    gpus = int(resources.get("GPU", 0) or 0)
    if gpus >= 1:
        return gpus
    n = int(resources.get("CPU", 0) or 0) // cpus_per_pipeline
    if n < 1:
        raise PlanError(f"the cluster has {resources.get('CPU', 0)} CPUs and no GPU: not enough for one pipeline "
                        f"of --ray-cpus {cpus_per_pipeline}; lower --ray-cpus or add nodes")
    return n


def source_value(text: str):
    """A webcam index stays an int, anything else is a path or URL."""
    return int(text) if text.strip().isdigit() else text


def parse_sources(items) -> tuple[dict[str, list], list]:
    """`NAME=SPEC` items -> {name: [spec]}, the other items -> [spec] (to spread)."""
    named: dict[str, list] = {}
    free = []
    for item in items or ():
        if not isinstance(item, str) or not item.strip():
            raise PlanError(f"--ray-source {item!r} — expected SPEC or PIPELINE=SPEC")
        head, sep, rest = item.partition("=")
        # A URL's query string may hold '=': only a plain pipeline name before the first '=' assigns.
        if sep and _NAME.match(head) and "://" not in head:
            if not rest.strip():
                raise PlanError(f"--ray-source {item!r} — no source after '{head}='")
            named.setdefault(head, []).append(source_value(rest))
        else:
            free.append(source_value(item))
    return named, free


def plan(count: int, sources=(), gpus_per_pipeline: float = 0.0, cpus_per_pipeline: float = 1.0,
         drop_idle: bool = True) -> list[PipelinePlan]:
    """The pipelines p0..p{count-1} with their sources. A named pipeline outside that range is an
    error; pipelines left without a source are dropped when sources were given (`drop_idle`)."""
    named, free = parse_sources(sources)
    plans = [PipelinePlan(f"p{i}", num_cpus=cpus_per_pipeline, num_gpus=gpus_per_pipeline) for i in range(count)]
    by_name = {p.name: p for p in plans}
    for name, specs in named.items():
        if name not in by_name:
            raise PlanError(f"--ray-source {name}=... names no pipeline: there are {count} "
                            f"({', '.join(by_name)}); raise --ray-pipelines or use one of those names")
        by_name[name].sources.extend(specs)
    for spec in free:
        min(plans, key=lambda p: len(p.sources)).sources.append(spec)
    if not named and not free:
        return plans  # every pipeline plays the config's own source
    idle = [p.name for p in plans if not p.sources]
    if idle:
        if not drop_idle:
            raise PlanError(f"pipelines {', '.join(idle)} have no source; give more --ray-source or fewer "
                            f"--ray-pipelines")
        log.info("pipelines %s have no source and are not started", ", ".join(idle))
    return [p for p in plans if p.sources]


def node_config(raw: dict, p: PipelinePlan) -> dict:
    """The config one pipeline runs on its node: its source, only the native sink (bound by the
    actor on the node's address), its CPU share, no fixed Prometheus port (two pipelines may
    share a node) and no run length (the head decides when everything stops)."""
    from pipeline.config import ConfigError, validate

    out = copy.deepcopy(raw)
    if len(p.sources) > 1:
        # Several sources on one node: one pipeline with a stream each (cross-stream batching
        # on the node's GPU); the head names them <pipeline>/cam<i>.
        out["sources"] = [{"name": f"cam{i}", "spec": spec} for i, spec in enumerate(p.sources)]
    elif p.sources:
        out.pop("sources", None)
        out.setdefault("source", {})["spec"] = p.sources[0]
    sinks = out.get("sinks") or {}
    out["sinks"] = {k: v for k, v in sinks.items() if k in NODE_SINKS}
    out["sinks"].setdefault("native", {})
    cpu = out.setdefault("cpu", {})
    if cpu.get("cores", "auto") == "auto":
        cpu["cores"] = max(1, int(p.num_cpus))
    metrics = (out.get("workers") or {}).get("metrics")
    if isinstance(metrics, dict) and metrics.get("enabled", True):
        metrics.setdefault("params", {})["prometheus_port"] = 0
    out.setdefault("supervisor", {})["seconds"] = None
    try:
        validate(copy.deepcopy(out))
    except ConfigError as exc:
        raise PlanError(f"pipeline {p.name}: {exc}") from exc
    return out
