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

import collections
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

WAIT_SLICE_S = 0.1  # a waiting Output calls `waiting` this often
HOLD_CAP = 3        # inputs held for consumers of one output, at most (older ones are let go)

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
    members: dict = field(default_factory=dict)       # ring name -> RingMember for the `reads` rings

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
    """The worker's view of its output ring: stamps the generation into every record, waits for
    space in lossless mode, holds inputs until consumers have passed the records made from them,
    and tells an on-demand worker when a consumer wants its next record (architecture.md §2)."""

    def __init__(self, ring, generation: int):
        self.ring = ring
        self.generation = generation
        self._writer = ring.writer(generation)
        self._rec = None
        self.written = 0
        self.suppressed = 0
        self.full = False                 # the last begin()/write() found no space (lossless, or all held)
        # Called while waiting for space, every WAIT_SLICE_S; True = give up (the runner: the worker
        # stops). Back-pressure is not a hang: the runner counts the wait as a turn of its loop.
        self.waiting = lambda: False
        self._holds: collections.deque = collections.deque()   # (output seq, member, input seq)
        self.forced_releases = 0          # holds let go before every consumer had passed them
        self._answered = np.zeros(0, np.int64)  # wants already answered by a record (paced sources)

    def may_write(self) -> bool:
        return self._writer.may_write()

    def begin(self, timeout: float | None = None):
        """The next output slot to fill in place, or None while another generation owns the ring
        (`full` False) or when no slot became free in `timeout` s (`full` True; None: wait until
        one is free or the worker stops)."""
        self._rec = self._wait_for_space(self._writer.begin, timeout)
        if self._rec is None and not self.full:
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

    def write(self, record, keep_generation: bool = False, timeout: float | None = None):
        """Copy a whole record; returns its seq, or None when another generation owns the ring
        (or its frame_id is not newer, or no space came free: `full`). `keep_generation`: a relay
        (the publisher) keeps the generation of the worker that produced the record instead of
        stamping its own."""
        if not self._writer.may_write():
            self.suppressed += 1
            return None
        if not keep_generation:
            record["generation"] = self.generation
        seq = self._wait_for_space(lambda t: self._writer.write(record, t), timeout)
        if seq is not None:
            self.written += 1
        elif not self.full:
            self.suppressed += 1
        return seq

    def _wait_for_space(self, attempt, timeout: float | None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self.release_holds()
            now = time.monotonic()
            slice_s = WAIT_SLICE_S if deadline is None else max(0.0, min(WAIT_SLICE_S, deadline - now))
            result = attempt(slice_s)
            self.full = result is None and self._writer.full
            if not self.full or self.waiting() or (deadline is not None and time.monotonic() >= deadline):
                return result

    # ---- holding inputs for the consumers of this output ----------------------------------------
    def hold(self, member, input_seq: int, output_seq: int) -> None:
        """Keep item `input_seq` of another ring (pinned by `member`, this process's entry there)
        until every consumer of this ring has passed record `output_seq`; the pin is ours now.
        Lossless mode needs no holds: every downstream member declares the frames it still needs."""
        if member.backpressure:
            member.unpin(input_seq)
            return
        self._holds.append((output_seq, member, input_seq))
        self.release_holds()

    def release_holds(self, everything: bool = False) -> None:
        if not self._holds:
            return
        taken, done, _ = self.ring.members.consumers()
        while self._holds:
            out_seq, member, in_seq = self._holds[0]
            passed = everything or not len(taken) or bool(np.all((done >= out_seq) | (taken > out_seq)))
            if not passed:
                break
            self._holds.popleft()
            member.unpin(in_seq)
        while len(self._holds) > HOLD_CAP:
            # A consumer much slower than the others (an A/B variant, a swap's new generation):
            # it takes the newest record when it is free, so the old ones are not waited for.
            _, member, in_seq = self._holds.popleft()
            member.unpin(in_seq)
            self.forced_releases += 1

    # ---- demand ----------------------------------------------------------------------------------
    def demand_in(self, lead_ns: int = 0, make_ns: int = 0, after_take: bool = True) -> float | None:
        """Seconds until a consumer wants the next record (0.0: now), None while none has taken
        the newest one yet. No live consumer: 0.0 (nothing to wait for). `lead_ns`: how long the
        next record takes to make, so it is ready when the consumer is (architecture.md §2).
        `make_ns`: our time per record; an idle consumer that is faster than that takes the newest
        record at once, so the next one is started without waiting for its take. `after_take`
        False (a paced source: a consumer reading `latest` wants the freshest item, whatever it
        took last): only the time counts, and each want is answered once."""
        self.release_holds()
        taken, done, want, busy = self.ring.members.consumer_state()
        if not len(taken):
            return 0.0
        if after_take:
            ready = taken >= self.ring.newest_seq()
        else:
            # Each want is answered with one record: a want that has passed while its consumer
            # was still busy asks for nothing more (rendering on would make frames nobody reads).
            ready = ~np.isin(want, self._answered)
        if not ready.any():
            if not after_take:
                return None
            # busy 0: the consumer's time per item is not known yet (first items): not fast
            fast_idle = (done >= taken) & (busy > 0) & (busy < make_ns)
            return 0.0 if make_ns and bool(fast_idle.any()) else None
        now = time.monotonic_ns()
        wait = max(0.0, (int(want[ready].min()) - lead_ns - now) / 1e9)
        if wait == 0.0 and not after_take:
            self._answered = want[ready & (want - lead_ns <= now)]
        return wait

    def wait_for_demand(self, lead_ns: int = 0, make_ns: int = 0, timeout: float = WAIT_SLICE_S,
                        after_take: bool = True, upstream=None, has_input=None) -> bool:
        """Sleep until a consumer wants the next record (True) or `timeout` passes (False).
        `upstream`: our member in our input ring, told when we will want our next input, so an
        on-demand producer upstream (capture of a paced source) makes it just in time.
        `has_input()` True: the input made for our last plan is there; wanted now, it is read
        as it is (a new plan would have a frame made that nobody reads)."""
        deadline = time.monotonic() + timeout
        while True:
            word = self.ring.space_word()
            wait = self.demand_in(lead_ns, make_ns, after_take)
            if wait == 0.0 and has_input is not None and has_input():
                return True
            if upstream is not None:
                upstream.plan(None if wait is None else time.monotonic_ns() + int(wait * 1e9))
            if wait == 0.0:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.ring.wait_space(word, left if wait is None else min(wait, left))


class Worker:
    input: str | None = None
    policy: str = "latest"
    output: str | None = None
    reads: tuple[str, ...] = ()
    # False: process() gets a zero-copy view into the input slot (big frames). The runner's
    # reader claims the slot while process() runs (architecture.md §2); `self.input_valid(item)`
    # still says whether it holds the item (always, unless the pin table could not protect it).
    copy_input: bool = True
    # True: read the next input only when a consumer of our output wants a record (detection runs
    # on the frames inference will take, not on every captured frame).
    on_demand: bool = False
    # With on_demand: wait until a consumer has taken our newest record (False: only until it will
    # look again; a paced source makes a fresh frame for that moment).
    demand_after_take: bool = True
    # The `reads` rings whose items this worker pins by slot (None: all of them); the runner
    # registers a member entry in each, found in `self.ctx.members`.
    hold_reads: tuple[str, ...] | None = None
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
        self.skipped = 0                # items passed over by design (a paced source's frames nobody read)

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

    def demand_lead_ns(self, expected_ms: float) -> int:
        """On demand: how long before a consumer wants our next record we start making it, given
        our p50 time per record. Early by default (1.5 x p50 + 5 ms), so scheduling jitter never
        leaves the consumer waiting; a worker that shares its device with the consumer may start
        later (detection's `lead`), because starting early only makes the two take turns."""
        return int((1.5 * expected_ms + 5.0) * 1e6)

    def info(self) -> dict:
        return {"description": self.description} if self.description else {}

    def hold_input(self, item, output_seq) -> None:
        """Keep the input slot of `item` (read in place) until the consumers of our output have
        passed record `output_seq` made from it: the next stage reads the same pixels."""
        reader = getattr(self.ctx.runner, "reader", None)
        member_for = getattr(reader, "member_for", None)  # several input rings: the item's own
        member = member_for(item) if member_for is not None else getattr(reader, "member", None)
        if member is not None and output_seq is not None and self.out is not None and member.pin_claimed(item.seq):
            self.out.hold(member, item.seq, output_seq)

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


def stretch_to(t0_ns: int, min_ms: float) -> None:
    """Test and benchmark knob (`min_process_ms`): make a process() call that began at `t0_ns`
    last at least `min_ms`, by sleeping the rest, to play a slower detector or model. With
    POSEPIPE_STRETCH_SPIN=1 it computes instead of sleeping (tools/bench_lead.py: stages that
    take turns on one core, as two processes do on one GPU)."""
    if min_ms > 0:
        end = t0_ns / 1e9 + min_ms / 1000.0
        left = end - time.monotonic_ns() / 1e9
        if left > 0 and os.environ.get("POSEPIPE_STRETCH_SPIN") == "1":
            while time.monotonic() < end:
                pass
        elif left > 0:
            time.sleep(left)


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
