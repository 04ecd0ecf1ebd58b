"""`pipeline start --ray [ADDRESS]`: the same pipeline, placed on a Ray cluster (docs/scale-out.md).

`ray_options` adds the --ray flags to `start` and, when --ray is given, runs the head instead
of a local supervisor; without --ray it changes nothing. Ray itself is imported only then.
"""
from __future__ import annotations

import functools
import logging
import sys
import time

import click

log = logging.getLogger(__name__)

# `start`'s own flags that pick config values (the rest of start's arguments are its options).
FLAG_NAMES = ("source", "backend", "model", "checkpoint", "device", "detector", "weights", "seconds",
              "every_frame", "allow_unsafe_checkpoint")
RAY_NAMES = ("ray_address", "ray_pipelines", "ray_cpus", "ray_sources", "ray_max_restarts")
TICK_S = 5.0


def ray_options(command):
    @functools.wraps(command)
    def wrapper(**kwargs):
        mine = {k: kwargs.pop(k) for k in RAY_NAMES}
        if mine["ray_address"] is None:
            if mine["ray_sources"] or mine["ray_pipelines"] is not None:
                _fail("--ray-source and --ray-pipelines need --ray [ADDRESS]")
            return command(**kwargs)
        return start_on_ray(kwargs, **mine)

    options = [
        click.option("--ray", "ray_address", is_flag=False, flag_value="auto", default=None, metavar="[ADDRESS]",
                     help="Run one pipeline per GPU (or per --ray-cpus CPUs) of a Ray cluster and merge their "
                          "poses into one native stream here. ADDRESS: auto (default: RAY_ADDRESS or the "
                          "local cluster), HOST:PORT, ray://HOST:PORT, or 'local' (a head on 127.0.0.1 for "
                          "tests and demos). Needs posepipe[ray]."),
        click.option("--ray-pipelines", type=int, help="How many pipelines (default: one per GPU, else one per "
                                                       "--ray-cpus CPUs of the cluster)."),
        click.option("--ray-cpus", type=int, default=2, show_default=True,
                     help="CPUs each pipeline asks Ray for (and its thread budget)."),
        click.option("--ray-source", "ray_sources", multiple=True, metavar="[PIPELINE=]SOURCE",
                     help="A source for the pipelines: PIPELINE=SOURCE gives it to that pipeline (p0, p1, ...), "
                          "SOURCE alone is spread evenly. Repeatable; default: every pipeline plays --source."),
        click.option("--ray-max-restarts", type=int, default=5, show_default=True,
                     help="Restarts Ray gives each pipeline's actor (-1: no limit)."),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def _fail(message: str, code: int = 1):
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _load(kwargs: dict):
    from pipeline.cli import listen as listening
    from pipeline.config import ConfigError
    from pipeline.scaleout.plan import source_value

    if kwargs.get("detach"):
        _fail("--ray runs the head in the foreground (it is the merged stream); drop --detach")
    if kwargs.get("every_frame"):
        _fail("--every-frame is not supported with --ray: lossless runs end with their file, one per node")
    flags = {k: kwargs.get(k) for k in FLAG_NAMES}
    given = [s for s in (flags["source"] or ()) if s is not None]
    if len(given) > 1:
        _fail("with --ray, --source names the one source every pipeline plays; spread several over the "
              "pipelines with --ray-source [PIPELINE=]SOURCE (repeatable)")
    flags["source"] = source_value(given[0]) if given else None
    flags["every_frame"] = None
    try:
        cfg = listening.load_start_config(kwargs.get("config_path"), kwargs.get("overrides", ()), flags,
                                          kwargs.get("listen"), warn=lambda text: click.echo(text, err=True))
    except ConfigError as exc:
        _fail(str(exc))
    return cfg


def start_on_ray(kwargs: dict, ray_address, ray_pipelines, ray_cpus, ray_sources, ray_max_restarts):
    from pipeline.scaleout import RayUnavailable, check_ray
    from pipeline.scaleout.head import Head, HeadOptions
    from pipeline.scaleout.plan import PlanError
    from pipeline.scaleout.status import line, table

    if "=" in ray_address and "://" not in ray_address:
        _fail(f"--ray {ray_address!r} looks like an override, not a cluster address: write --ray auto "
              f"(or put --ray last)")
    try:
        check_ray()
    except RayUnavailable as exc:
        _fail(str(exc))
    from pipeline.scaleout.plan import parse_sources

    if ray_pipelines is not None and ray_pipelines < 1:
        _fail(f"--ray-pipelines {ray_pipelines} — expected an integer >= 1")
    if ray_cpus < 1:
        _fail(f"--ray-cpus {ray_cpus} — expected an integer >= 1")
    try:
        parse_sources(ray_sources)  # a typo fails here, before a cluster is started
    except PlanError as exc:
        _fail(str(exc))
    cfg = _load(kwargs)
    raw = cfg.raw
    sinks = raw.get("sinks") or {}
    recording = sinks.get("recording")
    record = recording.get("path") if isinstance(recording, dict) else None
    skipped = sorted(k for k, v in sinks.items() if v and k not in ("native", "recording"))
    if skipped:
        click.echo(f"note: with --ray the head serves the merged native stream (and recording) only; "
                   f"{', '.join(skipped)} not started: point them at the merged stream", err=True)
    opts = HeadOptions(address=ray_address, pipelines=ray_pipelines, cpus_per_pipeline=ray_cpus,
                       sources=tuple(ray_sources), max_restarts=ray_max_restarts,
                       seconds=cfg.supervisor.seconds, record=record)
    last = [0.0]

    def on_tick(status):
        if time.monotonic() - last[0] >= TICK_S:
            last[0] = time.monotonic()
            click.echo(line(status), err=True)

    head = Head(raw, opts, on_tick=on_tick)
    code = 0
    try:
        head.start()
        click.echo(f"Ray cluster {head.cluster.address} (auth {head.cluster.auth}): placed "
                   f"{len(head.tracked)} pipelines in {head.timings['placed_s']:.1f} s; merged stream on "
                   f"{head.merger.endpoint}", err=True)
        head.wait_running()
        click.echo(f"all {len(head.tracked)} pipelines publishing after {head.timings['running_s']:.1f} s", err=True)
        head.run()
    except (RayUnavailable, PlanError, ValueError) as exc:
        click.echo(f"error: {exc}", err=True)
        code = 2
    except KeyboardInterrupt:
        head.request_stop("SIGINT")
    final = head.status() if head.merger is not None else None
    results = head.close()
    if final is not None:
        click.echo(table(final))
        if head.merger is not None and head.merger.recordings():
            click.echo(f"recordings: {', '.join(head.merger.recordings())}")
    unclean = [n for n, r in results.items() if not r.get("clean")]
    click.echo(f"stopped ({head.stop_reason or 'error'}){' — NOT cleanly: ' + ', '.join(unclean) if unclean else ''}")
    sys.exit(code or (1 if unclean else 0))


def show_head_status(as_json: bool) -> None:
    """`pipeline status --ray`: what the head on this machine last wrote (no Ray needed)."""
    import json

    from pipeline.scaleout.status import NoHead, read_head_status, table

    try:
        status = read_head_status()
    except NoHead as exc:
        _fail(str(exc))
    click.echo(json.dumps(status, indent=2) if as_json else table(status))
