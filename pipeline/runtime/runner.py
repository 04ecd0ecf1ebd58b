"""The one loop every worker runs in (architecture.md §5): ``python -m pipeline.runtime.runner '<spec json>'``.

The supervisor starts each worker as a fresh interpreter (never a fork of itself) with a
JSON spec: name, module, generation, control endpoint, parent pid, ring names, params and
pipeline-wide settings. The runner then

1. arms parent-death detection (PR_SET_PDEATHSIG + polling getppid) and SIGTERM/SIGINT,
2. connects the control DEALER and says `hello`,
3. attaches the rings (never creates or unlinks them), builds the worker, calls `setup()`,
4. says `ready` and loops: wait on the input ring (futex, no spinning), `process()`, write,
5. on `stop`/signal/parent death: `worker.stop()`, `bye`, close rings, exit.

A control thread owns the DEALER: it sends a heartbeat with stats every 0.5 s (also while a
slow `process()` or `setup()` runs), answers `stop` at once and queues `set`/`pause`/`resume`
for the main loop so a worker never sees two threads. Exit codes: 0 clean, 1 crash in
`process()`, EXIT_SETUP (78) when the worker could not start (bad source, missing weights).
"""
from __future__ import annotations

import collections
import ctypes
import importlib
import json
import logging
import os
import queue
import signal
import sys
import threading
import time

import numpy as np

from pipeline.runtime.messages import Bye, Command, Event, Heartbeat, Hello, Ready, Reply, Stats
from pipeline.runtime.worker import Output, SettingError, WorkerContext, Wrote, find_worker_class

log = logging.getLogger(__name__)

_CRASHED = object()  # what Runner._step returns when process()/flush() raised
EXIT_SETUP = 78
HEARTBEAT_S = 0.5
PARENT_GONE_GRACE_S = 1.0
SPEC_KEYS = {"name", "module", "generation", "control", "parent_pid", "rings", "input", "policy",
             "output", "reads", "params", "shared"}
# Optional: "inputs" (several input rings, one per stream: read fairly by runtime/streams.py)


def freeze_setup_objects() -> bool:
    """Move everything `setup()` left alive (torch, the model, fx graphs: ~230k objects in the
    inference worker) out of the garbage collector's reach: a full collection over them takes
    ~60 ms on the 2-core CI box, and whichever frame is in hand when one runs is late by that
    much. After the freeze a full collection only walks what the loop itself allocated.
    POSEPIPE_GC_FREEZE=0 keeps Python's default (for A/B measurements)."""
    import gc
    if os.environ.get("POSEPIPE_GC_FREEZE", "1") == "0":
        return False
    gc.collect()
    gc.freeze()
    return True


def set_parent_death_signal(sig: int = signal.SIGTERM) -> None:
    """Ask Linux to signal us when the supervisor dies (best effort elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, int(sig), 0, 0, 0)
    except (OSError, AttributeError) as exc:
        log.debug("prctl(PR_SET_PDEATHSIG) unavailable: %s", exc)


class _Timings:
    def __init__(self, size: int = 512):
        self.values = collections.deque(maxlen=size)

    def add(self, ms: float) -> None:
        self.values.append(ms)

    def extend_last(self, ms: float) -> None:
        if self.values:
            self.values[-1] += ms
        else:
            self.values.append(ms)

    def percentiles(self) -> tuple[float, float]:
        if not self.values:
            return 0.0, 0.0
        arr = np.fromiter(self.values, dtype=np.float64)
        p50, p99 = np.percentile(arr, [50, 99])
        return float(p50), float(p99)


class Runner:
    def __init__(self, spec: dict, control_token: str = ""):
        missing = SPEC_KEYS - set(spec)
        if missing:
            raise ValueError(f"worker spec is missing {sorted(missing)}")
        self.spec = spec
        self.control_token = control_token  # from the supervisor, through the environment
        self.name = spec["name"]
        self.generation = int(spec["generation"])
        self.parent_pid = int(spec["parent_pid"])
        self.stop_event = threading.Event()
        self.main_done = threading.Event()
        self.commands: queue.Queue = queue.Queue()
        self.outbox: queue.Queue = queue.Queue()
        self.paused = False
        self.state = "starting"
        self.frames_in = 0
        self.frames_out = 0
        self.drops = 0
        self.skipped = 0       # items a `latest` reader passed over by design (not lost)
        self.busy_s = 0.0      # time spent in process()/flush()
        self.out_span = (0.0, 0.0)  # monotonic time of the first and the newest output
        self.expected_ms = 0.0      # p50 of process(), refreshed with every heartbeat
        self.read_members: dict = {}
        self.timings = _Timings()
        self.last_loop = time.monotonic()
        self.rings: dict = {}
        self.reader = None
        self.worker = None
        self.stop_reason = ""
        self._fps_window = collections.deque(maxlen=64)  # (t, frames_out)

    # ---- called by workers through Worker helpers --------------------------------------------
    def event(self, kind: str, **data) -> None:
        self.outbox.put(Event(kind, {"worker": self.name, "generation": self.generation, **data}))

    def finish(self, reason: str) -> None:
        self.event("finished", reason=reason)
        self.stop_reason = reason
        self.stop_event.set()

    # ---- lifecycle ------------------------------------------------------------------------------
    def run(self) -> int:
        from pipeline.runtime.control import WorkerLink

        self.link = WorkerLink(self.spec["control"], self.name, self.generation, self.control_token)
        self.link.send(Hello(self.name, self.generation, os.getpid()))
        thread = threading.Thread(target=self._control_loop, name="control", daemon=True)
        thread.start()
        code = 0
        try:
            try:
                self._setup()
            except Exception as exc:  # the worker could not start: report once, clearly
                message = str(exc) or type(exc).__name__
                log.debug("setup of %s failed", self.name, exc_info=True)
                self.event("fatal", error=message)
                self.stop_reason = f"setup failed: {message}"
                return EXIT_SETUP
            freeze_setup_objects()
            # The loop's age counts from now: setup() had its own allowance (start_timeout).
            self.last_loop = time.monotonic()
            self.state = "running"
            self.outbox.put(Ready(self.name, self.generation, self._info()))
            code = self._loop()
        finally:
            self.state = "stopping"
            # The loop has written its last item: hand the ring to the next generation before
            # stop() (closing a model can take seconds), so a swap's output gap stays short.
            if self.worker is not None and self.worker.out is not None:
                self.worker.out._writer.release()
            if self.worker is not None and code != EXIT_SETUP:
                try:
                    self.worker.stop()
                except Exception:
                    log.exception("%s: stop() failed", self.name)
            self.outbox.put(Bye(self.name, self.generation, self.stop_reason))
            self.main_done.set()
            thread.join(timeout=2.0)
            self.link.close()
            if self.worker is not None and self.worker.out is not None:
                self.worker.out.release_holds(everything=True)
            for member in [self.reader, *self.read_members.values()]:
                if member is not None:
                    member.close()  # what this process claimed or pinned is free at once
            self.worker = self.reader = None
            for ring in self.rings.values():
                ring.close()
        return code

    def _setup(self) -> None:
        from pipeline.config import build_dataclass
        from pipeline.runtime.ring import Ring

        spec = self.spec
        cls = find_worker_class(importlib.import_module(spec["module"]))
        params = build_dataclass(cls.Params, spec["params"] or {}, f"workers.{self.name}.params")
        wanted = [r for r in [spec["input"], *spec.get("inputs", ()), spec["output"], *spec["reads"]] if r]
        for ring_name in dict.fromkeys(wanted):
            if ring_name not in spec["rings"]:
                raise RuntimeError(f"worker {self.name} needs ring {ring_name!r}, which the supervisor did not create")
            self.rings[ring_name] = Ring.attach(spec["rings"][ring_name])
        ctx = WorkerContext(self.name, self.generation, self.rings, spec["shared"], runner=self)
        self.worker = cls(params, ctx)
        if spec["output"]:
            self.worker.out = Output(self.rings[spec["output"]], self.generation)
            self.worker.out.waiting = self._waiting_for_space
        self.worker.setup()
        self._join_rings()

    def _waiting_for_space(self) -> bool:
        self.last_loop = time.monotonic()  # held back by a slower stage (lossless), not stuck
        return self.stop_event.is_set()

    def _join_rings(self) -> None:
        """Register in the rings this worker reads, once it is ready to read (architecture.md §2):
        the input reader claims what it reads and says what it has taken and done (producers on
        demand wait for that); the `reads` rings get an entry for the slots the worker pins. In
        lossless mode (`every_frame`) every reader reads `next` and holds back its producers."""
        spec, worker = self.spec, self.worker
        if not spec["input"]:
            return
        lossless = bool((spec["shared"] or {}).get("every_frame"))
        inputs = list(spec.get("inputs") or ()) or [spec["input"]]
        readers = []
        for name in inputs:
            ring = self.rings[name]
            first = ring.last_frame_id + 1
            member = ring.members.register(consumer=True, backpressure=lossless, generation=self.generation,
                                           taken=ring.newest_seq(), need_fid=first)
            # An on-demand worker says when it reads next through `plan` (wait_for_demand).
            member.planned = bool(worker.on_demand and worker.out is not None)
            readers.append(ring.reader(policy="next" if lossless else spec["policy"], member=member))
        if len(readers) == 1:
            self.reader = readers[0]
        else:
            from pipeline.runtime.streams import MultiReader

            self.reader = MultiReader(readers)  # one per stream, in stream order: fair rounds
        names = worker.hold_reads if worker.hold_reads is not None else spec["reads"]
        for name in names:
            if name in self.rings:
                r = self.rings[name]
                self.read_members[name] = r.members.register(consumer=False, backpressure=lossless,
                                                             generation=self.generation, taken=r.newest_seq(),
                                                             need_fid=first)
        worker.ctx.members = self.read_members

    def _loop(self) -> int:
        worker, reader = self.worker, self.reader
        on_demand = worker.on_demand and worker.out is not None
        while not self.stop_event.is_set():
            self.last_loop = time.monotonic()
            self._apply_commands()
            if self.paused:
                # `latest` readers resume at the newest item; `next` readers count what the
                # ring overwrote meanwhile as drops.
                if worker.pending() and self._step(worker.flush, extend=True) is _CRASHED:
                    return 1
                self.stop_event.wait(0.05)
                continue
            # Several input rings: one demand per round, answered with a record per stream.
            round_start = getattr(reader, "round_start", None)
            if on_demand and (round_start is None or round_start()) and not worker.out.wait_for_demand(
                    self._lead_ns(), int(self.expected_ms * 1e6), after_take=worker.demand_after_take,
                    upstream=reader.member if reader is not None else None,
                    has_input=self._has_unread if reader is not None and round_start is None else None):
                continue  # no consumer wants a record yet: do not make one it would skip
            item = None
            if reader is not None:
                pending = worker.pending()
                item = reader.read(timeout=0 if pending else 0.1, copy=worker.copy_input)
                if item is None:
                    # Nothing new right now: write what a pipelined worker held back.
                    if pending and self._step(worker.flush, extend=True) is _CRASHED:
                        return 1
                    if worker.out is not None:
                        worker.out.release_holds()
                    continue
                self.frames_in += 1
                if reader.policy == "latest":
                    self.skipped += item.overwritten_before
                else:
                    self.drops += item.overwritten_before
            result = self._step(worker.process, item)
            if result is _CRASHED:
                return 1
            if item is not None:
                self._done(item)
            if reader is None and result is not None:
                self.frames_in += 1
        if worker.pending():
            self._step(worker.flush, extend=True)  # a clean stop still writes the last item
        return 0

    def _done(self, item) -> None:
        """Tell the rings the item is processed: its claim goes; lossless, its frame is released."""
        try:
            fid = int(item.record["frame_id"])
        except (ValueError, IndexError, KeyError, TypeError):  # a record without frame_id
            fid = None
        self.reader.done(item, fid)
        if fid is not None:
            for member in self.read_members.values():
                if member.backpressure:
                    member.need(fid + 1)

    def _has_unread(self) -> bool:
        """An item newer than the one we last took is in the input ring."""
        return self.reader.ring.newest_seq() > self.reader.cursor

    def _lead_ns(self) -> int:
        """How long before a consumer wants a record this worker starts making it."""
        return self.worker.demand_lead_ns(self.expected_ms)

    def _step(self, fn, *args, extend: bool = False):
        """One process()/flush() call and its bookkeeping; returns its result, or _CRASHED. A
        flush's time is added to the last item's timing, so there is one timing per item."""
        out, reader = self.worker.out, self.reader
        t0 = time.perf_counter()
        try:
            result = fn(*args)
        except Exception:
            log.exception("%s (generation %d) crashed in %s()", self.name, self.generation, fn.__name__)
            self.stop_reason = "crashed"
            return _CRASHED
        ms = (time.perf_counter() - t0) * 1000.0
        if reader is None and result is None and not extend:
            return result  # a source that wrote nothing (lossless: waited for space): not a frame's time
        self.busy_s += ms / 1000.0
        if extend:
            self.timings.extend_last(ms)
        else:
            self.timings.add(ms)
        before = self.frames_out
        if isinstance(result, Wrote):
            self.frames_out += result.count
        elif result is not None:
            if out is None:
                raise RuntimeError(f"worker {self.name} returned a record but has no output ring")
            if out.write(result) is not None:
                self.frames_out += 1
        elif out is None and reader is not None and not extend:
            self.frames_out += 1  # a terminal stage (metrics): what it consumed is its output
        if self.frames_out != before:
            now = time.monotonic()
            self.out_span = (self.out_span[0] or now, now)
        return result

    def _apply_commands(self) -> None:
        while True:
            try:
                cmd: Command = self.commands.get_nowait()
            except queue.Empty:
                return
            try:
                result = self._command(cmd)
                self.outbox.put(Reply(cmd.id, True, result))
            except (SettingError, ValueError, TypeError, KeyError) as exc:
                self.outbox.put(Reply(cmd.id, False, error=str(exc)))
            except Exception as exc:
                log.exception("%s: command %s failed", self.name, cmd.cmd)
                self.outbox.put(Reply(cmd.id, False, error=f"{type(exc).__name__}: {exc}"))

    def _command(self, cmd: Command):
        if cmd.cmd == "pause":
            self.paused = True
            self.state = "paused"
            return {"state": "paused"}
        if cmd.cmd == "resume":
            self.paused = False
            self.state = "running"
            return {"state": "running"}
        if cmd.cmd == "set":
            key, value = cmd.args.get("key"), cmd.args.get("value")
            if not isinstance(key, str) or not key:
                raise ValueError("set needs a key")
            result = self.worker.on_set(key, value)
            return {"key": key, "value": value if result is None else result}
        raise ValueError(f"unknown worker command {cmd.cmd!r}; known: set, pause, resume, stop")

    def _info(self) -> dict:
        try:
            return dict(self.worker.info())
        except Exception as exc:
            return {"info_error": str(exc)}

    # ---- control thread -------------------------------------------------------------------------
    def _control_loop(self) -> None:
        proc = _psutil_process()
        next_hb = 0.0
        parent_gone_at = None
        while True:
            msg = self.link.recv(0.05)
            if isinstance(msg, Command):
                if msg.cmd == "stop":
                    self.stop_reason = self.stop_reason or "stop command"
                    self.stop_event.set()
                    self.link.send(Reply(msg.id, True, {"state": "stopping"}))
                else:
                    self.commands.put(msg)
            elif msg is not None:
                log.debug("ignored %s from supervisor", type(msg).__name__)
            while True:
                try:
                    self.link.send(self.outbox.get_nowait())
                except queue.Empty:
                    break
            if self.main_done.is_set():
                # Final counts (a lossless run's summary compares frames read and published).
                self.link.send(Heartbeat(self.name, self.generation, self._stats(proc)))
                while True:  # the main loop queued `bye` (and maybe `finished`) just before
                    try:
                        self.link.send(self.outbox.get_nowait())
                    except queue.Empty:
                        return
            now = time.monotonic()
            if now >= next_hb:
                next_hb = now + HEARTBEAT_S
                self.link.send(Heartbeat(self.name, self.generation, self._stats(proc)))
            if parent_gone_at is None and os.getppid() != self.parent_pid:
                parent_gone_at = now
                self.stop_reason = "supervisor vanished"
                self.stop_event.set()
            if parent_gone_at is not None and now - parent_gone_at > PARENT_GONE_GRACE_S:
                # The main loop is stuck (e.g. inside a model load); nobody is left to wait for us.
                os._exit(1)

    def _stats(self, proc) -> Stats:
        p50, p99 = self.timings.percentiles()
        self.expected_ms = p50
        if self.reader is not None:
            # when we will want the next item, a little early: a producer on demand makes it just in time
            self.reader.expect_ns = int(p50 * 0.9e6)
        now = time.monotonic()
        self._fps_window.append((now, self.frames_out))
        while len(self._fps_window) > 2 and now - self._fps_window[0][0] > 3.0:
            self._fps_window.popleft()
        t0, n0 = self._fps_window[0]
        fps = (self.frames_out - n0) / (now - t0) if now > t0 else 0.0
        worker = self.worker
        reader = self.reader
        extras = {"fps": round(fps, 2), "state": self.state, "loop_age_s": round(now - self.last_loop, 3),
                  "busy_s": round(self.busy_s, 3), "out_span_s": round(self.out_span[1] - self.out_span[0], 3)}
        drops, skipped = self.drops, self.skipped
        overruns = 0
        if worker is not None:
            extras.update(worker.extras)
            device_stats = getattr(worker, "device_stats", None)
            if device_stats is not None:
                extras.update(device_stats.sample())
            drops += worker.drops
            skipped += worker.skipped
            if worker.out is not None:
                extras["suppressed"] = worker.out.suppressed
                if worker.out.forced_releases:
                    extras["holds_let_go"] = worker.out.forced_releases
        if reader is not None:
            overruns = reader.overruns
        cpu, rss = 0.0, 0
        if proc is not None:
            try:
                cpu = proc.cpu_percent(None)
                rss = proc.memory_info().rss
            except Exception:
                pass
        return Stats(frames_in=self.frames_in, frames_out=self.frames_out, drops=int(drops),
                     overruns=int(overruns), skipped=int(skipped), p50_ms=round(p50, 3), p99_ms=round(p99, 3),
                     cpu_percent=float(cpu), rss_bytes=int(rss), extras=_plain(extras))


def _plain(d: dict) -> dict:
    """Heartbeat extras must be msgpack-able: numpy scalars -> Python numbers."""
    out = {}
    for k, v in d.items():
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, (str, int, float, bool)) or v is None:
            out[str(k)] = v
        elif isinstance(v, dict):
            out[str(k)] = _plain(v)
        else:
            out[str(k)] = str(v)
    return out


def _psutil_process():
    try:
        import psutil

        proc = psutil.Process()
        proc.cpu_percent(None)
        return proc
    except Exception:
        return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m pipeline.runtime.runner '<worker spec json>' (started by the supervisor)", file=sys.stderr)
        return 2
    try:
        spec = json.loads(argv[0])
    except ValueError as exc:
        print(f"worker spec is not valid JSON: {exc}", file=sys.stderr)
        return 2
    set_parent_death_signal()
    logging.basicConfig(level=os.environ.get("POSEPIPE_LOG_LEVEL", "INFO").upper(),
                        format=f"%(asctime)s {spec.get('name', '?')}[{spec.get('generation', '?')}] "
                               f"%(levelname)s %(name)s: %(message)s")
    if os.getppid() != int(spec.get("parent_pid", -1)):
        return 1  # the supervisor died before we could arm the death signal
    from pipeline.runtime.control import TOKEN_ENV

    # Out of the environment at once: nothing this worker starts (ffmpeg, ...) needs the token.
    token = os.environ.pop(TOKEN_ENV, "")
    if not token:
        print(f"worker spec without {TOKEN_ENV}: workers are started by the supervisor", file=sys.stderr)
        return 2
    runner = Runner(spec, control_token=token)

    def on_signal(signum, _frame):
        runner.stop_reason = runner.stop_reason or signal.Signals(signum).name
        runner.stop_event.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return runner.run()


if __name__ == "__main__":
    sys.exit(main())
