"""Prometheus text endpoint for the live numbers (architecture.md §10), on its own CollectorRegistry.

Binds 127.0.0.1:9100 by default. Heartbeat counters are cumulative per worker process; the
exporter turns them into monotonically increasing Prometheus counters by adding the growth since
the previous heartbeat (a restarted worker, whose counters start at 0 again, adds its new count).
"""
from __future__ import annotations

import errno
import logging
import math

from pipeline.metrics.percentiles import STAGE_SPANS
from pipeline.metrics.quantities import FrameQuantities
from pipeline.metrics.window import WorkerStats

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9100
PORT_CONFIG_KEY = "metrics.prometheus_port"
# Seconds; spans from sub-millisecond ring hand-offs to a slow CPU inference.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class PrometheusPortInUse(RuntimeError):
    pass


class PrometheusExporter:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.fps = Gauge("posepipe_fps", "Frames published per second over the trailing window", registry=r)
        self.persons = Gauge("posepipe_persons", "Persons in the newest published frame", registry=r)
        self.untrained = Gauge("posepipe_untrained", "1 when the model runs random-initialised weights", registry=r)
        self.published = Counter("posepipe_frames_published", "Published frames seen by the metrics worker", registry=r)
        self.missed = Counter("posepipe_metrics_missed_records",
                              "Published records the metrics reader lost (it fell behind)", registry=r)
        self.latency = Histogram("posepipe_stage_latency_seconds", "Per-frame latency of one pipeline stage span",
                                 ["stage"], buckets=LATENCY_BUCKETS, registry=r)
        self.worker_frames = Counter("posepipe_worker_frames", "Frames a worker produced", ["worker"], registry=r)
        self.worker_drops = Counter("posepipe_worker_drops", "Frames a worker dropped or lost to overruns",
                                    ["worker"], registry=r)
        self.worker_skipped = Counter("posepipe_worker_skipped", "Frames a worker passed over by design "
                                      "(newest frame wins; not lost)", ["worker"], registry=r)
        self.worker_fps = Gauge("posepipe_worker_fps", "Worker throughput from its heartbeat", ["worker"], registry=r)
        self.worker_cpu = Gauge("posepipe_worker_cpu_percent", "Worker CPU %", ["worker"], registry=r)
        self.worker_rss = Gauge("posepipe_worker_rss_bytes", "Worker resident memory", ["worker"], registry=r)
        self.gpu_util = Gauge("posepipe_gpu_util_percent", "GPU utilisation reported by a worker", ["worker"], registry=r)
        self.gpu_mem = Gauge("posepipe_gpu_memory_bytes", "GPU memory reported by a worker", ["worker"], registry=r)
        for stage in STAGE_SPANS:
            self.latency.labels(stage=stage)  # every stage shows up, even before its first frame
        self._last_counts: dict[str, tuple[int, int, int]] = {}
        self._server = None
        self._thread = None

    # -- feeding -------------------------------------------------------------------------------
    def observe_frame(self, q: FrameQuantities) -> None:
        self.published.inc()
        if q.missed:
            self.missed.inc(q.missed)
        self.persons.set(q.persons)
        self.untrained.set(1 if q.untrained else 0)
        for stage, ms in q.stage_ms.items():
            if math.isfinite(ms):
                self.latency.labels(stage=stage).observe(ms / 1000.0)

    def set_fps(self, fps: float) -> None:
        self.fps.set(fps if math.isfinite(fps) else 0.0)

    def observe_worker(self, name: str, st: WorkerStats) -> None:
        counts = (st.frames_out, st.drops + st.overruns, st.skipped)
        last = self._last_counts.get(name, (0, 0, 0))
        for counter, now, before in zip((self.worker_frames, self.worker_drops, self.worker_skipped), counts, last):
            counter.labels(worker=name).inc(now - before if now >= before else now)  # restarted: from 0
        self._last_counts[name] = counts
        for gauge, value in ((self.worker_fps, st.fps), (self.worker_cpu, st.cpu_percent),
                             (self.worker_rss, st.rss_bytes), (self.gpu_util, st.gpu_util_percent),
                             (self.gpu_mem, st.gpu_mem_bytes)):
            if math.isfinite(value):
                gauge.labels(worker=name).set(value)

    # -- serving -------------------------------------------------------------------------------
    def text(self) -> str:
        from prometheus_client import generate_latest
        return generate_latest(self.registry).decode()

    def serve(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> int:
        """Start the HTTP endpoint in a daemon thread; returns the bound port (0 picks a free one)."""
        from prometheus_client import start_http_server

        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise ValueError(f"{PORT_CONFIG_KEY} must be an integer port in 0..65535, got {port!r}")
        if host == "0.0.0.0":
            log.warning("Prometheus endpoint bound to all interfaces (0.0.0.0) as configured")
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PrometheusPortInUse(
                    f"Prometheus port {host}:{port} is already in use (another pipeline or exporter?); "
                    f"set {PORT_CONFIG_KEY} to a free port (e.g. {PORT_CONFIG_KEY}={port + 1}) "
                    "or stop the other process") from exc
            raise
        bound = self._server.server_address[1]
        log.info("Prometheus metrics on http://%s:%d/metrics", host, bound)
        return bound

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
