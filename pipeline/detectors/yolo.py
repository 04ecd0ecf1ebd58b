"""ultralytics YOLO as a multi-person detector, from a weights file the user provides.

The network runs through `YoloRunner` (letterbox, fp16 network, decoding and NMS on the GPU,
in a CUDA graph or a TensorRT engine; docs/architecture.md §5) unless `engine="ultralytics"`
asks for ultralytics' own predict/track loop. Tracking ids come from ultralytics' ByteTrack or
BoT-SORT fed with our boxes, or from the IoU tracker.

Nothing is ever downloaded: before ultralytics is first imported we switch it offline
(YOLO_OFFLINE, no auto-install) and point its settings at a local folder, and a model name
that is not an existing file is refused. Nothing is unpickled either, unless the user asks:
`load_yolo` turns on ultralytics' own safe loading (docs/architecture.md §12).
"""
from __future__ import annotations

import importlib.util
import logging
import os
import sys
from pathlib import Path

import numpy as np

from pipeline.detectors.base import Detections, Detector, DetectorError
from pipeline.detectors.postprocess import PostConfig, postprocess
from pipeline.detectors.tracker import IouTracker
from pipeline.detectors.yolo_model import check_detector, load_yolo
from pipeline.detectors.yolo_runner import ENGINES

log = logging.getLogger(__name__)

TRACKED_PER_PERSON = 2   # boxes given to ByteTrack/BoT-SORT per published person

PERSON = 0
TRACKERS = ("auto", "iou", "bytetrack", "botsort", "none")
# The seed's YOLOv3: 256 px input, confidence 0.8, NMS IoU 0.4, then score > 0.7.
PRESETS = {"seed": {"imgsz": 256, "conf": 0.8, "iou": 0.4, "min_score": 0.7}}


def prepare_offline_env(config_dir: str | os.PathLike | None) -> None:
    """Make ultralytics offline and keep its settings file out of the user's home."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "False")
    if config_dir is not None and "YOLO_CONFIG_DIR" not in os.environ:
        Path(config_dir).mkdir(parents=True, exist_ok=True)
        os.environ["YOLO_CONFIG_DIR"] = str(config_dir)
    if "ultralytics" in sys.modules and os.environ.get("YOLO_OFFLINE") != "1":
        log.warning("ultralytics was imported before YOLO_OFFLINE=1 was set; it may try the network")


class YoloDetector(Detector):
    kind = "yolo"
    single_person = False

    def __init__(self, model: str | os.PathLike | None = None, preset: str | None = None,
                 conf: float | None = None, iou: float | None = None, imgsz: int | None = None,
                 min_score: float | None = None, device: str | None = None,
                 half: bool | None = None, tracker: str = "auto", iou_threshold: float = 0.3,
                 max_age: int = 30, config_dir: str | os.PathLike | None = None,
                 warmup: bool = True, max_persons: int = 8, min_box_size: float = 16.0,
                 order: str = "area", clip: bool = False, engine: str = "auto",
                 cache_dir: str | os.PathLike | None = None, allow_unsafe_checkpoint: bool = False):
        super().__init__()
        if model is None:
            raise DetectorError("the yolo detector needs a weights file: model=data/yolo11n.pt "
                                "(put any ultralytics yolo*.pt into data/; it is never downloaded)")
        if preset is not None and preset not in PRESETS:
            raise DetectorError(f"unknown yolo preset {preset!r}; choose one of {sorted(PRESETS)}")
        base = dict(PRESETS.get(preset, {}))
        self.conf = _fraction("conf", conf if conf is not None else base.get("conf", 0.25))
        self.iou = _fraction("iou", iou if iou is not None else base.get("iou", 0.45))
        self.min_score = _fraction("min_score", min_score if min_score is not None else base.get("min_score", 0.0))
        self.imgsz = imgsz if imgsz is not None else base.get("imgsz", 640)
        if not isinstance(self.imgsz, int) or not 32 <= self.imgsz <= 4096 or self.imgsz % 32:
            raise DetectorError(f"yolo imgsz must be a multiple of 32 in 32..4096, got {self.imgsz!r}")
        if tracker not in TRACKERS:
            raise DetectorError(f"yolo tracker must be one of {TRACKERS}, got {tracker!r}")
        if engine not in ENGINES + ("ultralytics",):
            raise DetectorError(f"yolo engine must be one of {ENGINES + ('ultralytics',)}, got {engine!r}")
        self.engine_request = engine
        self.cache_dir = cache_dir
        self.preset = preset
        self.model_path = Path(model)
        self.device_request = device
        self.half_request = half
        self.tracker_request = tracker
        self.config_dir = config_dir
        self.warmup = warmup
        self.allow_unsafe_checkpoint = bool(allow_unsafe_checkpoint)
        self.post = PostConfig(max_persons=max_persons, min_box_size=min_box_size, order=order, clip=clip)
        self.iou_tracker = IouTracker(iou_threshold=iou_threshold, max_age=max_age)
        self.tracker = "none"
        self.device = "cpu"
        self.half = False
        self._model = None
        self._runner = None
        self._ul_tracker = None
        # ultralytics' trackers restart their ids at reset(); shifting them keeps ours unique
        self._id_offset = 0
        self._max_id = -1

    def setup(self) -> None:
        path = self.model_path
        if not path.is_file():
            raise DetectorError(
                f"YOLO weights file {str(path)!r} does not exist; put an ultralytics model there "
                f"(e.g. data/yolo11n.pt from the ultralytics releases) - posepipe never downloads it")
        prepare_offline_env(self.config_dir if self.config_dir is not None else path.parent / ".ultralytics")
        self.device, self.half = self._resolve_device()
        self.tracker = self._resolve_tracker()
        try:
            model = load_yolo(path, self.allow_unsafe_checkpoint)
        except DetectorError:
            raise
        except Exception as e:
            # Safe loading reports a garbage file as whatever torch's restricted unpickler hit first.
            fix = "" if "re-download" in str(e) else ("; re-download or re-export it (an ultralytics detect .pt), "
                                                      "or use another --detector")
            hint = "" if self.allow_unsafe_checkpoint else (
                " (loaded safely, without unpickling: a file you trust that needs more, e.g. custom classes, "
                "loads fully with --allow-unsafe-checkpoint)")
            raise DetectorError(f"{str(path)!r} is not a usable YOLO model file: {type(e).__name__}: {e}{fix}"
                                f"{hint}") from e
        check_detector(model, path)
        stride = _stride(model)
        if self.imgsz % stride:
            raise DetectorError(f"yolo imgsz {self.imgsz} is not a multiple of {path.name}'s stride {stride}; "
                                f"set detection.imgsz to a multiple of {stride}")
        from ultralytics.cfg import DEFAULT_CFG_DICT
        # ultralytics 8.4 spells half precision `quantize=16` and deprecates `half`; 8.3 only knows `half`
        self._half_kw = {"quantize": 16} if "quantize" in DEFAULT_CFG_DICT else {"half": True}
        names = getattr(model, "names", {}) or {}
        if names.get(PERSON) not in (None, "person"):
            log.warning("%s: class 0 is %r, not 'person'; its boxes are used as persons anyway",
                        path, names.get(PERSON))
        self._model = model
        if self.engine_request != "ultralytics":
            self._runner = self._build_runner(model, path)
            if self.tracker in ("bytetrack", "botsort"):
                self._ul_tracker = _ultralytics_tracker(self.tracker)
        self._ready = True
        if self.warmup:
            if self._runner is not None:
                self._runner.warming_up = True
            try:
                self._detect(np.zeros((self.imgsz, self.imgsz, 3), np.uint8), self.imgsz, self.imgsz)
            except Exception as exc:
                self._ready = False
                if _is_out_of_memory(exc):
                    raise self._out_of_memory(path) from exc
                raise DetectorError(f"{str(path)!r} failed its first run on {self.device} (engine {self.engine}): "
                                    f"{type(exc).__name__}: {exc}; try detection.engine=eager") from exc
            finally:
                if self._runner is not None:
                    self._runner.warming_up = False
            self.reset()
        log.info("yolo detector ready: %s on %s (%s, engine %s, tracker %s)", path, self.device,
                 "fp16" if self.half else "fp32", self.engine, self.tracker)

    def _build_runner(self, model, path):
        from pipeline.detectors.yolo_runner import YoloRunner
        try:
            return YoloRunner(model, path, self.device, self.half, self.imgsz, engine=self.engine_request,
                              cache_dir=self.cache_dir, allow_unsafe_checkpoint=self.allow_unsafe_checkpoint)
        except DetectorError:
            raise
        except Exception as exc:
            if _is_out_of_memory(exc):
                raise self._out_of_memory(path) from exc
            raise DetectorError(f"{str(path)!r} could not be set up on {self.device}: "
                                f"{type(exc).__name__}: {exc}") from exc

    def _out_of_memory(self, path) -> DetectorError:
        return DetectorError(f"the GPU ran out of memory loading {str(path)!r} on {self.device} (imgsz {self.imgsz}); "
                             f"free GPU memory, lower detection.imgsz, or set detection.device=cpu")

    @property
    def engine(self) -> str:
        return self._runner.engine if self._runner is not None else "ultralytics"

    def _resolve_device(self) -> tuple[str, bool]:
        import torch
        dev = self.device_request
        cuda = torch.cuda.is_available()
        if dev in (None, "auto"):
            dev = "cuda:0" if cuda else "cpu"
        dev = str(dev)
        if not (dev == "cpu" or dev.startswith("cuda") or dev.isdigit()):
            raise DetectorError(f"yolo device must be 'cpu', 'cuda' or 'cuda:N', got {dev!r}")
        on_gpu = dev != "cpu"
        if on_gpu and not cuda:
            raise DetectorError(f"yolo device {dev!r} asked for, but torch sees no CUDA GPU; use device='cpu'")
        half = on_gpu if self.half_request is None else bool(self.half_request)
        if half and not on_gpu:
            raise DetectorError("yolo half precision needs a CUDA device; use half=False on the CPU")
        return dev, half

    def _resolve_tracker(self) -> str:
        req = self.tracker_request
        # ultralytics' trackers need the `lap` package and would pip-install it at run time
        has_lap = importlib.util.find_spec("lap") is not None
        if req == "auto":
            return "bytetrack" if has_lap else "iou"
        if req in ("bytetrack", "botsort") and not has_lap:
            raise DetectorError(f"the ultralytics {req} tracker needs the 'lap' package: pip install lap "
                                f"(or use tracker='iou')")
        return req

    def _run(self, rgb: np.ndarray):
        # ultralytics takes numpy images as BGR; the copy also frees the shared-memory view
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        kw = dict(conf=self.conf, iou=self.iou, imgsz=self.imgsz, classes=[PERSON], device=self.device,
                  verbose=False, max_det=300)
        if self.half:
            kw.update(self._half_kw)
        if self.tracker in ("bytetrack", "botsort"):
            return self._model.track(bgr, persist=True, tracker=f"{self.tracker}.yaml", **kw)[0]
        return self._model.predict(bgr, **kw)[0]

    def _detect(self, rgb: np.ndarray, height: int, width: int) -> Detections:
        if self._runner is not None:
            return self._detect_fast(rgb, height, width)
        res = self._run(rgb)
        b = res.boxes
        boxes = b.xyxy.cpu().numpy().astype(np.float32) if b is not None else np.zeros((0, 4), np.float32)
        scores = b.conf.cpu().numpy().astype(np.float32) if b is not None else np.zeros(0, np.float32)
        ids = None
        if self.tracker in ("bytetrack", "botsort"):
            ids = (b.id.cpu().numpy().astype(np.int32) if b is not None and b.id is not None
                   else np.full(len(boxes), -1, np.int32))
            ids = np.where(ids >= 0, ids + self._id_offset, -1).astype(np.int32)
            if len(ids):
                self._max_id = max(self._max_id, int(ids.max()))
        keep = scores > self.min_score
        boxes, scores = boxes[keep], scores[keep]
        ids = ids[keep] if ids is not None else None
        tracker = self.iou_tracker if self.tracker == "iou" else None
        return postprocess(boxes, scores, height, width, self.post, track_ids=ids, tracker=tracker)

    def _detect_fast(self, rgb: np.ndarray, height: int, width: int) -> Detections:
        boxes, scores = self._runner(rgb, self.conf, self.iou)
        ids = None
        if self._ul_tracker is not None:
            # ByteTrack's time grows with the boxes it gets (2 ms per frame for ~300 on an H200
            # host, tools/device/results/h200_session8_yolo_breakdown.log); only max_persons are
            # ever published, so it gets the best few (boxes come best first), with room for
            # its second, low-score association round
            tracked = TRACKED_PER_PERSON * self.post.max_persons
            boxes, scores, ids = self._track(boxes[:tracked], scores[:tracked], height, width)
        keep = scores > self.min_score
        boxes, scores = boxes[keep], scores[keep]
        ids = ids[keep] if ids is not None else None
        tracker = self.iou_tracker if self.tracker == "iou" else None
        return postprocess(boxes, scores, height, width, self.post, track_ids=ids, tracker=tracker)

    def _track(self, boxes, scores, height, width):
        """ultralytics' ByteTrack/BoT-SORT on our boxes; like its own track loop, only confirmed
        tracks are returned, with the tracker's boxes. No image is passed: BoT-SORT's camera-motion
        step would look at every pixel."""
        from ultralytics.engine.results import Boxes
        data = np.concatenate([boxes, scores[:, None], np.zeros((len(boxes), 1), np.float32)], axis=1)
        tracks = self._ul_tracker.update(Boxes(data, (height, width)), None)
        if not len(tracks):
            empty = np.zeros((0, 4), np.float32)
            return empty, np.zeros(0, np.float32), np.zeros(0, np.int32)
        ids = tracks[:, 4].astype(np.int32) + self._id_offset
        self._max_id = max(self._max_id, int(ids.max()))
        return tracks[:, :4].astype(np.float32), tracks[:, 5].astype(np.float32), ids

    def reset(self) -> None:
        self.iou_tracker.reset()
        if self._ul_tracker is not None:
            self._ul_tracker.reset()
        predictor = getattr(self._model, "predictor", None)
        for t in getattr(predictor, "trackers", None) or []:
            t.reset()
        self._id_offset = self._max_id + 1

    def info(self) -> dict:
        return {"kind": self.kind, "model": str(self.model_path), "device": self.device, "half": self.half,
                "precision": "fp16" if self.half else "fp32", "engine": self.engine if self._ready else None,
                "single_person": False, "preset": self.preset, "imgsz": self.imgsz,
                "tracker": {"bytetrack": "ultralytics:bytetrack", "botsort": "ultralytics:botsort"}.get(
                    self.tracker, self.tracker),
                "thresholds": {"conf": self.conf, "iou": self.iou, "min_score": self.min_score},
                **self.post.as_dict(), **(self._runner.compile_state() if self._runner is not None else {})}

    def warming(self) -> str:
        return self._runner.warming() if self._runner is not None else ""

    def register_host(self, address: int, size: int) -> bool:
        return self._runner is not None and self._runner.locked.register(address, size)

    def unregister_host(self) -> None:
        if self._runner is not None:
            self._runner.locked.release()

    def close(self) -> None:
        self.unregister_host()
        if self._runner is not None:
            self._runner.close()
        self._model = None
        self._runner = None
        self._ul_tracker = None
        super().close()


def _stride(model) -> int:
    strides = getattr(getattr(model, "model", None), "stride", None)
    return int(max(float(v) for v in strides)) if strides is not None and len(strides) else 32


def _ultralytics_tracker(name: str):
    from ultralytics.trackers.track import TRACKER_MAP
    from ultralytics.utils import YAML, IterableSimpleNamespace
    from ultralytics.utils.checks import check_yaml
    cfg = IterableSimpleNamespace(**YAML.load(check_yaml(f"{name}.yaml")))
    if name == "botsort":
        cfg.gmc_method = None    # no image is passed (see YoloDetector._track)
        cfg.with_reid = False
    return TRACKER_MAP[name](args=cfg)


def _is_out_of_memory(exc: BaseException) -> bool:
    try:
        import torch
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except ImportError:
        pass
    return "out of memory" in str(exc).lower()


def _fraction(name: str, v) -> float:
    if not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
        raise DetectorError(f"yolo {name} must be in [0, 1], got {v!r}")
    return float(v)
