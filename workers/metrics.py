"""Metrics worker (architecture.md §10): every published frame in, seed CSV rows, Prometheus and live numbers out.

Reads the `published` ring with policy `next` (the runner counts records lost when it falls
behind; each frame's `overwritten_before` also cuts the change-metric chain). Other workers'
heartbeat stats come from the supervisor's `status`, polled by a background thread on its own
control socket and handed to the main loop through a queue.

Recording: `pipeline record` arrives as `set metrics record=<dict>` (condition, seconds, csv,
note, directory); the reply is the row written. Console summary every `summary_every_s` while
frames flow, a final one at stop.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

from pipeline.metrics.engine import MetricsEngine, format_summary
from pipeline.metrics.streams import combine_stream_workers
from pipeline.pose.frame import from_record
from pipeline.runtime.worker import SettingError, Worker, WorkerError

log = logging.getLogger(__name__)

RECORD_KEYS = {"condition", "seconds", "csv", "note", "directory"}


@dataclass
class Params:
    prometheus: bool = True
    prometheus_host: str = "127.0.0.1"
    prometheus_port: int = 9100
    window_s: float = 5.0
    summary_every_s: float = 10.0
    live_every_s: float = 0.5
    stats_poll_s: float = 1.0       # 0 disables polling other workers' stats
    dump_frames: str = ""           # per-frame stamp CSV for tools/plot_metrics.py run ("" = off)


class MetricsWorker(Worker):
    input = "published"
    policy = "next"
    output = None
    Params = Params
    description = "seed CSV, per-stage latency, Prometheus"

    def setup(self) -> None:
        p = self.params
        if not (isinstance(p.window_s, (int, float)) and 0 < p.window_s <= 60):
            raise WorkerError(f"workers.metrics.params.window_s must be in (0, 60] seconds, got {p.window_s!r}")
        exporter = dump = None
        if p.prometheus:
            from pipeline.metrics.prometheus import PrometheusExporter

            exporter = PrometheusExporter()
            exporter.serve(p.prometheus_host, p.prometheus_port)
        if p.dump_frames:
            from pipeline.metrics.dump import FrameDump

            dump = FrameDump(p.dump_frames)
        self.exporter = exporter
        self.engine = MetricsEngine(max_window_s=60.0, exporter=exporter, dump=dump)
        self._stats_q: queue.Queue = queue.Queue(maxsize=8)
        self._poll_stop = threading.Event()
        self._poller = None
        access = self.ctx.control_access()
        if p.stats_poll_s > 0 and access:
            self._poller = threading.Thread(target=self._poll_stats, args=access, name="stats-poll",
                                            daemon=True)
            self._poller.start()
        now = time.monotonic()
        self._next_summary = now + p.summary_every_s
        self._next_live = now

    def process(self, item):
        frame = from_record(item.record, self.ctx.shared.get("streams"))
        self.engine.observe(frame, missed=item.overwritten_before)
        self._drain_stats()
        now = time.monotonic()
        if now >= self._next_live:
            self._next_live = now + self.params.live_every_s
            self.extras.update(self.engine.live(self.params.window_s))
        if self.params.summary_every_s > 0 and now >= self._next_summary:
            self._next_summary = now + self.params.summary_every_s
            self.log.info("%s", format_summary(self.engine.summary(self.params.window_s)))
        return None

    def on_set(self, key: str, value) -> Any:
        if key != "record":
            raise SettingError(f"worker {self.name!r} has no live setting {key!r}; known: record")
        args = value if isinstance(value, dict) else {}
        if not isinstance(value, dict):
            raise SettingError("record needs a map of condition, seconds, csv, note, directory")
        unknown = set(args) - RECORD_KEYS
        if unknown:
            raise SettingError(f"record: unknown field(s) {sorted(unknown)}; known: {sorted(RECORD_KEYS)}")
        seconds = args.get("seconds", self.params.window_s)
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds <= 60:
            raise SettingError(f"record: seconds must be a number in (0, 60], got {seconds!r}")
        for k in ("condition", "csv", "note", "directory"):
            if args.get(k) is not None and not isinstance(args[k], str):
                raise SettingError(f"record: {k} must be text, got {type(args[k]).__name__}")
        # Only inside the run's output folder (the default place when none is named).
        csv = self.ctx.output_path(args["csv"], "record: csv", suffix=".csv") if args.get("csv") else None
        directory = self.ctx.output_path(args.get("directory") or ".", "record: directory")
        self._drain_stats()
        result = self.engine.record(args.get("condition"), float(seconds), csv_path=csv,
                                    note=args.get("note"), directory=directory)
        return result.as_dict()

    def stop(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is None:
            return
        self._poll_stop.set()
        s = engine.summary(self.params.window_s)
        self.log.info("final: %s | %d frames seen, %d records missed in total",
                      format_summary(s), engine.window.frames_total, engine.window.missed_total)
        if engine.dump is not None:
            engine.dump.close()
        if self.exporter is not None:
            self.exporter.close()
        if self._poller is not None:
            self._poller.join(timeout=2.0)

    def info(self) -> dict:
        return {"description": self.description,
                "prometheus": (f"http://{self.params.prometheus_host}:{self.params.prometheus_port}/metrics"
                               if self.params.prometheus else "off")}

    # -- other workers' stats ------------------------------------------------------------------
    def _poll_stats(self, endpoint: str, token: str) -> None:
        from pipeline.runtime.control import ControlClient, ControlError

        warned = False
        with ControlClient(endpoint, token) as client:
            while not self._poll_stop.wait(self.params.stats_poll_s):
                try:
                    status = client.request("status", timeout_s=2.0)
                except ControlError as exc:
                    if not warned:
                        log.warning("cannot read worker stats from the supervisor: %s", exc)
                        warned = True
                    continue
                workers = status.get("workers") if isinstance(status, dict) else None
                if not isinstance(workers, list):
                    continue
                stamp = time.monotonic_ns()
                try:
                    self._stats_q.put_nowait((stamp, workers))
                except queue.Full:
                    pass  # the main loop is busy; the next poll carries newer numbers

    def _drain_stats(self) -> None:
        while True:
            try:
                stamp, workers = self._stats_q.get_nowait()
            except queue.Empty:
                return
            for w in combine_stream_workers(workers):  # capture.<stream> rows also as one `capture`
                if isinstance(w, dict) and isinstance(w.get("name"), str):
                    try:
                        self.engine.update_worker(w["name"], w, t_ns=stamp)
                    except (TypeError, ValueError) as exc:
                        log.debug("ignored stats of %s: %s", w.get("name"), exc)
