"""Metrics library (architecture.md §10): per-frame quantities, trailing windows, the seed CSV, Prometheus.

Light to import: numpy only; prometheus_client is imported by `pipeline.metrics.prometheus`.

Also the A/B comparison of two pose variants (`ab`).
May import: numpy, `pipeline.pose`, `pipeline.runtime` (records, control).
"""
from pipeline.metrics.engine import MetricsEngine, RecordResult, format_summary
from pipeline.metrics.quantities import FrameMeasurer, FrameQuantities
from pipeline.metrics.seedcsv import (CONDITIONS, HEADER, SEED_COLUMNS, MetricsCsvError, append_row, build_row,
                                      default_csv_name, parse_condition)
from pipeline.metrics.window import TrailingWindow, WindowSummary, WorkerStats

__all__ = [
    "CONDITIONS", "HEADER", "SEED_COLUMNS", "FrameMeasurer", "FrameQuantities", "MetricsCsvError", "MetricsEngine",
    "RecordResult", "TrailingWindow", "WindowSummary", "WorkerStats", "append_row", "build_row",
    "default_csv_name", "format_summary", "parse_condition",
]
