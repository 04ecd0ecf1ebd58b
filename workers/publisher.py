"""Publisher worker (DESIGN §5, §7): every poses record, in order, to the sinks.

Reads the poses ring with policy ``next``, stamps ``publish``, copies the record into the
``published`` ring (metrics and the profiler read it there) and hands a `PosesFrame` to each
configured sink. Sinks asking for pixels (`wants_image`) get the frame's RGB image from the
frames ring when its slot still holds that frame. A sink that raises is counted, not fatal;
sinks must return quickly (they drop rather than block), so the pipeline never waits on one.
"""
from __future__ import annotations

import collections
import time
from dataclasses import dataclass
from typing import Union

import numpy as np

from pipeline.records import stamp
from pipeline.worker import WROTE, SettingError, Worker, WorkerError

LATENCY_WINDOW = 300


@dataclass
class Params:
    sinks: Union[list, None] = None   # names from the `sinks:` section to run; None = all of them


class Publisher(Worker):
    input = "poses"
    policy = "next"
    output = "published"
    reads = ("frames",)
    Params = Params

    def setup(self) -> None:
        from pipeline.sinks import SinkError, build_sink

        configured = self.ctx.shared.get("sinks") or {}
        names = list(configured) if self.params.sinks is None else list(self.params.sinks)
        self.sinks = []
        for name in names:
            if name not in configured:
                raise WorkerError(f"workers.{self.name}.params.sinks names {name!r}, which is not under `sinks:`")
            try:
                sink = build_sink(name, configured[name])
                sink.open()
            except SinkError as exc:
                self.stop()
                raise WorkerError(str(exc)) from exc
            self.sinks.append(sink)
        self.frames = self.rings.get("frames")
        self.latencies = collections.deque(maxlen=LATENCY_WINDOW)
        self.sink_errors = collections.Counter()
        self.persons = 0
        self.published = 0
        self.no_image = 0
        self._want_image = any(s.wants_image for s in self.sinks)
        self._last_extras = 0.0

    def process(self, item):
        from pipeline.poses import from_record

        rec = item.record  # our own copy
        now = time.monotonic_ns()
        stamp(rec, "publish", now)
        # The published record keeps the generation of the inference worker that produced it:
        # that is what swaps, A/B runs and metrics need to tell results apart.
        if self.out.write(rec, keep_generation=True) is None:
            return None  # not newer than what was published (or another generation owns the ring)
        t_capture = int(rec["t_capture_ns"])
        if t_capture:
            self.latencies.append((now - t_capture) / 1e6)
        self.persons = int(rec["count"])
        self.published += 1
        # rec[()] is the np.void scalar: its S-fields come back as bytes without NUL padding
        # (bytes() of the 0-d array field would keep the padding).
        frame = from_record(rec[()])
        image = self._image(rec) if self._want_image else None
        for sink in self.sinks:
            try:
                sink.send(frame, image if sink.wants_image else None)
            except Exception as exc:  # one broken sink must not stop the others or the pipeline
                self.sink_errors[sink.name] += 1
                if self.sink_errors[sink.name] in (1, 10, 100, 1000):
                    self.log.warning("sink %s failed (%d times): %s", sink.name, self.sink_errors[sink.name], exc)
        self._update_extras()
        return WROTE

    def _image(self, rec):
        """The frame's pixels if its slot still holds it (a copy), else None."""
        frames = self.frames
        if frames is None:
            return None
        fid = int(rec["frame_id"])
        for slot in range(frames.slots):
            seq = frames.slot_seq(slot)
            view = frames.slot_record(slot)
            if seq % 2 or int(view["frame_id"]) != fid:
                continue
            h, w = int(view["height"]), int(view["width"])
            image = np.array(view["pixels"][:h, :w])
            if frames.slot_seq(slot) == seq:
                return image
        self.no_image += 1
        return None

    def _update_extras(self) -> None:
        now = time.monotonic()
        if now - self._last_extras < 0.25 or not self.latencies:
            return
        self._last_extras = now
        p50, p99 = np.percentile(np.fromiter(self.latencies, np.float64), [50, 99])
        self.extras.update({
            "latency_p50_ms": round(float(p50), 2), "latency_p99_ms": round(float(p99), 2),
            "persons": self.persons, "published": self.published,
            "sink_errors": sum(self.sink_errors.values()), "no_image": self.no_image,
        })
        for sink in self.sinks:
            for k, v in (sink.stats() or {}).items():
                if isinstance(v, (int, float, str)):
                    self.extras[f"{sink.name}_{k}"] = v

    def on_set(self, key, value):
        """`pipeline set publisher <sink>.<key>=value` goes to that sink's `set()`."""
        from pipeline.sinks import SinkError

        sink_name, _, sink_key = key.partition(".")
        sink = next((s for s in self.sinks if s.name == sink_name), None)
        if sink is None or not sink_key:
            raise SettingError(f"publisher settings are <sink>.<key>; running sinks: "
                               f"{', '.join(s.name for s in self.sinks) or '(none)'}")
        try:
            result = sink.set(sink_key, value)
        except SinkError as exc:
            raise SettingError(str(exc)) from exc
        return value if result is None else result

    def stop(self) -> None:
        for sink in getattr(self, "sinks", []):
            try:
                sink.close()
            except Exception as exc:
                self.log.warning("closing sink %s failed: %s", sink.name, exc)

    def info(self) -> dict:
        out = {"sinks": [s.name for s in self.sinks]}
        for sink in self.sinks:
            endpoint = getattr(sink, "endpoint", None) or getattr(sink, "url", None)
            if endpoint:
                out[f"{sink.name}_endpoint"] = endpoint
        return out

