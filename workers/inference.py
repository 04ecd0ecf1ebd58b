"""Inference worker (architecture.md §5, §6): every detected person of the newest frame through POCO in one batch.

Reads the detections ring (policy ``latest``), finds the frame the boxes belong to in the
frames ring by slot and pins it there (architecture.md §2): detection holds that slot until we
have taken the record, our pin keeps it through the crop and, handed to our output, until the
publisher has passed the pose record (its image sinks draw the same frame). The slot's seq is
still checked before cropping AND after: a frame that is gone anyway (no member entry, pin
table full) is skipped and counted (`stale_frames`), so boxes of one frame are never applied
to the pixels of another. Crops are cut straight from the ring slot
(cv2 affine warp on CPU; on CUDA the frame goes to the GPU once and is cropped there), all
persons run as one batch through the backend, and the outputs become SMPL parameters per
person (smplx names, full-image translation, joint uncertainty, track id, box, score; SMPL
joints when the licensed SMPL file exists). Frames without anybody still produce a record
(count 0), so the detection rate can be measured downstream.

No checkpoint -> random weights: said loudly once at start, in `info()` (`pipeline status`)
and in every record (`untrained`).

`model: landmarks-ik` runs MediaPipe's trained pose landmark model per person and inverse
kinematics instead (`pipeline.models.landmarks_ik`; CPU, LiteRT; backend/device/precision do
not apply). `model: auto` (the default) is POCO-CLIFF when its checkpoint is found, else
landmarks-ik, said once at start. Persons whose crop holds no pose are left out of its records.

During an A/B test the supervisor sends `set ab_tee=<ring>`: every detections record this
worker consumes is copied into that ring, which variant B reads with policy `next`, so B runs
on exactly the frames A runs on (architecture.md §4); `set ab_tee=""` ends it.
"""
from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Literal, Union

import numpy as np

from pipeline.runtime.records import stamp
from pipeline.runtime.worker import WROTE, Output, SettingError, Worker, WorkerError, Wrote, stretch_to

TIMING_WINDOW = 256
LANDMARKS_IK = "landmarks-ik"


@dataclass
class Params:
    # auto: poco-cliff when its checkpoint is found (checkpoint or <data_dir>/poco_cliff.pt), else landmarks-ik
    model: Literal["poco-cliff", "poco-pare", "cliff", "pare", "landmarks-ik", "auto"] = "auto"
    checkpoint: Union[str, None] = None   # default: <data_dir>/poco_<variant>.pt if it exists, else random init
    # auto: onnx on a CPU (the fastest CPU backend), cudagraph on a GPU (pipeline.backends.AUTO_BACKEND)
    backend: Literal["auto", "torch", "compile", "cudagraph", "trt", "onnx"] = "auto"
    device: str = "auto"                  # auto (cuda when present) | cpu | cuda | cuda:N
    # auto: what the backend does best on the device (fp16 on CUDA; fp32 on a CPU, where
    # int8 is the onnx backend's opt-in: ~2x faster, checked against fp32 when it is built)
    precision: Literal["auto", "fp32", "fp16", "int8"] = "auto"
    channels_last: bool = False
    smpl: Literal["auto", "off"] = "auto"  # auto: SMPL joints when <data_dir>/smpl/SMPL_NEUTRAL.pkl exists
    threads: int = 0                      # model CPU threads (0: the CPU budget, cpu.threads; 1 on CUDA)
    backend_options: dict = field(default_factory=dict)   # passed to the backend (BackendConfig.options)
    # GPU backends: crop and launch frame N while frame N-1's network runs (its record is then
    # written when frame N has been launched, or at once when no frame is waiting). false: one
    # frame at a time, each written before the next is read.
    overlap_frames: bool = True
    min_process_ms: float = 0.0           # test/bench knob: each frame takes at least this long
    min_presence: float = 0.1             # landmarks-ik: below this pose presence a crop holds nobody
    allow_unsafe_checkpoint: bool = False # full unpickling of the checkpoint (--allow-unsafe-checkpoint)


class Inference(Worker):
    input = "detections"
    policy = "latest"
    output = "poses"
    reads = ("frames",)
    Params = Params
    cpu_role = "model"

    def setup(self) -> None:
        from pipeline.backends import BackendConfig, BackendUnavailable, get_backend, resolve_backend
        from pipeline.models import normalise_variant

        p = self.params
        if p.threads < 0:
            raise WorkerError(f"workers.{self.name}.params.threads = {p.threads} — must be >= 0")
        self.landmarks = None
        if self._family() == LANDMARKS_IK:
            return self._setup_landmarks()
        self.variant = normalise_variant("poco-cliff" if p.model == "auto" else p.model)
        self.model_name = f"poco-{self.variant}"
        self.device = _resolve_device(p.device)
        backend = resolve_backend(p.backend, self.device)
        try:
            backend_cls = get_backend(backend)
        except BackendUnavailable as exc:
            raise WorkerError(f"inference backend {backend!r}: {exc}") from exc
        if str(p.device).strip().lower() == "auto":
            self.device = backend_cls.auto_device(self.device)
        options = dict(p.backend_options)
        self.threads = self._threads(backend, options)
        precision = p.precision if p.precision != "auto" else backend_cls.auto_precision(self.device)
        checkpoint = self._checkpoint()
        self.max_persons = int(self.out.ring.dtype["boxes"].shape[0])
        # cache_dir is the data folder: backends keep engines in <cache_dir>/engines, exactly where
        # `pipeline export` puts them. The one unpickling switch overrides backend_options.
        config = BackendConfig(model=self.variant, checkpoint=checkpoint, device=self.device,
                               precision=precision, max_batch=self.max_persons,
                               channels_last=p.channels_last, cache_dir=str(self.ctx.data_dir),
                               options={**options, "allow_unsafe_checkpoint": p.allow_unsafe_checkpoint},
                               warm_batches=(1, self._persons_now()))
        try:
            self.backend = backend_cls(config)
            self.progress(f"loading POCO-{self.variant.upper()} ({backend} backend, {self.device}, {precision}, "
                          f"{self.threads} threads)")
            self.backend.load()
            self.progress(f"warming up batch sizes {sorted(set(config.warm_batches))}")
            self.backend.warmup()
        except BackendUnavailable as exc:
            raise WorkerError(f"inference backend {backend!r}: {exc}") from exc
        binfo = self.backend.info()
        self.untrained = bool(binfo.get("untrained", checkpoint is None))
        self.precision = str(binfo.get("precision", precision))
        self.backend_name = str(binfo.get("name", backend))
        self.backend_choice = f"{p.backend} -> {backend}" if p.backend == "auto" else backend
        self.extras.update(threads=self.threads, load_s=binfo.get("load_s"), warmup_s=binfo.get("warmup_s"))
        self.checkpoint = checkpoint
        self.engine = {k: binfo[k] for k in ("engine", "engine_built") if k in binfo}
        if self.untrained:
            loud = (f"*** {self.model_name.upper()} runs RANDOM, UNTRAINED weights: every pose it outputs is "
                    f"meaningless. Put the official checkpoint at {self.ctx.data_dir / f'poco_{self.variant}.pt'} "
                    f"(or pass --checkpoint) for real poses. ***")
            self.log.warning("%s", loud)
            self.progress(loud)  # shown by `pipeline start` in the foreground, not only in the log
        self._setup_common()

    def _setup_common(self) -> None:
        p = self.params
        self.smpl = None
        if p.smpl == "auto":
            from pipeline.models import load_smpl

            self.smpl = load_smpl(self.ctx.data_dir, device=self.device)
        if self.landmarks is not None:
            self.landmarks.use_smpl(self.smpl)
        # the frames ring of each stream, by stream index (one stream: `frames`)
        streams = self.ctx.shared.get("streams") or ["main"]
        self.frame_rings = ["frames"] if len(streams) <= 1 else [f"frames.{n}" for n in streams]
        self.frames = self.rings[self.frame_rings[0]]
        self._last_seq = 0
        self.companions = self.calls = self.multi_stream_calls = 0
        self.cropper = None
        if self.device.startswith("cuda"):
            from pipeline.backends.gpu_preprocess import GpuCropper

            # one pinned staging buffer + side-stream upload per frame, one grid_sample for all persons
            max_h, max_w = self.frames.dtype["pixels"].shape[:2]
            self.cropper = GpuCropper(self.device, max_height=max_h, max_width=max_w)
            # DMA straight from the ring slots: no host copy of the frame at all
            # (every stream's frames ring, with several sources)
            registered = [self.cropper.register_host(*self.rings[name].host_region()) for name in self.frame_rings]
            self.direct_upload = all(registered)
            self.extras["direct_upload"] = self.direct_upload
            from pipeline.profiling.device_stats import DeviceStats

            self.device_stats = DeviceStats.for_device(self.device)
        self.stale = 0
        self.empty = 0
        self.bad_boxes = 0
        self.batches = 0
        self._t = {k: collections.deque(maxlen=TIMING_WINDOW) for k in ("crop", "model", "post")}
        self._last_extras = 0.0
        self.recorder = None
        self._tee = None    # (ring, writer) while an A/B test reads what we consume
        self._in_flight: _InFlight | None = None
        self.overlap = bool(p.overlap_frames and getattr(self.backend, "asynchronous", False))
        self.extras["overlap_frames"] = self.overlap
        self.extras.update({"stale_frames": 0, "model": self.model_name, "untrained": self.untrained})

    def _threads(self, backend: str, options: dict) -> int:
        """Intra-op threads for the model: params.threads, else the worker's CPU budget
        (pipeline/runtime/cpu.py); 1 for torch on a GPU, where the CPU side only launches
        kernels and a bigger pool only competes with capture's decoder (seen as p99 spikes)."""
        from pipeline.runtime import cpu

        threads = self.params.threads or cpu.worker_threads() or cpu.machine_cores()
        if backend == "onnx":
            options.setdefault("threads", threads)
            return int(options["threads"])
        import torch  # every other backend runs on torch anyway

        if self.device.startswith("cuda") and not self.params.threads:
            threads = 1
        torch.set_num_threads(threads)
        return threads

    def _persons_now(self) -> int:
        """How many persons the newest detections record holds: the batch the first frames
        after `ready` will need (a hint; 0 before anything was detected)."""
        ring = self.rings.get(self.input)
        if ring is None or ring.newest_seq() < 2:
            return 0
        count = int(ring.slot_record(ring.slot_of(ring.newest_seq()))["count"])
        return count if 0 <= count <= self.max_persons else 0

    def _family(self) -> str:
        """landmarks-ik or poco; `auto` is POCO-CLIFF only when its weights are there."""
        p = self.params
        if p.model == LANDMARKS_IK:
            return LANDMARKS_IK
        if p.model != "auto" or p.checkpoint is not None or (self.ctx.data_dir / "poco_cliff.pt").is_file():
            return "poco"
        msg = (f"no POCO checkpoint at {self.ctx.data_dir / 'poco_cliff.pt'}: running {LANDMARKS_IK} (MediaPipe's "
               f"trained pose landmarks + inverse kinematics to SMPL). Put the checkpoint there for POCO-CLIFF, "
               f"or pass --model poco-cliff for POCO with random weights.")
        self.log.warning("%s", msg)
        self.progress(msg)
        return LANDMARKS_IK

    def _setup_landmarks(self) -> None:
        from pipeline.models.landmarks_ik import LandmarksIk
        from pipeline.models.tflite import TfliteError

        from pipeline.runtime import cpu

        p = self.params
        if p.backend not in ("auto", "torch") or p.device not in ("auto", "cpu") or p.precision not in ("auto", "fp32"):
            self.log.info("%s runs on the CPU with LiteRT: backend=%s device=%s precision=%s do not apply",
                          LANDMARKS_IK, p.backend, p.device, p.precision)
        self.model_name, self.device, self.variant = LANDMARKS_IK, "cpu", LANDMARKS_IK
        self.max_persons = int(self.out.ring.dtype["boxes"].shape[0])
        self.threads = p.threads or cpu.worker_threads() or 1
        self.backend_choice = "litert"
        try:
            self.landmarks = self.backend = LandmarksIk(threads=self.threads, min_presence=p.min_presence)
            self.progress(f"loading {LANDMARKS_IK} (MediaPipe pose landmark model, LiteRT)")
            self.backend.load()
            self.progress("warming up")
            self.backend.warmup()
        except (TfliteError, ValueError) as exc:
            raise WorkerError(f"inference model {LANDMARKS_IK}: {exc}") from exc
        binfo = self.backend.info()
        self.untrained, self.precision, self.backend_name = False, "fp32", binfo["name"]
        self.checkpoint = binfo["landmark_model"]
        self.no_person = 0
        self._setup_common()

    def _checkpoint(self) -> str | None:
        p = self.params
        if p.checkpoint is not None:
            # A named checkpoint must load: a typo never silently falls back to random weights.
            return p.checkpoint
        default = self.ctx.data_dir / f"poco_{self.variant}.pt"
        return str(default) if default.is_file() else None

    # ---------------------------------------------------------------------------- the loop
    def process(self, item):
        """Crop this frame and hand its batch to the backend; then write the PREVIOUS frame,
        whose network ran on the GPU meanwhile. With an asynchronous (GPU) backend the CPU work
        of frame N (read, crop, launch) overlaps frame N-1's network; the runner calls flush()
        as soon as no new frame is waiting, so a frame never waits for the next one.

        Several streams: the newest unprocessed record of every other stream joins this one
        (`_companions`), and the persons of all of them go through ONE network call; each
        stream still gets its own poses record (cross-stream batching, issue 20)."""
        t0 = time.monotonic_ns()
        parts = []
        for det in [item.record, *self._companions(item)]:  # our own copies: records are small
            part = self._prepare(det)
            if part is not None:
                parts.append(part)
        if not parts:
            return self.flush()
        job = self._submit_parts(parts) if any(p.crops is not None for p in parts) else None
        frame = _InFlight(parts, t0, job)
        written = self._finish_in_flight()
        self._in_flight = frame
        if job is None or not self.overlap:
            written += self._finish_in_flight()
        stretch_to(t0, self.params.min_process_ms)
        return _wrote(written)

    def _prepare(self, det) -> _Part | None:
        """Pin the record's frame and crop its persons; None when the frame is gone (stale)."""
        count = int(det["count"])
        if not 0 <= count <= min(self.max_persons, det["boxes"].shape[0]):
            raise ValueError(f"detections record {int(det['frame_id'])} has count {count} outside "
                             f"0..{self.max_persons}")
        stream = int(det["stream"])
        if not 0 <= stream < len(self.frame_rings):
            raise ValueError(f"detections record {int(det['frame_id'])} has stream {stream} outside "
                             f"0..{len(self.frame_rings) - 1}")
        frame_seq = self._pin_frame(det)  # also for nobody: the publisher's image sinks draw it
        if self._tee is not None:
            self._write_tee(det, frame_seq)
        boxes, keep = _usable_boxes(det["boxes"][:count])
        if len(keep) < count:
            self.bad_boxes += count - len(keep)
        crops = None
        if len(keep):
            crops = self._crop(det, boxes)
            if crops is None:
                self._unpin(det, frame_seq)
                self.stale += 1
                self.drops += 1
                self.extras["stale_frames"] = self.stale
                return None
        return _Part(det, keep, int(det["frame_height"]), int(det["frame_width"]), frame_seq, crops)

    def _companions(self, item) -> list:
        """The newest record of every other stream written since the last item we took (newest
        first, at most one per stream), copied under the seqlock. Only with several streams and
        a `latest` reader: a `next` reader (variant B, lossless) gets every record anyway."""
        reader = getattr(self.ctx.runner, "reader", None)
        last, self._last_seq = self._last_seq, item.seq
        if len(self.frame_rings) < 2 or reader is None or getattr(reader, "policy", "") != "latest" or not last:
            return []
        ring = reader.ring
        own = int(item.record["stream"])
        found: dict = {}
        seq = item.seq - 2
        oldest = max(last, item.seq - 2 * ring.slots)
        while seq > oldest and len(found) < len(self.frame_rings) - 1:
            slot = ring.slot_of(seq)
            if ring.slot_seq(slot) == seq:
                rec = ring.slot_record(slot).copy()
                stream = int(rec["stream"])
                if ring.slot_seq(slot) == seq and stream != own and stream not in found:
                    found[stream] = rec
            seq -= 2
        if found:
            self.companions += len(found)
            self.extras["companion_records"] = self.companions
        return list(found.values())

    def _frames_of(self, det):
        """(ring, member) of the frames ring of the record's stream."""
        name = self.frame_rings[int(det["stream"])]
        return self.rings[name], self.ctx.members.get(name)

    def _pin_frame(self, det) -> int:
        """Pin the frame slot the record refers to; its seq, or 0 (not pinned: gone, or no entry)."""
        frames, member = self._frames_of(det)
        slot, seq = int(det["frame_slot"]), int(det["frame_seq"])
        if member is None or not 0 <= slot < frames.slots or not seq:
            return 0
        return seq if member.pin(slot, seq) else 0

    def _write_tee(self, det, frame_seq: int) -> None:
        """A/B: B gets this record, and the frame stays until B has passed it (architecture.md §2).
        Never waits for B: a B that falls behind loses records rather than slowing A down."""
        ring, out = self._tee
        seq = out.write(det, keep_generation=True, timeout=0)
        if seq is None:
            return
        self.extras["ab_tee_written"] = self.extras.get("ab_tee_written", 0) + 1
        _, member = self._frames_of(det)
        if frame_seq and member.pin_claimed(frame_seq):
            out.hold(member, frame_seq, seq)

    def _unpin(self, det, frame_seq: int) -> None:
        if frame_seq:
            self._frames_of(det)[1].unpin(frame_seq)

    def pending(self) -> bool:
        return self._in_flight is not None

    def flush(self):
        return _wrote(self._finish_in_flight())

    def _finish_in_flight(self) -> int:
        frame, self._in_flight = self._in_flight, None
        if frame is None:
            return 0
        outs = self._outputs(frame.job) if frame.job is not None else []
        written = 0
        for part in frame.parts:
            out = outs.pop(0) if part.crops is not None else None
            written += self._write_part(part, out, frame.t0)
        return written

    def _write_part(self, part, out, t0) -> int:
        keep = part.keep
        if out is not None and "found" in out:
            # landmarks-ik: crops without a pose are nobody (see the module docstring)
            found = np.asarray(out.pop("found"), bool)
            self.no_person += int((~found).sum())
            keep, out = keep[found], {k: v[found] for k, v in out.items()}
        rec = self.out.begin()
        if rec is None:
            self._unpin(part.det, part.frame_seq)
            return 0
        self._fill(rec, part.det, keep, out, part.height, part.width)
        stamp(rec, "infer_start", t0)
        stamp(rec, "infer_end", time.monotonic_ns())
        seq = self.out.commit()
        if seq is None:
            self._unpin(part.det, part.frame_seq)
            return 0
        if part.frame_seq:  # the publisher copies this frame for image sinks: hold it until then
            self.out.hold(self._frames_of(part.det)[1], part.frame_seq, seq)
        if not len(keep):
            self.empty += 1
        if self.recorder is not None:
            self.recorder.step()
        self._update_extras()
        return 1

    def _crop(self, det, boxes):
        """Network input (B,3,224,224) cut from the referenced frame slot, or None when the slot
        no longer holds that frame (before or after cropping)."""
        from pipeline.models.preprocess import crop_cv2, normalise, square_boxes

        t = time.perf_counter()
        slot, seq = int(det["frame_slot"]), int(det["frame_seq"])
        frames, _ = self._frames_of(det)
        if not 0 <= slot < frames.slots or frames.slot_seq(slot) != seq:
            return None
        view = frames.slot_record(slot)
        h, w = int(view["height"]), int(view["width"])
        if (h, w) != (int(det["frame_height"]), int(det["frame_width"])) or h == 0 or w == 0:
            return None  # not the frame the boxes were found in
        pixels = view["pixels"][:h, :w]
        if self.landmarks is not None:
            centres, sides = square_boxes(boxes, self.landmarks.box_scale)
            crops = self.landmarks.crop(pixels, centres, sides)
            ok = frames.slot_seq(slot) == seq
            self._t["crop"].append((time.perf_counter() - t) * 1000.0)
            return (crops, centres, sides) if ok else None
        centres, sides = square_boxes(boxes)
        if self.cropper is not None:
            # whole rows of the slot are one contiguous block (DMA-able); the cropper cuts the width
            img = self.cropper.crops(view["pixels"][:h], centres, sides, width=w)
            ok = frames.slot_seq(slot) == seq  # the copy into pinned staging is the only read of the slot
        else:
            crops = np.stack([crop_cv2(pixels, c, s) for c, s in zip(centres, sides)])
            ok = frames.slot_seq(slot) == seq
            img = normalise(crops) if ok else None
        self._t["crop"].append((time.perf_counter() - t) * 1000.0)
        if not ok:
            return None
        return img, centres, sides

    def _submit_parts(self, parts) -> _Job:
        """One network call for the persons of every part (the crops of several streams are
        joined into one batch); landmarks-ik runs per crop anyway, so one call per part."""
        from pipeline.models.preprocess import bbox_info

        t = time.perf_counter()
        cropped = [p for p in parts if p.crops is not None]
        geometry = [(p.crops[1], p.crops[2], (p.width, p.height)) for p in cropped]
        if self.landmarks is not None:
            pendings = [self.landmarks.submit(img, c, s, wh) for (img, _, _), (c, s, wh) in
                        zip((p.crops for p in cropped), geometry)]
        else:
            imgs = [p.crops[0] for p in cropped]
            img = imgs[0] if len(imgs) == 1 else _concat(imgs)
            info = np.concatenate([bbox_info(c, s, wh) for c, s, wh in geometry])
            pendings = [self.backend.submit(img, info)]
        # batches holding persons of several streams: one network call for POCO; landmarks-ik
        # runs its per-crop model per frame within the batch
        self.calls += 1
        if len({int(p.det["stream"]) for p in cropped}) > 1:
            self.multi_stream_calls += 1
            self.extras["multi_stream_calls"] = self.multi_stream_calls
        self.extras["batches_submitted"] = self.calls
        return _Job(pendings, geometry, (time.perf_counter() - t) * 1000.0)

    def _outputs(self, job: _Job) -> list:
        """SMPL parameters per part of the job; waits for the device if it is still running."""
        from pipeline.models.postprocess import to_smpl_params

        t = time.perf_counter()
        raws = [p.result() for p in job.pendings]
        t1 = time.perf_counter()
        outs = []
        if self.landmarks is not None:
            outs = raws
            for key in ("landmarks", "ik"):   # the landmark network and the IK, apart
                self._t.setdefault(key, collections.deque(maxlen=TIMING_WINDOW)).append(
                    self.landmarks.timings[f"{key}_ms"])
        else:
            raw, a = raws[0], 0
            for centres, sides, wh in job.geometry:
                b = a + len(sides)
                part = raw if len(job.geometry) == 1 else {k: v[a:b] for k, v in raw.items()}
                outs.append(to_smpl_params(part, centres, sides, wh))
                a = b
        if self.smpl is not None:
            for params in outs:
                params["joints"] = self.smpl.joints(params)
        # model: time this worker spent on the network (launch + waiting for it), not GPU time
        self._t["model"].append(job.submit_ms + (t1 - t) * 1000.0)
        self._t["post"].append((time.perf_counter() - t1) * 1000.0)
        self.batches += 1
        return outs

    def _fill(self, rec, det, keep, out, height, width) -> None:
        rec[...] = 0
        for key in ("frame_id", "t_capture_ns", "source_epoch", "stream", "stamps_ns"):
            rec[key] = det[key]
        n = len(keep)
        rec["frame_height"], rec["frame_width"] = height, width
        rec["count"] = n
        rec["n_found"] = max(int(det["n_found"]), n)
        rec["untrained"] = self.untrained
        rec["model"] = self.model_name.encode()
        rec["backend"] = self.backend_name.encode()[:24]
        rec["precision"] = self.precision.encode()[:8]
        rec["track_ids"][n:] = -1
        if not n:
            return
        rec["track_ids"][:n] = det["track_ids"][keep]
        rec["boxes"][:n] = det["boxes"][keep]
        rec["scores"][:n] = det["scores"][keep]
        for key in ("global_orient", "body_pose", "betas", "transl", "pred_cam", "joint_uncertainty"):
            rec[key][:n] = out[key]
        if "joints" in out:
            rec["joints"][:n] = out["joints"]
            rec["has_joints"] = 1

    def _update_extras(self) -> None:
        now = time.monotonic()
        if now - self._last_extras < 0.5:
            return
        self._last_extras = now
        for key, values in self._t.items():
            if values:
                p50, p99 = np.percentile(np.fromiter(values, np.float64), [50, 99])
                self.extras[f"{key}_p50_ms"] = round(float(p50), 2)
                self.extras[f"{key}_p99_ms"] = round(float(p99), 2)
        self.extras.update({"stale_frames": self.stale, "empty_frames": self.empty,
                            "bad_boxes": self.bad_boxes, "batches": self.batches})
        pending = self.backend.info().get("background_pending")
        if pending is not None:   # batch sizes still being prepared while serving (cudagraph)
            self.extras["warming_batches"] = ",".join(map(str, pending))
        if self.landmarks is not None:
            self.extras["no_person_crops"] = self.no_person

    # ---------------------------------------------------------------------------- control
    def on_set(self, key, value):
        if key == "ab_tee":
            return self._set_tee(value)
        if key != "profile":
            raise SettingError(f"{self.name} has one live setting, profile=N (a torch profiler trace of "
                               f"N frames); got {key!r}")
        try:
            from pipeline.profiling.torch_trace import TorchTraceError, TorchTraceRecorder, parse_profile_request
        except ImportError as exc:
            raise SettingError(f"profiling is not available in this installation: {exc}") from exc
        default_dir = self.ctx.output_path("profiles", "profile out_dir")
        try:
            n, out_dir = parse_profile_request(value, default_dir)
            out_dir = self.ctx.output_path(out_dir, "profile out_dir")  # the trace is written there
            if self.recorder is None:
                self.recorder = TorchTraceRecorder(out_dir)
            return str(self.recorder.start(n, out_dir))
        except TorchTraceError as exc:
            raise SettingError(str(exc)) from exc

    def _set_tee(self, ring_name):
        """Set by the supervisor for A/B, not by users: start (ring name) or stop ("") the tee."""
        from pipeline.runtime.ring import Ring, RingError

        self._close_tee()
        if not ring_name:
            return "off"
        if not isinstance(ring_name, str):
            raise SettingError(f"ab_tee needs a ring name, got {type(ring_name).__name__}")
        try:
            ring = Ring.attach(ring_name)
        except RingError as exc:
            raise SettingError(f"ab_tee: {exc}") from exc
        reader = getattr(self.ctx.runner, "reader", None)
        if reader is not None and ring.dtype != reader.ring.dtype:
            ring.close()
            raise SettingError(f"ab_tee: ring {ring_name!r} does not hold {self.input} records")
        self._tee = (ring, Output(ring, self.generation))
        self.extras.update(ab_tee=ring_name, ab_tee_written=0)
        return ring_name

    def _close_tee(self) -> None:
        tee, self._tee = getattr(self, "_tee", None), None
        self.extras.pop("ab_tee", None)
        if tee is not None:
            ring, out = tee
            out.release_holds(everything=True)
            out._writer.release()
            del tee, out
            ring.close()

    def info(self) -> dict:
        backend = getattr(self, "backend", None)
        if backend is None:
            model = self.params.model
            return {"model": model if model in (LANDMARKS_IK, "auto") else f"poco-{model.split('-')[-1]}",
                    "backend": self.params.backend}
        out = {"model": self.model_name, "backend": self.backend_name, "device": self.device,
               "backend_choice": self.backend_choice, "threads": self.threads,
               "precision": self.precision, "untrained": self.untrained,
               "checkpoint": self.checkpoint or "none (random init)",
               "smpl_joints": self.smpl is not None, "max_batch": self.max_persons,
               "overlap_frames": self.overlap, **getattr(self, "engine", {})}
        if self.untrained:
            out["description"] = f"{self.model_name} {self.backend_name}/{self.device} — UNTRAINED random weights"
        return out

    def stop(self) -> None:
        self._close_tee()
        recorder = getattr(self, "recorder", None)
        if recorder is not None and recorder.active:
            try:
                recorder.finish()
            except Exception as exc:
                self.log.warning("profiler trace could not be written: %s", exc)
        backend = getattr(self, "backend", None)
        if backend is not None:
            backend.close()
        cropper = getattr(self, "cropper", None)
        if cropper is not None:
            cropper.unregister_host()  # before the runner unmaps the ring


def _wrote(n: int):
    return None if n == 0 else WROTE if n == 1 else Wrote(n)


@dataclass
class _Job:
    pendings: list             # backends.base.Pending: one for all parts (POCO), or one per part
    geometry: list             # per part with persons: (centres, sides, img_wh)
    submit_ms: float


@dataclass
class _Part:
    """One detections record (one stream's frame) of a batch."""
    det: np.void
    keep: np.ndarray
    height: int
    width: int
    frame_seq: int = 0         # the frame slot's seq while we pin it (0: not pinned)
    crops: tuple | None = None  # (img, centres, sides), None when nobody is in it


@dataclass
class _InFlight:
    """Frames whose records are not written yet (their network may still be running)."""
    parts: list
    t0: int
    job: _Job | None


def _concat(imgs):
    """Crops of several frames as one batch (numpy on a CPU, torch on a GPU)."""
    if isinstance(imgs[0], np.ndarray):
        return np.concatenate(imgs)
    import torch

    return torch.cat(imgs)


def _resolve_device(device: str) -> str:
    from pipeline.backends import cuda_available

    name = str(device).strip().lower()
    if name == "auto":
        return "cuda" if cuda_available() else "cpu"
    if name == "cpu":
        return name
    if name == "cuda" or name.startswith("cuda:"):
        if not cuda_available():
            raise WorkerError(f"inference device {device!r} asked for but CUDA is not available here; "
                              f"use --device cpu (or auto)")
        return name
    raise WorkerError(f"inference device {device!r} — allowed: auto, cpu, cuda, cuda:N")


def _usable_boxes(boxes):
    """Boxes the crop can use (finite, positive width and height) and their indices."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    ok = np.all(np.isfinite(b), axis=1) & (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    keep = np.flatnonzero(ok)
    return b[keep], keep
