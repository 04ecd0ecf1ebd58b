"""`pipeline ab start|status|record|stop`: A/B test a worker variant live (architecture.md §4, issue 7).

Lazily registered by `pipeline.cli`; everything goes through the supervisor's control socket.
"""
from __future__ import annotations

import json

import click

from pipeline.cli.main import _request, fail, settings_to_params


@click.group()
def ab():
    """Run variant B of a worker beside A on the same frames and compare them live."""


@ab.command()
@click.argument("worker")
@click.argument("settings", nargs=-1)
@click.option("--timeout", default=330.0, show_default=True, help="Seconds to wait for variant B to be ready.")
def start(worker, settings, timeout):
    """Start variant B: pipeline ab start WORKER key=value ... (e.g. inference precision=fp16)."""
    _, result = _request("ab_start", {"worker": worker, "params": settings_to_params(settings)}, timeout_s=timeout)
    click.echo(f"A/B of {result['worker']}: variant B ({result['variant_b']}) ready after {result['seconds']:.2f} s; "
               f"`pipeline ab status` shows the comparison")


@ab.command()
@click.option("--json", "as_json", is_flag=True, help="Print the raw comparison as JSON.")
def status(as_json):
    """Print the comparison table: throughput, latency p50/p99 of A and B, and their agreement."""
    from pipeline.metrics.ab import format_table

    _, result = _request("ab_status")
    click.echo(json.dumps(result, indent=2) if as_json else format_table(result))


@ab.command()
@click.option("--csv", "csv_path", required=True, type=click.Path(dir_okay=False),
              help="Append one row per variant to this CSV (header when new).")
def record(csv_path):
    """Record the current comparison to a CSV, one row per variant."""
    import os

    _, result = _request("ab_record", {"csv": os.path.abspath(os.path.expanduser(csv_path))})
    value = result.get("value") or {}
    click.echo(f"wrote {len(value.get('rows', []))} rows to {value.get('csv', csv_path)}")


@ab.command()
@click.option("--keep", type=click.Choice(["A", "B"]), default="A", show_default=True,
              help="B: swap the serving worker to B's settings (make-before-break).")
@click.option("--timeout", default=330.0, show_default=True, help="Seconds to wait for the swap with --keep B.")
def stop(keep, timeout):
    """End the A/B test, keeping A (default) or promoting B through the swap path."""
    from pipeline.metrics.ab import format_table

    _, result = _request("ab_stop", {"keep": keep}, timeout_s=timeout)
    if keep == "A":
        click.echo(format_table(result["ab"]))
        click.echo("A/B stopped; A keeps serving")
        return
    click.echo(f"A/B stopped; B promoted: {result['worker']} generation {result['old_generation']} -> "
               f"{result['generation']} ({result['seconds']:.2f} s)")


__all__ = ["ab", "fail"]
