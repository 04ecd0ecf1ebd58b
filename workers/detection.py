"""Detection worker (architecture.md §5): person boxes for the newest frame, into the detections ring.

On demand (architecture.md §2): a frame is read only when a consumer of the detections ring
(inference) has taken the previous record and is about to want the next one, so detection runs
on the frames inference will take and burns no CPU on frames that would be skipped; `lead` sets how
early before inference wants the record it starts (architecture.md §2). It reads
the frames ring with policy ``latest`` as a zero-copy view of the slot, which the runner's
reader claims, so capture cannot overwrite it meanwhile; after writing the record the slot is
held (`hold_input`) until every inference generation has passed that record, so inference crops
the very pixels the boxes were found in. A frame that changed under the detector anyway (no
member entry) is dropped and counted, never turned into boxes. The detections record carries
the frame reference (slot + seq) and every header field of the frame.

Tracking ids: trackers (the IoU tracker, ultralytics' ByteTrack/BoT-SORT) see only the frames
detection runs on, i.e. about inference's rate when inference is the slower stage. Between two
of them a person moves further, so at low rates fast motion matches less often and a person
may get a new id; track ages counted in frames last longer in seconds. Lossless mode feeds
every frame to the tracker.

Detector choice (`kind`): ``auto`` = YOLO when a ``<data_dir>/yolo*.pt`` exists, else ``blazepose``
(the multi-person detector whose weights ship in the mediapipe wheel); ``mediapipe`` = the legacy
one-person solution (said in `status`); ``center`` = a fixed centre square. `status` names the
detector's device and precision. A new
``source_epoch`` (file looped, source changed) resets the detector so no tracker state or
video-mode skeleton survives a scene cut.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal, Union

from pipeline.runtime.records import stamp
from pipeline.runtime.worker import WROTE, SettingError, Worker, WorkerError, stretch_to

# Live settings (`pipeline set detection key=value`) and the detector attribute each one changes.
LIVE = {"conf": "conf", "iou": "iou", "min_score": "min_score", "min_box_size": "post.min_box_size",
        "order": "post.order"}


@dataclass
class Params:
    kind: Literal["auto", "yolo", "blazepose", "mediapipe", "center", "fixed"] = "auto"
    model: Union[str, None] = None         # YOLO weights file (default: the first <data_dir>/yolo*.pt); --weights
    preset: Union[str, None] = None        # yolo: "seed" = 256 px, conf 0.8, NMS 0.4, score > 0.7
    conf: Union[float, None] = None
    iou: Union[float, None] = None
    imgsz: Union[int, None] = None
    device: Union[str, None] = None        # yolo: cpu / cuda / 0 (default: cuda when present)
    half: Union[bool, None] = None         # yolo: fp16 on GPU (default: on when on GPU)
    tracker: str = "auto"                  # yolo: auto | iou | bytetrack | botsort | none
    engine: str = "auto"                   # yolo: auto | trt | compile | cudagraph | eager | ultralytics
    views: Union[str, None] = None         # blazepose: full | tiles | both
    rounds: Union[int, None] = None        # blazepose: extra masked passes per view
    round_every: Union[int, None] = None   # blazepose: masked rounds every Nth frame (default 5; on the CPU its refit frames)
    refine: Union[str, None] = None        # blazepose: mask | landmarks | none (box refit by the landmark model)
    refine_every: Union[int, None] = None  # blazepose: refit every Nth frame (default 1 on a GPU, 5 on the CPU)
    follow: Union[bool, None] = None       # blazepose: keep a person the detector misses while the landmark model sees them (default on)
    segment: Union[bool, None] = None      # blazepose: person segmentation's blobs as extra landmark regions (default: with follow)
    min_box_size: float = 16.0             # px; smaller boxes are dropped
    order: Literal["area", "score"] = "area"
    size: float = 1.0                      # center: side as a fraction of min(height, width)
    boxes: Union[list, None] = None        # fixed: [[x1, y1, x2, y2], ...] as fractions of the frame
    lead: Union[float, None] = None        # start a frame this many x our p50 before inference wants it (default
                                           # 1.5 x p50 + 5 ms; lower: less latency, less FPS on a shared GPU/core)
    min_process_ms: float = 0.0            # test/bench knob: each frame takes at least this long
    allow_unsafe_checkpoint: bool = False  # yolo: full unpickling of the weights (--allow-unsafe-checkpoint)


def _valid_lead(value) -> bool:
    """`lead`: None (the default) or a multiple of detection's p50 in [0, 10]."""
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)
                             and 0.0 <= value <= 10.0)


class Detection(Worker):
    input = "frames"
    policy = "latest"
    output = "detections"
    copy_input = False  # the detector reads the pixels in the slot (claimed while we work)
    on_demand = True    # a frame only when inference is about to want the next record
    Params = Params
    cpu_role = "detector"

    def setup(self) -> None:
        from pipeline.detectors import DetectorError, make_detector

        p = self.params
        if not _valid_lead(p.lead):
            raise WorkerError(f"detection.lead = {p.lead!r}: a multiple of detection's time per frame in [0, 10] "
                              f"(or leave it out for the default)")
        max_persons = int(self.ctx.shared.get("max_persons") or self.out.ring.dtype["boxes"].shape[0])
        options = {"max_persons": max_persons, "min_box_size": p.min_box_size, "order": p.order}
        if p.kind == "center":
            options["size"] = p.size
        elif p.kind == "fixed":
            options["boxes"] = p.boxes
        elif p.kind in ("yolo", "auto"):
            yolo = {"model": p.model, "preset": p.preset, "conf": p.conf, "iou": p.iou, "imgsz": p.imgsz,
                    "device": p.device, "half": p.half, "tracker": p.tracker, "engine": p.engine,
                    "allow_unsafe_checkpoint": p.allow_unsafe_checkpoint or None}
            options.update({k: v for k, v in yolo.items() if v is not None})
        if p.kind in ("blazepose", "auto"):
            from pipeline.runtime.cpu import worker_threads

            # LiteRT threads: this worker's CPU budget (pipeline/runtime/cpu.py)
            blaze = {"views": p.views, "rounds": p.rounds, "round_every": p.round_every, "refine": p.refine,
                     "refine_every": p.refine_every, "follow": p.follow, "segment": p.segment,
                     "device": p.device, "threads": worker_threads()}
            options.update({k: v for k, v in blaze.items() if v is not None})
        if p.kind in ("mediapipe", "blazepose") or (p.kind == "auto" and not p.model):
            # image folders are unrelated stills: a video-mode tracker would carry a false skeleton
            options["static_image_mode"] = self._source_is_stills()
        self._make = lambda: make_detector(p.kind, data_dir=self.ctx.data_dir, **options)
        self._detector_error = DetectorError
        try:
            self.detector = self._make()
            self.progress(f"loading the {self.detector.kind} person detector")
            self.detector.setup()
        except DetectorError as exc:
            raise WorkerError(str(exc)) from exc
        self.frames = self.out.ring
        streams = self.ctx.shared.get("streams") or ["main"]
        self.frame_rings = ["frames"] if len(streams) <= 1 else [f"frames.{n}" for n in streams]
        self.extras["direct_upload"] = self._register_frames(self.detector)
        # Several sources: one detector per stream, so no tracker or video-mode state crosses
        # from one camera to another (made when a stream's first frame arrives).
        self.detectors: dict = {}   # stream index (>= 1) -> its detector; stream 0 has self.detector
        self.epochs: dict = {}
        self.torn = 0       # frames overwritten while the detector looked at them
        self.persons = 0
        self.found_frames = 0
        self.extras.update({"detector": self.detector.kind, "torn_frames": 0})
        device = str(getattr(self.detector, "device", "cpu"))
        if device != "cpu":
            from pipeline.profiling.device_stats import DeviceStats

            self.device_stats = DeviceStats.for_device(device)
        self.log.info("person detector: %s", self._describe())

    def _source_is_stills(self) -> bool:
        from pathlib import Path

        spec = (self.ctx.shared.get("source") or {}).get("spec", "sample")
        if spec == "sample":
            return False  # a panning clip whose scene cuts bump source_epoch (-> reset)
        if isinstance(spec, str) and not spec.startswith(("rtsp://", "rtmp://", "http://", "https://")):
            path = Path(spec)
            return path.is_dir() or any(ch in spec for ch in "*?[")
        return False

    def _detector_for(self, stream: int):
        if stream == 0:
            return self.detector
        det = self.detectors.get(stream)
        if det is None:
            try:
                det = self._make()
                det.setup()
            except self._detector_error as exc:
                raise WorkerError(str(exc)) from exc
            self._register_frames(det)
            self.detectors[stream] = det
            self.extras["detectors"] = len(self.detectors) + 1
        return det

    def _register_frames(self, detector) -> bool:
        """Page-lock the frames rings for a GPU detector: each frame then goes up by DMA straight
        from its ring slot, with no host copy (the slot is claimed until the boxes are back)."""
        if str(getattr(detector, "device", "cpu")) == "cpu":
            return False
        done = [detector.register_host(*self.rings[name].host_region())
                for name in self.frame_rings if name in self.rings]
        return bool(done) and all(done)

    def process(self, item):
        t0 = time.monotonic_ns()
        frame = item.record  # a view into the frames ring slot
        height, width = int(frame["height"]), int(frame["width"])
        epoch = int(frame["source_epoch"])
        stream = int(frame["stream"])
        detector = self._detector_for(stream)
        if epoch != self.epochs.get(stream):
            # A static-image detector has no video state to forget, and rebuilding its graph on
            # every reopened one-image folder would cost more than the detection itself.
            if stream in self.epochs and not getattr(detector, "static_image_mode", False):
                detector.reset()
            self.epochs[stream] = epoch
        if height == 0 or width == 0:
            return self._write(item, frame, None, height, width, t0)  # an empty frame has nobody in it
        try:
            found = detector.detect(frame["pixels"][:height, :width])
        except Exception:
            if not self.input_valid(item):
                return self._drop_torn()  # the pixels changed under the detector: not its fault
            raise
        stretch_to(t0, self.params.min_process_ms)
        warming = detector.warming()
        if warming or "detector_warming" in self.extras:
            self.extras["detector_warming"] = warming   # e.g. a faster engine still compiling
        if not self.input_valid(item):
            return self._drop_torn()
        return self._write(item, frame, found, height, width, t0)

    def _drop_torn(self):
        self.torn += 1
        self.drops += 1
        self.extras["torn_frames"] = self.torn
        return None

    def _write(self, item, frame, found, height, width, t0):
        rec = self.out.begin()
        if rec is None:
            return None
        for key in ("frame_id", "t_capture_ns", "source_epoch", "stream", "stamps_ns"):
            rec[key] = frame[key]
        # the header fields were read from a live slot: trust them only if it is still ours
        if not self.input_valid(item):
            self.out.abort()
            return self._drop_torn()
        rec["frame_slot"] = item.slot
        rec["frame_seq"] = item.seq
        rec["frame_height"], rec["frame_width"] = height, width
        if found is None:
            rec["count"] = rec["n_found"] = 0
            rec["boxes"] = 0
            rec["scores"] = 0
            rec["track_ids"] = -1
        else:
            found.to_record(rec)
        n = int(rec["count"])
        self.persons = n
        self.found_frames += n > 0
        stamp(rec, "detect_start", t0)
        stamp(rec, "detect_end", time.monotonic_ns())
        seq = self.out.commit()
        if seq is None:
            return None
        self.hold_input(item, seq)  # inference crops these pixels: keep them until it has
        self.extras.update({"persons": n, "n_found": int(rec["n_found"]),
                            "frames_with_person": self.found_frames})
        return WROTE

    def demand_lead_ns(self, expected_ms: float) -> int:
        # Detection and inference on one GPU (or one core) take turns on it: a frame started early
        # only slows the frame inference is on and then waits for it (architecture.md §2).
        if self.params.lead is None:
            return super().demand_lead_ns(expected_ms)
        return int(self.params.lead * expected_ms * 1e6)

    def on_set(self, key, value):
        if key == "lead":
            if not _valid_lead(value):
                raise SettingError(f"lead = {value!r} — a multiple of detection's time per frame in [0, 10], "
                                   f"or null for the default (1.5 x + 5 ms)")
            self.params.lead = None if value is None else float(value)
            return self.params.lead
        if key not in LIVE:
            raise SettingError(f"{self.name} live settings: {', '.join([*LIVE, 'lead'])} (got {key!r})")
        target, attr = self.detector, LIVE[key]
        if "." in attr:
            head, attr = attr.split(".")
            target = getattr(target, head)
        if not hasattr(target, attr):
            raise SettingError(f"the {self.detector.kind} detector has no setting {key!r}")
        if key == "order":
            if value not in ("area", "score"):
                raise SettingError(f"order = {value!r} — allowed: area, score")
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SettingError(f"{key} = {value!r} — expected a number")
        elif key == "min_box_size":
            if value < 0:
                raise SettingError(f"min_box_size = {value!r} — must be >= 0 pixels")
            value = float(value)
        elif not 0.0 <= value <= 1.0:
            raise SettingError(f"{key} = {value!r} — must be in [0, 1]")
        else:
            value = float(value)
        for det in [self.detector, *self.detectors.values()]:  # every stream's detector gets it
            obj = det
            for part in LIVE[key].split(".")[:-1]:
                obj = getattr(obj, part)
            setattr(obj, attr, value)
        return value

    def _describe(self) -> str:
        d = self.detector
        text = f"{d.kind} detector"
        model = getattr(d, "model_path", None)
        if model:
            text += f" ({model})"
        if getattr(d, "device", None):
            text += f" on {d.device} {'fp16' if getattr(d, 'half', False) else 'fp32'}"
            engine = getattr(d, "engine", None) or getattr(d, "runtime", None)
            text += f" ({engine})" if engine else ""
        if d.single_person:
            text += " — finds ONE person per frame"
        return text

    def info(self) -> dict:
        det = getattr(self, "detector", None)
        if det is None:
            return {"detector": self.params.kind}
        out = {"description": self._describe(), "detector": det.kind, "single_person": bool(det.single_person)}
        try:
            out.update({f"detector_{k}": v for k, v in det.info().items() if k not in ("kind", "single_person")})
        except Exception as exc:  # info is for humans; never let it break `ready`
            out["detector_info_error"] = str(exc)
        return out

    def stop(self) -> None:
        for det in [getattr(self, "detector", None), *getattr(self, "detectors", {}).values()]:
            if det is not None:
                det.close()  # unregisters the frames rings before the runner unmaps them

