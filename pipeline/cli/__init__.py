"""The `pipeline` command line and what it prints: `main` (start, stop, status, swap, set,
watch, doctor, ...), `ab` (the `pipeline ab` group), `progress` (the live status line and
summaries), `listen` (which addresses servers may bind, `--listen`).

May import everything below it (runtime, config, sinks, metrics, profiling); nothing imports
the CLI. Entry point: `pipeline = pipeline.cli:main`.
"""
from pipeline.cli.main import cli, main

__all__ = ["cli", "main"]
