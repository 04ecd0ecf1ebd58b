"""The head: place the pipelines as Ray actors, follow them, merge their poses, stop them.

What Ray does and we do not: placement (actor resources, SPREAD over nodes), node health and
restarting a dead pipeline (`max_restarts`; the actor's constructor starts its pipeline again).
What the head does: ask every actor for its status about once a second, point the merger at
the native stream each pipeline reports (a restarted pipeline reports a new one), show and
write the per-node status, and at the end stop every pipeline in order.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import time
from dataclasses import dataclass, field

from pipeline.client import DEFAULT_ENDPOINT
from pipeline.scaleout import RayUnavailable, require_ray
from pipeline.scaleout.plan import PipelinePlan, node_config, pipeline_count, plan

log = logging.getLogger(__name__)

STATUS_PERIOD_S = 1.0
STATUS_FILE = "ray-head.json"


@dataclass
class HeadOptions:
    address: str = "local"
    pipelines: int | None = None        # default: one per GPU, else one per `cpus_per_pipeline` CPUs
    cpus_per_pipeline: int = 2
    sources: tuple = ()                 # "SPEC" or "PIPELINE=SPEC"
    max_restarts: int = 5               # Ray's actor restarts per pipeline (-1: no limit)
    seconds: float | None = None
    record: str | None = None           # PATH.npz: one recording per stream at the head
    start_timeout: float = 300.0
    temp_dir: str | None = None         # a local head's temp folder (default: a private one)
    num_cpus: int | None = None         # a local head's CPUs (default: Ray's count)


@dataclass
class Tracked:
    plan: PipelinePlan
    actor: object
    row: dict = field(default_factory=dict)
    pending: object = None
    asked_at: float = 0.0
    actor_pids: list = field(default_factory=list)
    dead: bool = False
    first_frame_s: float | None = None


class Head:
    def __init__(self, raw: dict, opts: HeadOptions, on_tick=None):
        self.raw = raw
        self.opts = opts
        self.on_tick = on_tick
        self.cluster = None
        self.merger = None
        self.tracked: dict[str, Tracked] = {}
        self.t0 = time.monotonic()
        self.timings: dict[str, float] = {}
        self.stop_reason = ""
        self._stop = False
        self._next_tick = 0.0

    # -- start ---------------------------------------------------------------------------
    def start(self) -> None:
        from pipeline.scaleout.cluster import connect
        from pipeline.scaleout.merge import Merger

        # connect() first: a local head sets Ray's environment before Ray is imported.
        self.cluster = connect(self.opts.address, num_cpus=self.opts.num_cpus, temp_dir=self.opts.temp_dir)
        ray = require_ray()
        self.timings["connect_s"] = time.monotonic() - self.t0
        resources = ray.cluster_resources()
        count = pipeline_count(resources, self.opts.cpus_per_pipeline, self.opts.pipelines)
        gpus = 1.0 if resources.get("GPU", 0) >= 1 else 0.0
        plans = plan(count, self.opts.sources, gpus_per_pipeline=gpus, cpus_per_pipeline=self.opts.cpus_per_pipeline)
        configs = {p.name: node_config(self.raw, p) for p in plans}
        endpoint = ((self.raw.get("sinks") or {}).get("native") or {}).get("endpoint", DEFAULT_ENDPOINT)
        self.merger = Merger(endpoint, record_path=self.opts.record)
        self._create_actors(ray, plans, configs)
        self.timings["placed_s"] = time.monotonic() - self.t0

    def _create_actors(self, ray, plans, configs) -> None:
        from pipeline.scaleout.node import NodePipeline

        actor_class = ray.remote(NodePipeline)
        env = {k: v for k, v in os.environ.items() if k.startswith("POSEPIPE_")}
        for p in plans:
            try:
                actor = actor_class.options(
                    name=f"posepipe-{p.name}", num_cpus=p.num_cpus, num_gpus=p.num_gpus,
                    max_restarts=self.opts.max_restarts, max_task_retries=0,
                    scheduling_strategy="SPREAD").remote(p.name, configs[p.name], env)
            except ValueError as exc:  # a name already taken: another head on this cluster
                raise RayUnavailable(f"cannot place pipeline {p.name}: {exc}; is another posepipe head "
                                     f"running on this cluster?") from exc
            self.tracked[p.name] = Tracked(p, actor)

    def wait_running(self) -> None:
        """Until every pipeline runs and has published (start_timeout), else RayUnavailable."""
        deadline = time.monotonic() + self.opts.start_timeout
        while not self._stop:
            self.step(0.1)
            waiting = [t.plan.name for t in self.tracked.values() if t.row.get("state") != "running"
                       or t.first_frame_s is None]
            dead = [t for t in self.tracked.values() if t.dead]
            if dead:  # Ray's restarts used up before the first frame: the config or the node is wrong
                raise RayUnavailable("; ".join(f"pipeline {t.plan.name}: {t.row.get('error') or 'died'}"
                                               for t in dead))
            if not waiting:
                self.timings["running_s"] = time.monotonic() - self.t0
                return
            if time.monotonic() > deadline:
                first = next(iter(self.tracked.values())).plan
                states = ", ".join(f"{n}={t.row.get('state', 'placing')}" for n, t in self.tracked.items())
                raise RayUnavailable(
                    f"pipelines {', '.join(waiting)} did not publish within {self.opts.start_timeout:g} s "
                    f"(each asks Ray for {first.num_cpus:g} CPU and {first.num_gpus:g} GPU: the cluster may "
                    f"lack them; states: {states})")

    # -- run -------------------------------------------------------------------------------
    def run(self) -> None:
        """Merge and follow until --seconds, a signal, or every pipeline is gone for good."""
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while not self._stop:
                self.step(0.05)
                if self.opts.seconds is not None and time.monotonic() - self.t0 >= self.opts.seconds:
                    self.request_stop(f"--seconds {self.opts.seconds:g} elapsed")
                if self.tracked and all(t.dead for t in self.tracked.values()):
                    self.request_stop("every pipeline is gone (Ray's restarts used up)")
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def request_stop(self, reason: str) -> None:
        if not self._stop:
            self._stop = True
            self.stop_reason = reason
            log.info("stopping: %s", reason)

    def _on_signal(self, signum, _frame):
        self.request_stop(signal.Signals(signum).name)

    def step(self, timeout_s: float) -> None:
        self.merger.pump(timeout_s)
        self._poll_actors()
        # Frame counts only: the full stream_stats() (windows, sorted latencies) is for status().
        for name, state in self.merger.streams.items():
            t = self.tracked.get(name.split("/", 1)[0])
            if t is not None and t.first_frame_s is None and state.frames:
                t.first_frame_s = time.monotonic() - self.t0
        now = time.monotonic()
        if now >= self._next_tick:
            self._next_tick = now + STATUS_PERIOD_S
            status = self.status()
            self._write_status(status)
            if self.on_tick is not None:
                self.on_tick(status)

    def _poll_actors(self) -> None:
        ray = require_ray()
        from ray.exceptions import (
            ActorDiedError,
            GetTimeoutError,
            RayActorError,
            RayError,
        )

        now = time.monotonic()
        for t in self.tracked.values():
            if t.dead:
                continue
            if t.pending is None:
                if now - t.asked_at >= STATUS_PERIOD_S:
                    t.pending, t.asked_at = t.actor.status.remote(), now
                continue
            ready, _ = ray.wait([t.pending], timeout=0)
            if not ready:
                if now - t.asked_at > 10 * STATUS_PERIOD_S:
                    t.row["state"] = "no answer"
                continue
            ref, t.pending = t.pending, None
            try:
                row = ray.get(ref, timeout=1.0)
            except ActorDiedError as exc:
                # Ray gave up on this actor (restarts used up, or its node is gone for good); the
                # last error the pipeline reported says why, Ray's own message says what happened.
                t.dead = True
                last = t.row.get("error") if t.row.get("state") == "exited" else ""
                t.row.update(state="dead", error="; ".join(filter(None, [last, str(exc).splitlines()[0][:200]])))
                self.merger.forget(t.plan.name)
                continue
            except (RayActorError, GetTimeoutError) as exc:
                # The actor is down and Ray is restarting it (or the call raced the restart).
                t.row.update(state="restarting")
                log.debug("pipeline %s: %s", t.plan.name, type(exc).__name__)
                continue
            except RayError as exc:  # status() itself failed: show it, ask again next period
                t.row.update(state="error", error=str(exc).splitlines()[0][:200])
                continue
            self._take_row(t, row)

    def _take_row(self, t: Tracked, row: dict) -> None:
        if not t.actor_pids or t.actor_pids[-1] != row["actor_pid"]:
            t.actor_pids.append(row["actor_pid"])
        t.row = row
        if "actors_s" not in self.timings and all(x.row.get("actor_pid") for x in self.tracked.values()):
            self.timings["actors_s"] = time.monotonic() - self.t0  # every actor constructed (Ray worker up)
        if row.get("endpoint") and row.get("state") == "running":
            self.merger.follow(t.plan.name, row["endpoint"], row["node_ip"], row.get("run_id"))

    # -- status ----------------------------------------------------------------------------
    def status(self) -> dict:
        streams = self.merger.stream_stats() if self.merger else {}
        rows = []
        for name, t in self.tracked.items():
            r = t.row
            mine = {s: v for s, v in streams.items() if s == name or s.startswith(name + "/")}
            rows.append({"pipeline": name, "node": r.get("node_ip"), "state": r.get("state", "placing"),
                         "sources": [str(s) for s in t.plan.sources] or [str(r.get("source", ""))],
                         "actor_pid": r.get("actor_pid"), "ray_restarts": max(0, len(t.actor_pids) - 1),
                         "worker_restarts": r.get("worker_restarts", 0), "node_fps": r.get("fps", 0.0),
                         "merged_fps": sum(v["fps"] for v in mine.values()),
                         "frames": sum(v["frames"] for v in mine.values()),
                         "node_latency_p50_ms": next((v["node_latency_p50_ms"] for v in mine.values()), None),
                         "endpoint": r.get("endpoint"), "error": r.get("error", "")})
        return {"head_pid": os.getpid(), "cluster": self.cluster.address if self.cluster else None,
                "auth": self.cluster.auth if self.cluster else None, "local": bool(self.cluster and self.cluster.local),
                "uptime_s": round(time.monotonic() - self.t0, 1),
                "merged_endpoint": self.merger.endpoint if self.merger else None,
                "merged_fps": round(sum(v["fps"] for v in streams.values()), 2),
                "sent": self.merger.sent if self.merger else 0,
                "pipelines": rows, "streams": streams, "timings": {k: round(v, 2) for k, v in self.timings.items()}}

    def _write_status(self, status: dict) -> None:
        from pipeline.runtime import rundir

        try:
            rundir.replace_private(rundir.base_dir() / STATUS_FILE, json.dumps(status))
        except (OSError, rundir.RuntimeDirError) as exc:
            log.debug("could not write the head status: %s", exc)

    # -- stop ------------------------------------------------------------------------------
    def close(self, timeout_s: float = 30.0) -> dict:
        """Stop every pipeline (in parallel), then the merger and, for a local head, Ray itself."""
        results = {}
        ray = require_ray()
        from ray.exceptions import RayError

        try:
            if ray.is_initialized() and self.tracked:
                refs = {n: t.actor.stop.remote() for n, t in self.tracked.items() if not t.dead}
                for name, ref in refs.items():
                    try:
                        results[name] = ray.get(ref, timeout=timeout_s)
                    except RayError as exc:  # a dead or hung actor (GetTimeoutError too): the kill below ends it
                        results[name] = {"name": name, "exit_code": None, "clean": False, "error": str(exc)[:200]}
                for t in self.tracked.values():
                    try:
                        ray.kill(t.actor, no_restart=True)
                    except (RayError, ValueError) as exc:  # already gone
                        log.debug("kill %s: %s", t.plan.name, exc)
        finally:
            if self.merger is not None:
                self.merger.close()
            if self.cluster is not None:
                self.cluster.close()
            self._remove_status()
        return results

    def _remove_status(self) -> None:
        from pipeline.runtime import rundir

        try:
            path = rundir.base_dir() / STATUS_FILE
            if json.loads(path.read_text()).get("head_pid") == os.getpid():
                path.unlink()
        except (OSError, ValueError, rundir.RuntimeDirError):
            pass
