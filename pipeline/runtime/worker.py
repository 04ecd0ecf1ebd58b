"""The Worker base class: what a pipeline stage implements (architecture.md §5).

A worker module contains only its job. The shared runner (`pipeline/runtime/runner.py`) owns the
rest: attaching rings, the control link, heartbeats and stats, signals, pause/resume/stop,
parent-death detection and the clean exit.

Adding a stage
--------------
1. Write ``workers/<name>.py`` with one `Worker` subclass (keep heavy imports — torch,
   ultralytics, mediapipe, ... — inside `setup()`; the module is imported by the CLI to
   validate the config, so its top level must stay light)::

       @dataclass
       class Params:                   # validated from `workers.<name>.params` in the YAML
           threshold: float = 0.5

       class MyWorker(Worker):
           input = "frames"            # ring to read (None: a source, process(None) is called in a loop)
           policy = "latest"           # "latest" (newest item, skip the rest) or "next" (every item)
           output = "detections"       # ring to write, or None
           reads = ()                  # further rings attached for random access by slot
           Params = Params

           def setup(self): ...        # load models; may call self.progress("loading ...")
           def process(self, item):    # item: ReadItem(seq, slot, record, overwritten_before)
               rec = self.out.begin()  # write in place into the output slot ...
               ...
               self.out.commit()
               return WROTE            # ... or `return record` to have it copied, or None
           def stop(self): ...
           def pending(self) / flush(self):    # optional: a pipelined process() may hold back a
                                               # finished item; flush() writes it (see below)
           def on_set(self, key, value): ...   # `pipeline set <name> key=value`
           def info(self) -> dict: ...         # shown by `pipeline status`

2. Add it under ``workers:`` in the config with ``module: workers.<name>``. The supervisor
   creates the rings, starts it in data-flow order and restarts it by its policy.

Every record written through `self.out` is stamped with this worker's generation.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

@dataclass(frozen=True)
class Wrote:
    """Returned by process()/flush() after writing `count` records in place (0 or more)."""
    count: int


WROTE = Wrote(1)  # returned by process() after writing one record in place through self.out


class WorkerError(RuntimeError):
    """A worker cannot run (bad source, missing weights, ...); the message says how to fix it."""


class SettingError(ValueError):
    """A live setting (`pipeline set`) was rejected; the message names the allowed values."""


@dataclass
class NoParams:
    pass


@dataclass
class WorkerContext:
    name: str
    generation: int
    rings: dict = field(default_factory=dict)        # ring name -> attached Ring
    shared: dict = field(default_factory=dict)       # pipeline-wide settings: source, sinks, max_persons
    runner: Any = None                                # the runner, for progress/finish/events

    @property
    def data_dir(self) -> Path:
        """The pipeline's one data folder (absolute; the config resolves it, docs/architecture.md §11)."""
        from pipeline.config import default_data_dir

        return Path(self.shared["data_dir"]) if self.shared.get("data_dir") else default_data_dir()

    def output_path(self, path, what: str, suffix: str | None = None) -> Path:
        """`path` (absolute, or relative to the output folder) if it lies inside the run's output
        folder, else SettingError naming it and the fix. Every file a control command makes a worker
        write goes through here (docs/architecture.md §12): a command can never pick another place."""
        from pipeline.config import default_output_dir

        root = Path(self.shared["output_dir"]) if self.shared.get("output_dir") else default_output_dir()
        root = root.resolve()
        if not isinstance(path, (str, os.PathLike)) or not str(path):
            raise SettingError(f"{what} must be a path, got {path!r}")
        target = (root / Path(path).expanduser()).resolve()  # links are followed: one pointing out is out
        if target != root and root not in target.parents:
            raise SettingError(f"{what} {str(path)!r} is outside the run's output folder {root}; write below it, "
                               f"or start the pipeline with output_dir=<folder>")
        if suffix is not None and target.suffix.lower() != suffix:
            raise SettingError(f"{what} {str(path)!r} must be a {suffix} file")
        return target

    def control_access(self) -> tuple[str, str] | None:
        """(endpoint, token) of the supervisor's control socket, for a worker that sends it
        requests (metrics polls `status`, the publisher's sinks ask for `record`/`stop`)."""
        spec = getattr(self.runner, "spec", None)
        if not isinstance(spec, dict) or not spec.get("control"):
            return None
        return spec["control"], getattr(self.runner, "control_token", "")


class Output:
    """The worker's view of its output ring: stamps the generation into every record."""

    def __init__(self, ring, generation: int):
        self.ring = ring
        self.generation = generation
        self._writer = ring.writer(generation)
        self._rec = None
        self.written = 0
        self.suppressed = 0

    def may_write(self) -> bool:
        return self._writer.may_write()

    def begin(self):
        """The next output slot to fill in place, or None while another generation owns the ring."""
        self._rec = self._writer.begin()
        if self._rec is None:
            self.suppressed += 1
        return self._rec

    def commit(self):
        """Publish the slot from begin(); returns its seq, or None when its frame_id was not new."""
        self._rec["generation"] = self.generation
        self._rec = None
        seq = self._writer.commit()
        if seq is not None:
            self.written += 1
        return seq

    def abort(self) -> None:
        """Give up the slot from begin() (e.g. its input was overwritten meanwhile)."""
        self._rec = None
        self._writer.abort()

    def write(self, record, keep_generation: bool = False):
        """Copy a whole record; returns its seq, or None when another generation owns the ring
        (or its frame_id is not newer). `keep_generation`: a relay (the publisher) keeps the
        generation of the worker that produced the record instead of stamping its own."""
        if not self._writer.may_write():
            self.suppressed += 1
            return None
        if not keep_generation:
            record["generation"] = self.generation
        seq = self._writer.write(record)
        if seq is not None:
            self.written += 1
        else:
            self.suppressed += 1
        return seq


class Worker:
    input: str | None = None
    policy: str = "latest"
    output: str | None = None
    reads: tuple[str, ...] = ()
    # False: process() gets a zero-copy view into the input slot (big frames) and must check
    # `self.input_valid(item)` after using it, because the writer may overwrite the slot.
    copy_input: bool = True
    Params = NoParams
    # Heartbeat/status label, e.g. "stand-in, replaced by the detection/inference issue".
    description: str = ""
    # What the worker's threads do, for the CPU budget (pipeline/runtime/cpu.py): "model"
    # (gets the most), "detector", "decoder" or "light" (one thread).
    cpu_role: str = "light"

    def __init__(self, params, ctx: WorkerContext):
        self.params = params
        self.ctx = ctx
        self.name = ctx.name
        self.generation = ctx.generation
        self.log = logging.getLogger(f"workers.{ctx.name}")
        self.out: Output | None = None
        self.rings = ctx.rings
        self.extras: dict = {}          # free-form numbers reported in every heartbeat
        # A worker on a GPU sets this (profiling.device_stats.DeviceStats): its sample() joins
        # every heartbeat, so GPU numbers stay current while the worker waits for input.
        self.device_stats = None
        self.drops = 0                  # items this worker chose to drop (e.g. stale frame ref)

    def setup(self) -> None:
        pass

    def process(self, item):
        raise NotImplementedError(f"worker {self.name} does not implement process()")

    def stop(self) -> None:
        pass

    def pending(self) -> bool:
        """True while a pipelined process() holds an item whose output is not written yet (e.g.
        the GPU is still on it while the next item is prepared)."""
        return False

    def flush(self):
        """Write what process() held back. The runner calls it when no new input is waiting,
        before pausing and before stopping, so holding back never delays an output for longer
        than the next read. Returns like process()."""
        return None

    def on_set(self, key: str, value) -> Any:
        raise SettingError(f"worker {self.name!r} has no live setting {key!r}")

    def info(self) -> dict:
        return {"description": self.description} if self.description else {}

    def input_valid(self, item) -> bool:
        """For copy_input = False: True while the input slot still holds item (seqlock re-check)."""
        reader = getattr(self.ctx.runner, "reader", None)
        return reader is None or reader.valid(item)

    # Helpers that talk to the supervisor through the runner.
    def progress(self, message: str) -> None:
        """Tell the supervisor (and the user) what a slow setup is doing."""
        if self.ctx.runner is not None:
            self.ctx.runner.event("progress", worker=self.name, message=message)

    def finish(self, reason: str) -> None:
        """The input is exhausted (end of a file): ask the supervisor to stop the pipeline."""
        if self.ctx.runner is not None:
            self.ctx.runner.finish(reason)


def find_worker_class(module) -> type[Worker]:
    """The Worker subclass a module defines (module attribute WORKER wins if present)."""
    explicit = getattr(module, "WORKER", None)
    if isinstance(explicit, type) and issubclass(explicit, Worker):
        return explicit
    found = [obj for obj in vars(module).values()
             if isinstance(obj, type) and issubclass(obj, Worker) and obj is not Worker
             and obj.__module__ == module.__name__]
    if len(found) != 1:
        raise WorkerError(f"module {module.__name__} must define exactly one Worker subclass "
                          f"(found {len(found)}); set WORKER = <class> to choose")
    return found[0]
