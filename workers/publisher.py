"""Publisher worker (architecture.md §5, §7): every poses record, in order, to the sinks.

Reads the poses ring with policy ``next``, stamps ``publish``, copies the record into the
``published`` ring (metrics and the profiler read it there) and hands a `PosesFrame` to each
configured sink. Sinks asking for pixels (`wants_image`) get the frame's RGB image from the
frames ring when its slot still holds that frame. A sink that raises is counted, not fatal;
sinks must return quickly (they drop rather than block), so the pipeline never waits on one.

Global smoothing (`params.smoothing`: off | moderate | smooth, live with `pipeline set
publisher smoothing=smooth`) runs once, before the sinks, so every sink sees the same
stream; sinks with their own `smoothing` option filter on top of it. The `published` ring
keeps the raw model output (metrics, A/B agreement and the profiler compare raw results);
the heartbeat extras carry the smoother's raw and filtered change per field and its cost
(`smoothing_*`, from `Smoother.stats`), from which `relay_metrics` makes the seed relay's
filter-comparison row.

During an A/B test (`pipeline ab start`) variant B writes its own ring, `poses_b`, created by
the supervisor on first use. The publisher attaches to it when it appears and hands B's newest
frame to the sinks that draw variants (the viewer: B's skeletons beside A's, in another
colour). B is drawn raw (no smoothing), shown only, never published: the published stream stays
A's. When B stops writing for a second its skeletons are cleared.

Sinks that talk back to the pipeline (the viewer's "Record last 5 s" button, the display's
`q`/`r` keys) get a `ControlActions` bound to the supervisor's control socket; the viewer
gets the SMPL mesh when the SMPL files exist.
"""
from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass
from typing import Literal, Union

import numpy as np

from pipeline.metrics.streams import StreamStats
from pipeline.runtime.records import stamp
from pipeline.runtime.ring import Ring, RingError, ring_shm_name
from pipeline.runtime.worker import WROTE, SettingError, Worker, WorkerError

LATENCY_WINDOW = 300
VARIANT_B_RING = "poses_b"
B_ATTACH_EVERY_S = 1.0    # how often to look for the variant-B ring while there is none
B_IDLE_S = 1.0            # no B frame for this long, and ...
B_IDLE_FRAMES = 5         # ... over this many A frames: B has stopped, clear its skeletons


@dataclass
class Params:
    sinks: Union[list, None] = None   # names from the `sinks:` section to run; None = all of them
    smoothing: Literal["off", "moderate", "smooth"] = "off"   # global One-Euro preset, before the sinks
    metrics_worker: str = "metrics"   # where record requests (viewer button, display `r`) go


class Publisher(Worker):
    input = "poses"
    policy = "next"
    output = "published"
    reads = ("frames",)
    Params = Params

    def setup(self) -> None:
        from pipeline.sinks import SinkError, build_sink
        from pipeline.pose.smoothing import Smoother

        self.smoother = Smoother(self.params.smoothing)
        configured = self.ctx.shared.get("sinks") or {}
        names = list(configured) if self.params.sinks is None else list(self.params.sinks)
        self.sinks = []
        for name in names:
            if name not in configured:
                raise WorkerError(f"workers.{self.name}.params.sinks names {name!r}, which is not under `sinks:`")
            try:
                sink = build_sink(name, configured[name])
                self._connect(sink)
                sink.open()
            except SinkError as exc:
                self.stop()
                hint = " (or start with --viewer-port PORT)" if name == "viewer" and "port" in str(exc) else ""
                raise WorkerError(f"{exc}{hint}") from exc
            self.sinks.append(sink)
        # Several sources: each stream has its frames ring, its smoother and its numbers.
        self.stream_names = list(self.ctx.shared.get("streams") or ["main"])
        self.frame_rings = ["frames"] if len(self.stream_names) <= 1 else [f"frames.{n}" for n in self.stream_names]
        self.frames = self.rings.get(self.frame_rings[0])
        self._smoothers = {0: self.smoother}
        self.per_stream = StreamStats(self.stream_names)
        self.latencies = collections.deque(maxlen=LATENCY_WINDOW)
        self.sink_errors = collections.Counter()
        self.persons = 0
        self.published = 0
        self.no_image = 0
        self._want_image = any(s.wants_image for s in self.sinks)
        # Pin (and, lossless, hold back capture for) the frames only when a sink draws them.
        self.hold_reads = tuple(self.frame_rings) if self._want_image else ()
        self._last_extras = 0.0
        self._variant_sinks = [s for s in self.sinks if callable(getattr(s, "send_variant", None))]
        run_id = self.ctx.shared.get("run_id")
        self._b_shm = ring_shm_name(run_id, VARIANT_B_RING) if run_id else None
        self._b_ring = self._b_reader = None
        self._b_next_try = 0.0
        self._b_last = None
        self._a_since_b = 0
        self.variant_b_frames = 0

    def process(self, item):
        from pipeline.pose.frame import from_record

        rec = item.record  # our own copy
        now = time.monotonic_ns()
        stamp(rec, "publish", now)
        # The published record keeps the generation of the inference worker that produced it:
        # that is what swaps, A/B runs and metrics need to tell results apart.
        if self.out.write(rec, keep_generation=True) is None:
            return None  # not newer than what was published (or another generation owns the ring)
        t_capture = int(rec["t_capture_ns"])
        stream = int(rec["stream"])
        if t_capture:
            self.latencies.append((now - t_capture) / 1e6)
        self.per_stream.add(stream, (now - t_capture) / 1e6 if t_capture else None)
        self.persons = int(rec["count"])
        self.published += 1
        # rec[()] is the np.void scalar: its S-fields come back as bytes without NUL padding
        # (bytes() of the 0-d array field would keep the padding).
        frame = self._smoother_for(stream).apply(from_record(rec[()], self.stream_names))
        image = self._image(rec) if self._want_image else None
        for sink in self.sinks:
            self._to_sink(sink, "", sink.send, frame, image if sink.wants_image else None)
        if self._variant_sinks and self._b_shm:
            self._forward_variant_b()
        self._update_extras()
        return WROTE

    def _forward_variant_b(self) -> None:
        """B's newest frame (A/B test) to the sinks that draw variants; attach to its ring
        when it appears, clear B's skeletons when it stops."""
        from pipeline.pose.frame import from_record

        now = time.monotonic()
        if self._b_reader is None:
            if now < self._b_next_try:
                return
            self._b_next_try = now + B_ATTACH_EVERY_S
            try:
                self._b_ring = Ring.attach(self._b_shm)
            except (RingError, OSError):
                return  # no A/B test yet
            self._b_reader = self._b_ring.reader(policy="latest")
            self.log.info("variant B ring found: drawing B beside A in the viewer")
        item = self._b_reader.read(timeout=0)
        self._a_since_b += 1
        if item is not None:
            frame = from_record(item.record[()])
            self._b_last = now
            self._a_since_b = 0
            self.variant_b_frames += 1
        elif self._b_last is not None and now - self._b_last > B_IDLE_S and self._a_since_b >= B_IDLE_FRAMES:
            # both: at a low frame rate one missed B frame is not B stopping
            frame = from_record(np.zeros((), self._b_ring.dtype)[()])  # nobody: clears B
            self._b_last = None
        else:
            return
        for sink in self._variant_sinks:
            self._to_sink(sink, " on variant B", sink.send_variant, frame, variant="B")

    def _to_sink(self, sink, what: str, send, *args, **kwargs) -> None:
        try:
            send(*args, **kwargs)
        except Exception as exc:  # one broken sink must not stop the others or the pipeline
            self.sink_errors[sink.name] += 1
            if self.sink_errors[sink.name] in (1, 10, 100, 1000):
                self.log.warning("sink %s failed%s (%d times): %s", sink.name, what,
                                 self.sink_errors[sink.name], exc)

    def _connect(self, sink) -> None:
        """Hand a sink what it needs from the pipeline, before it opens."""
        from pipeline.sinks.display import ControlActions

        actions = ControlActions(*(self.ctx.control_access() or (None, "")), self.params.metrics_worker)
        if hasattr(sink, "actions"):
            sink.actions = actions
        if getattr(sink, "data_dir", None) == "":
            sink.data_dir = str(self.ctx.data_dir)  # SMPL files for meshes: the pipeline's data folder
        if hasattr(sink, "use_source"):
            sink.use_source(self.ctx.shared.get("source"))
        if sink.name == "viewer":
            if sink.on_record is None:
                sink.on_record = actions.record
            if sink.smpl is None:
                sink.smpl = viewer_mesh(self.ctx.data_dir)
                if sink.smpl is not None:
                    from pipeline.sinks import viewer_scene
                    sink.rest_offsets = viewer_scene.offsets_from_rest_joints(sink.smpl.rest_joints)

    def _smoother_for(self, stream: int):
        """One smoother per stream: track ids and scene cuts of one camera mean nothing in another."""
        smoother = self._smoothers.get(stream)
        if smoother is None:
            from pipeline.pose.smoothing import Smoother

            smoother = self._smoothers[stream] = Smoother(self.smoother.preset_name)
        return smoother

    def _image(self, rec):
        """The frame's pixels if its slot still holds it (a copy), else None. Inference holds
        the slot until we have passed this record (architecture.md §2); we pin it while copying."""
        stream = int(rec["stream"])
        name = self.frame_rings[stream] if 0 <= stream < len(self.frame_rings) else None
        frames = self.rings.get(name) if name else None
        if frames is None:
            return None
        fid = int(rec["frame_id"])
        member = self.ctx.members.get(name)
        for slot in range(frames.slots):
            seq = frames.slot_seq(slot)
            view = frames.slot_record(slot)
            if seq % 2 or int(view["frame_id"]) != fid:
                continue
            if member is not None and not member.pin(slot, seq):
                continue
            try:
                h, w = int(view["height"]), int(view["width"])
                image = np.array(view["pixels"][:h, :w])
            finally:
                if member is not None:
                    member.unpin(seq)
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
            "variant_b_frames": self.variant_b_frames,
        })
        if len(self.stream_names) > 1:
            self.extras["streams"] = self.per_stream.summary()
        for sink in self.sinks:
            for k, v in (sink.stats() or {}).items():
                if isinstance(v, (int, float, str)):
                    self.extras[f"{sink.name}_{k}"] = v
        for k, v in self.smoother.stats().items():
            if k != "t_monotonic":
                self.extras[f"smoothing_{k}"] = round(v, 4) if isinstance(v, float) else v

    def on_set(self, key, value):
        """`pipeline set publisher <sink>.<key>=value` goes to that sink's `set()`."""
        from pipeline.sinks import SinkError

        if key == "smoothing":
            try:
                for smoother in self._smoothers.values():
                    smoother.set("smoothing", str(value))
            except ValueError as exc:
                raise SettingError(f"publisher smoothing: {exc}") from exc
            self._last_extras = 0.0  # report the new preset with the next frame
            self.extras["smoothing_preset"] = self.smoother.preset_name
            return self.smoother.preset_name
        sink_name, _, sink_key = key.partition(".")
        sink = next((s for s in self.sinks if s.name == sink_name), None)
        if sink is None or not sink_key:
            raise SettingError(f"publisher settings are smoothing=off|moderate|smooth or <sink>.<key>; running sinks: "
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
        ring = getattr(self, "_b_ring", None)
        if ring is not None:
            self._b_reader = self._b_ring = None
            ring.close()

    def info(self) -> dict:
        out = {"sinks": [s.name for s in self.sinks], "smoothing": self.smoother.preset_name}
        for sink in self.sinks:
            endpoint = getattr(sink, "endpoint", None) or getattr(sink, "url", None)
            if endpoint:
                out[f"{sink.name}_endpoint"] = endpoint
        return out



def viewer_mesh(data_dir):
    """`SmplMeshData` for the viewer from the SMPL model file, or None (skeletons) without it."""
    from pipeline.models.smpl import load_smpl
    from pipeline.sinks.viewer import SmplMeshData

    try:
        layer = load_smpl(data_dir)
    except (ValueError, ImportError) as exc:
        logging.getLogger(__name__).warning("viewer: drawing skeletons, the SMPL model is unusable: %s", exc)
        return None
    if layer is None:
        return None
    m = layer.smpl
    template = m.v_template.detach().cpu().numpy()
    regressor = m.J_regressor.detach().cpu().numpy()
    return SmplMeshData(vertices=template, faces=layer.faces, skin_weights=m.lbs_weights.detach().cpu().numpy(),
                        rest_joints=regressor @ template, shapedirs=m.shapedirs.detach().cpu().numpy(),
                        j_regressor=regressor)
