"""`pipeline profile` / `tools/profile_pipeline.py`: profile a running pipeline, or start one and profile it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click

DEFAULT_START_SECONDS = 10.0


@click.command(name="profile", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--out", "out_dir", type=str, default=None,
              help="Output directory (default: ./profile-<date>-<time>).")
@click.option("--interval", type=float, default=0.5, show_default=True, help="Seconds between samples.")
@click.option("--seconds", type=float, default=None,
              help=f"Profile for N s (default: until Ctrl-C or the pipeline stops; "
                   f"{DEFAULT_START_SECONDS:g} s with --start).")
@click.option("--start", "start_args", is_flag=True,
              help="Start a pipeline first (arguments after `--` go to `pipeline start`) and stop it afterwards.")
@click.option("--torch-profiler", type=int, default=0, metavar="N",
              help="Ask the inference worker for a torch profiler trace of N iterations, saved in --out.")
@click.option("--no-gpu", is_flag=True, help="Do not use NVML even when a GPU is there.")
@click.option("--no-threads", is_flag=True, help="Skip per-thread CPU (cheaper for processes with many threads).")
@click.option("--no-plots", is_flag=True, help="Skip the PNG plots.")
@click.argument("pipeline_args", nargs=-1, type=click.UNPROCESSED)
def profile(out_dir, interval, seconds, start_args, torch_profiler, no_gpu, no_threads, no_plots, pipeline_args):
    """Sample every worker (CPU, memory, GPU), trace frames, name the bottleneck.

    \b
    pipeline profile --seconds 20 --out prof/            # attach to the running pipeline
    pipeline profile --start --seconds 15 -- --source clip.mp4 --backend compile
    """
    from pipeline.profiling.session import ProfileError, ProfileOptions, Profiler

    if pipeline_args and not start_args:
        _fail(f"unexpected arguments {' '.join(pipeline_args)!r}; pipeline settings need --start "
              f"(`pipeline profile --start -- <pipeline start args>`)")
    if out_dir is None:
        out_dir = f"profile-{time.strftime('%Y%m%d-%H%M%S')}"
    if start_args and seconds is None:
        seconds = DEFAULT_START_SECONDS
    opts = ProfileOptions(Path(out_dir), interval_s=interval, seconds=seconds, per_thread=not no_threads,
                          gpu=not no_gpu, torch_profiler=torch_profiler, plots=not no_plots)
    try:
        opts.validate()  # an unwritable --out fails here, before a pipeline is started or sampled
    except ProfileError as exc:
        _fail(str(exc))
    started = False
    try:
        if start_args:
            _start_pipeline(pipeline_args, opts.out_dir)
            started = True
        try:
            profiler = Profiler(opts)
        except ProfileError as exc:
            _fail(str(exc))
        click.echo(f"profiling every {interval:g} s into {opts.out_dir}"
                   f"{'' if seconds is None else f' for {seconds:g} s'}; {profiler.gpu_note}", err=True)
        old = signal.signal(signal.SIGTERM, lambda *_: profiler.stop())
        try:
            result = profiler.run()
        except ProfileError as exc:
            _fail(str(exc))
        finally:
            signal.signal(signal.SIGTERM, old)
    finally:
        if started:
            _stop_pipeline()
    click.echo(result.summary, nl=False)
    click.echo(f"wrote {', '.join(result.files)} to {result.out_dir}")


def _fail(message: str):
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def _pipeline_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", *args]


def _start_pipeline(args, out_dir: Path) -> None:
    click.echo(f"starting: pipeline start --detach {' '.join(args)}", err=True)
    # The pipeline we start writes its files (the torch trace) into the profile folder: make that
    # its output folder, unless the arguments name another (output_dir=...).
    env = dict(os.environ, POSEPIPE_OUTPUT_DIR=str(Path(out_dir).resolve()))
    proc = subprocess.run(_pipeline_cmd("start", "--detach", *args), capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        _fail(f"could not start the pipeline: {proc.stderr.strip() or proc.stdout.strip()}")


def _stop_pipeline() -> None:
    proc = subprocess.run(_pipeline_cmd("stop"), capture_output=True, text=True, env=dict(os.environ))
    if proc.returncode != 0:
        click.echo(f"warning: `pipeline stop` failed: {proc.stderr.strip()}", err=True)
    else:
        click.echo(proc.stdout.strip(), err=True)


def main(argv=None):
    try:
        profile.main(args=argv, prog_name="profile", standalone_mode=True)
    except KeyboardInterrupt:
        sys.exit(130)
