"""`pipeline record`: ask the running metrics worker to append one trailing-window row to a CSV.

The CLI group adds it with ``main.add_command(record)``. The request travels as
`set <worker> record=<map>` through the supervisor; the condition is checked here first so a typo
fails before anything is sent, and a relative `--csv` (or the default file name) is resolved
against the directory the command runs in, not the worker's. Without --csv the row goes to the
seed's file name in the run's output folder (`output_dir`: where `pipeline start` ran unless set);
the metrics worker writes nowhere outside that folder (docs/architecture.md §12).
"""
from __future__ import annotations

import os
from pathlib import Path

import click

from pipeline.metrics.seedcsv import CONDITIONS, SEED_COLUMNS, MetricsCsvError, parse_condition

DEFAULT_SECONDS = 5.0


class RecordError(RuntimeError):
    pass


def build_request(condition: str | None, note: str | None, seconds: float, csv_path: str | None,
                  cwd: str | os.PathLike | None = None) -> dict:
    """The `record` map the metrics worker accepts; raises MetricsCsvError/RecordError on bad input."""
    canonical = parse_condition(condition, note)
    if not 0 < seconds <= 60:
        raise RecordError(f"--seconds must be in (0, 60], got {seconds:g}")
    base = Path(cwd or os.getcwd()).resolve()
    req: dict = {"condition": canonical, "seconds": float(seconds)}
    if csv_path:
        path = (base / csv_path).resolve() if not Path(csv_path).is_absolute() else Path(csv_path)
        if not path.parent.is_dir():
            raise MetricsCsvError(f"cannot write metrics CSV {csv_path!r}: directory {str(path.parent)!r} "
                                  "does not exist; create it or choose another --csv")
        req["csv"] = str(path)
    return req


def send_record(request: dict, worker: str = "metrics", endpoint: str | None = None,
                timeout_s: float = 10.0, token: str = "") -> dict:
    """Send the request to the running pipeline (`endpoint` + `token`, default: the current
    run's); returns the worker's reply {path, row}."""
    from pipeline.runtime.control import ControlClient, ControlError
    from pipeline.runtime.rundir import NotRunning, current_run

    if endpoint is None:
        try:
            _, endpoints = current_run()
        except NotRunning as exc:
            raise RecordError(f"cannot record: {exc}") from exc
        endpoint, token = endpoints["router"], endpoints["token"]
    with ControlClient(endpoint, token) as client:
        try:
            result = client.request("set", {"worker": worker, "key": "record", "value": request}, timeout_s)
        except ControlError as exc:
            raise RecordError(f"record failed: {exc}") from exc
    if not isinstance(result, dict) or not isinstance(result.get("value"), dict):
        raise RecordError(f"record: unexpected reply from worker {worker!r}: {result!r}")
    return result["value"]


@click.command("record")
@click.option("--condition", default="Optimal", show_default=True,
              help=f"one of: {', '.join(CONDITIONS)}; free text as 'Custom:<text>'")
@click.option("--note", default=None, help="free text for --condition Custom")
@click.option("--seconds", type=float, default=DEFAULT_SECONDS, show_default=True,
              help="trailing window to average")
@click.option("--csv", "csv_path", default=None,
              help="CSV to append to, inside the run's output folder (default: pocolib_demo_metrics_avg.csv "
                   "for trt, pocolib_demo_no_trt_metrics_avg.csv otherwise, in that folder: output_dir, "
                   "where `pipeline start` ran unless set)")
@click.option("--worker", default="metrics", show_default=True, help="name of the metrics worker")
def record(condition, note, seconds, csv_path, worker):
    """Append one row of trailing-window averages to the seed-compatible metrics CSV."""
    try:
        req = build_request(condition, note, seconds, csv_path)
        reply = send_record(req, worker)
    except (MetricsCsvError, RecordError) as exc:
        raise click.ClickException(str(exc)) from exc
    row = reply.get("row", {})
    click.echo(f"appended to {reply.get('path')}")
    for col in SEED_COLUMNS:
        if col in row:
            click.echo(f"  {col}: {row[col]}")
