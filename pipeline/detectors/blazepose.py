"""The offline multi-person default: BlazePose's trained person detector, all of its detections.

The model ships inside the mediapipe wheel (`pose_detection.tflite`, see `ssd_decode` for its
facts). The legacy MediaPipe solution keeps only its best detection; this detector keeps all of
them and adds two things the model needs to find more than the most prominent person
(measured on the photos that ship with ultralytics, docs/architecture.md §8):

- **views**: besides the whole frame letterboxed to 224x224, a wide or tall frame is also seen
  as overlapping squares along its long side, so people are not shrunk by the letterbox;
- **rounds**: after a pass, the people it found are blacked out in the model input and the
  model runs again on the same view; the detector is trained to answer with its one most
  prominent person, so masking lets the next one through. Rounds stop as soon as a pass finds
  nobody new; what they find must score `round_min_score`. Default: 1 round every
  `round_every` 5 frames (on the CPU on its refit frames), what it finds being followed in
  between; every frame without follow on a GPU; none without a refit on the CPU.
- **scores**: without a refit every frame, detections must score `min_score` 0.5 and masked
  rounds 0.7 (at 0.5 a masked round adds as many false boxes as people on the sample clip).
  With the landmark model checking every person on every frame (the GPU default) they are
  0.3 and 0.5: weaker detections go to the model, which drops those without a pose.

Detections of all views and rounds are merged by IoU of their person boxes. A person box is
derived from the keypoints (`ssd_decode.person_boxes`, ratios fitted on the ultralytics photos):
the model's own box is not the body.

- **refine** (`pipeline.detectors.landmark_boxes`): the keypoint box only guesses the body's
  extent from 4 points, and a wrong extent is both a missed person and a false one. With
  `refine="mask"` or `"landmarks"` MediaPipe's pose landmark model runs on each merged
  detection's region (MediaPipe's own ROI) and the box becomes the extent of its person
  segmentation ("mask") or of its seen landmarks grown by body proportions ("landmarks");
  regions where it sees no pose (presence < 0.5) are dropped, and one body seen in several
  views is kept once (by its torso landmarks, not box overlap). It costs one landmark pass
  per person and frame: ~15 ms each on LiteRT (CPU); on a GPU all persons of a frame are one
  replay of the landmark model's CUDA graph (`landmarks_ik.GraphedLandmarks`, the same torch
  conversion as the detector). `refine_every` N > 1 refits all persons every
  Nth frame only; in between a person whose keypoint box overlaps one refitted before keeps
  that fitted box's shape relative to its keypoint box, and only new persons are refitted.
  Default: "mask", every frame on a GPU, every 5th on the CPU. Measured on the sample clip
  (tools/detect_quality.py): false persons per 100 frames 14.6 -> 7.5 (CPU default, same
  recall, same median time) and 18.3 -> 5.4 (GPU default, same recall).
- **follow** (on with a refine): the persons of the last refit go through the landmark model
  again with the next refit's detections, in the region the model itself drew around them
  (its two auxiliary points, as MediaPipe tracks a pose between detections). A body the
  detector misses now (face turned away, too small for this view) stays while the model
  still sees a pose there (presence >= 0.5, or >= 0.1 for up to 2 refits in a row: the
  model's presence flickers; sample clip, GPU settings: 67.8 % -> 71.9 % of the people found,
  false persons unchanged at 3.3 per 100 frames); a body found both ways is kept once, as the
  detection; a followed region that lies mostly (>= 75 %) inside the boxes of detected people
  has drifted onto them and is dropped. Between CPU refits a followed person the detector
  does not see keeps its last box. A reset (scene cut, new frame size) forgets everyone;
  with `static_image_mode` (an image folder) every frame is a new scene. The followed regions'
  landmark pass is launched right after the detector's first pass (on a GPU on the landmark
  model's own CUDA stream, so both run at once), and a detection whose landmark region is where a followed
  body's landmarks now put it (regions overlapping >= SAME_REGION_IOU) takes those landmarks
  rather than a pass of its own: a steady scene costs one landmark pass per person, not two
  (sample clip: GPU default 70.3 % -> 69.9 % found, false 5.4 -> 5.0 per 100 frames).
  Measured on the sample clip: CPU default 51.2 % -> 66.5 % of the people found, false
  persons per 100 frames 7.5 -> 8.8; GPU default 64.9 % -> 65.8 %, 5.4 -> 5.8.

- **segment** (on with follow): on the masked rounds' frames, MediaPipe's selfie segmentation
  (also in the wheel) outlines people whichever way they face; each blob of it that no
  followed person covers joins the followed regions (`segment_proposals`), and the landmark
  model keeps the ones it sees a pose in. A proposal's landmarks are never taken by a
  detection (they come from a guessed region). On a GPU the segmentation runs on a thread
  beside the next frame and its blobs join that frame. Measured (tools/detect_quality.py):
  bus.jpg's walker, whom the detector never finds, is found; photos 66.7 % -> 83.3 % found,
  the sample clip unchanged (its walker is too small for the 256x144 mask).

The people-found figures above compare variants within one run; they were measured against a
ground truth that ended zidane.jpg's left man at his shoulder, not at his pointing hand (corrected
in session 11, tools/people_clip.py), so their absolute values are not today's (README).

Runtimes: `litert` runs the .tflite file on LiteRT (XNNPACK, CPU), one view at a time, with
OpenCV's area resize; `torch` runs the same weights as a torch module
(`pipeline.models.tflite_torch`, outputs within 1e-3 of LiteRT's) on `device`: on a GPU the
frame is uploaded once and every view is letterboxed on the device (antialiased bilinear) and
run as one batch, captured in a CUDA graph per frame size (a second graph runs the masked
rounds, the mask drawn on the device); the frame goes up by DMA straight from the frames ring
when the detection worker page-locked it (`register_host`). Default (`runtime="auto"`, `device`
unset): torch on the GPU when torch sees one, else LiteRT on the CPU.
"""
from __future__ import annotations

import logging
import time

import numpy as np

from pipeline.detectors.base import Detections, Detector, DetectorError
from pipeline.detectors.landmark_boxes import (Refined, covered, distinct_bodies, keypoints_from_anchors,
                                               limit_size_change, match_one_to_one, region_squares,
                                               transfer_shapes)
from pipeline.detectors.postprocess import PostConfig, postprocess
from pipeline.detectors.ssd_decode import (INPUT_SIZE, NUM_ANCHORS, NUM_COORDS, anchor_centres, decode,
                                           person_boxes, weighted_nms)
from pipeline.detectors.tracker import IouTracker, iou_matrix

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "litert", "torch")
VIEWS = ("full", "tiles", "both")
REFINES = ("none", "landmarks", "mask")
FOLLOW_COVERED = 0.75  # a followed region this much inside the boxes of found people holds nobody new
SHAPE_MATCH_IOU = 0.5   # keypoint boxes of one body on consecutive frames overlap at least this much
SHAPE_STEP = 1.03       # between refits a body's box grows or shrinks by at most this factor per frame
ROUND_EVERY_FOLLOWED = 5   # masked rounds every this many frames where what they find is followed
ROUND_DUE = 10 ** 6       # frames since the last masked round after a reset: the next frame runs one
FOLLOW_KEEP_PRESENCE = 0.1   # a followed body stays from this pose presence ...
FOLLOW_UNSURE_FRAMES = 2     # ... for this many refits in a row below min_presence
SAME_REGION_IOU = 0.5   # a detection's landmark region overlapping a followed body's this much is that body
TILE_OVERLAP = 0.1      # least overlap of neighbouring squares (of their side): 0.25 found no more people
MODEL_INPUTS = {"input_1": (1, INPUT_SIZE, INPUT_SIZE, 3)}


class BlazePoseDetector(Detector):
    kind = "blazepose"
    single_person = False

    def __init__(self, model: str | None = None, runtime: str = "auto", device: str | None = None,
                 threads: int = 1, min_score: float | None = None, nms_iou: float = 0.3, merge_iou: float = 0.3,
                 views: str = "both", rounds: int | None = None, round_min_score: float | None = None,
                 width_ratio: float = 0.3, height_ratio: float = 0.9,
                 iou_threshold: float = 0.3, max_age: int = 5, max_persons: int = 8,
                 min_box_size: float = 16.0, order: str = "area", clip: bool = True, refine: str = "mask",
                 refine_every: int | None = None, follow: bool = True, static_image_mode: bool = False,
                 round_every: int | None = None, segment: bool | None = None):
        super().__init__()
        for name, v in (("min_score", min_score), ("nms_iou", nms_iou), ("merge_iou", merge_iou),
                        ("round_min_score", round_min_score)):
            if v is None and name in ("min_score", "round_min_score"):
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise DetectorError(f"blazepose {name} must be in [0, 1], got {v!r}")
        if runtime not in RUNTIMES:
            raise DetectorError(f"blazepose runtime must be one of {RUNTIMES}, got {runtime!r}")
        if views not in VIEWS:
            raise DetectorError(f"blazepose views must be one of {VIEWS}, got {views!r}")
        if refine not in REFINES:
            raise DetectorError(f"blazepose refine must be one of {REFINES}, got {refine!r}")
        if refine_every is not None and (isinstance(refine_every, bool) or not isinstance(refine_every, int)
                                         or not 1 <= refine_every <= 300):
            raise DetectorError(f"blazepose refine_every (frames) must be in 1..300, got {refine_every!r}")
        if round_every is not None and (isinstance(round_every, bool) or not isinstance(round_every, int)
                                        or not 1 <= round_every <= 300):
            raise DetectorError(f"blazepose round_every (frames) must be in 1..300, got {round_every!r}")
        if not isinstance(static_image_mode, bool):
            raise DetectorError(f"blazepose static_image_mode must be true or false, got {static_image_mode!r}")
        if not isinstance(follow, bool):
            raise DetectorError(f"blazepose follow must be true or false, got {follow!r}")
        if segment is not None and not isinstance(segment, bool):
            raise DetectorError(f"blazepose segment must be true or false, got {segment!r}")
        if segment and (not follow or refine == "none"):
            raise DetectorError("blazepose segment=true hands its proposals to the landmark model as followed "
                                "regions: it needs follow=true and refine 'mask' or 'landmarks'")
        if rounds is not None and (not isinstance(rounds, int) or not 0 <= rounds <= 16):
            raise DetectorError(f"blazepose rounds (extra masked passes per view) must be in 0..16, got {rounds!r}")
        if not isinstance(threads, int) or not 1 <= threads <= 64:
            raise DetectorError(f"blazepose threads must be in 1..64, got {threads!r}")
        for name, v in (("width_ratio", width_ratio), ("height_ratio", height_ratio)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.05 <= v <= 3.0:
                raise DetectorError(f"blazepose {name} (a multiple of the body radius) must be in 0.05..3, got {v!r}")
        self.model_path = model
        self.runtime_request = runtime
        self.device_request = device
        self.threads = threads
        self._score_requests = (min_score, round_min_score)
        self.nms_iou = float(nms_iou)
        self.merge_iou = float(merge_iou)
        self.views = views
        self.rounds = rounds
        self._resolve_scores(checked=False)   # final in setup(), once the refit cadence is known
        self.width_ratio = float(width_ratio)
        self.height_ratio = float(height_ratio)
        self.refine = refine
        self.refine_every = refine_every
        self.follow = follow and refine != "none"
        # unrelated stills (an image folder): nothing carries from one frame to the next
        self.static_image_mode = static_image_mode
        self.round_every = round_every
        self._refiner = None
        # person segmentation's blobs as extra landmark regions, on the masked rounds' frames
        self.segment = self.follow if segment is None else segment
        self._proposals = None
        self._segment_later = False   # on a GPU: the blobs of a round frame join on the next refit
        self.proposed = 0        # proposals handed to the landmark model on the last frame
        # persons to look for again in the next refit where the detector last saw them or not:
        # the landmark model's region points (F,2,2), fitted boxes (F,4), scores (F,), and the
        # refits in a row each one's pose presence was below min_presence (F,)
        self._followed = _nobody_followed()
        self._shapes = (np.zeros((0, 4), np.float32), np.zeros((0, 4), np.float32))   # keypoint, fitted
        self._since_refined = 0
        self._since_round = ROUND_DUE
        self._frame_size = None
        self.post = PostConfig(max_persons=max_persons, min_box_size=min_box_size, order=order, clip=clip)
        self.tracker = IouTracker(iou_threshold=iou_threshold, max_age=max_age)
        self.anchors = anchor_centres()
        self.runtime = None
        self.device = "cpu"
        self.half = False
        self._net = None
        self.passes = 0          # model passes of the last frame (views x rounds actually run)
        self.reused_regions = 0  # detections that took a followed body's landmarks (no pass of their own)

    # -- setup ------------------------------------------------------------------------------
    def setup(self) -> None:
        import cv2

        from pipeline.models.tflite import TfliteError, mediapipe_model_path
        try:
            path = self.model_path or mediapipe_model_path("pose_detection")
        except TfliteError as exc:
            raise DetectorError(str(exc)) from exc
        device = self.device_request
        if device in (None, "auto"):
            device = "cuda" if self.runtime_request != "litert" and _cuda_available() else "cpu"
        on_gpu = device != "cpu"
        runtime = self.runtime_request
        if runtime == "auto":
            runtime = "torch" if on_gpu else "litert"
        if runtime == "litert" and on_gpu:
            raise DetectorError(f"blazepose runtime 'litert' runs on the CPU, not on device "
                                f"{device!r}; use runtime='torch' (or runtime='auto') for a GPU")
        try:
            if runtime == "litert":
                self._net = _LiteRtNet(path, self.threads, cv2)
            else:
                self._net = _TorchNet(path, device, self.threads)
                self.device = str(self._net.device)
        except TfliteError as exc:
            raise DetectorError(str(exc)) from exc
        except Exception as exc:
            from pipeline.detectors.yolo import _is_out_of_memory
            if _is_out_of_memory(exc):
                raise DetectorError(f"the GPU ran out of memory loading {path} on {device}; free "
                                    f"GPU memory or set detection.device=cpu") from exc
            raise
        self.runtime = runtime
        if self.refine != "none":
            self._refiner = _landmark_refiner(self.threads, self.refine, self.device)
        if self.segment:
            self._proposals = _segment_proposals(self.threads)
            # On a GPU the detector's frame is a few ms: the segmentation (LiteRT, ~2 ms on the
            # CPU) runs on a thread beside the next frame and its blobs join that frame's
            # landmark pass. Stills carry nothing from one image to the next: there it waits.
            self._segment_later = self.device.startswith("cuda") and not self.static_image_mode
        if self.refine_every is None:
            # one landmark pass per person is ~15 ms on one CPU core (LiteRT): there, refit every
            # 5th frame and move the fitted shapes with the keypoints between, so the refit does
            # not decide the frame rate. On a GPU all persons are one graph replay: every frame.
            self.refine_every = 1 if self.device.startswith("cuda") else 5
        on_gpu = self.device.startswith("cuda")
        if self.rounds is None:
            self.rounds = 1 if on_gpu or self.refine != "none" else 0
        if self.round_every is None:
            # What a masked round finds is followed from then on, so it need not run on every
            # frame. On the CPU it runs on refit frames (every 5th): the shipped photos 50 % ->
            # 66.7 % found, median detection time unchanged (2-core box). On a GPU every 5th
            # frame too: with a round on every frame the pipeline gave 117 FPS (capture->publish
            # p50 16.5 ms), with none 208 FPS (12.2 ms), on one H100 in one run
            # (h100_session9_e2e_variants.md); the sample clip lost 2 points of the people found
            # and 1.7 false persons per 100 frames (tools/detect_quality.py).
            # Without follow (or a refit) nothing holds what it found: every frame.
            if not self.follow:
                self.round_every = self.refine_every if self.refine != "none" and not on_gpu else 1
            else:
                self.round_every = self.refine_every if not on_gpu else ROUND_EVERY_FOLLOWED
        # Where the landmark model checks every person on every frame, weaker detections may
        # go to it: it drops the ones without a pose (measured on the sample clip, GPU default:
        # 65.8 % -> 70.3 % of the people found, false persons per 100 frames 5.8 -> 5.4). A CPU
        # refit every 5th frame cannot check them in between (there it doubled the false ones).
        self._resolve_scores(checked=self.refine != "none" and self.refine_every == 1)
        self.model_path = str(path)
        self._ready = True
        t0 = time.perf_counter()
        self.detect(np.zeros((360, 640, 3), np.uint8))  # warm-up: first passes allocate
        self.reset()
        log.info("blazepose detector ready: %s on %s/%s (warm-up %.0f ms)", path, self.runtime, self.device,
                 (time.perf_counter() - t0) * 1e3)

    def _resolve_scores(self, checked: bool) -> None:
        """min_score and round_min_score: as asked, else 0.3/0.5 where the landmark model checks
        every person every frame (`checked`), 0.5/0.7 where it does not."""
        min_request, round_request = self._score_requests
        self.min_score = float(min_request if min_request is not None else (0.3 if checked else 0.5))
        self.round_min_score = max(self.min_score, float(round_request if round_request is not None
                                                         else (0.5 if checked else 0.7)))

    # -- detection --------------------------------------------------------------------------
    def _detect(self, rgb: np.ndarray, height: int, width: int) -> Detections:
        boxes, scores = self.find(rgb, height, width)
        return postprocess(boxes, scores, height, width, self.post, tracker=self.tracker)

    def find(self, rgb: np.ndarray, height: int, width: int):
        """Person boxes (K,4) in frame pixels and their scores, all views and rounds merged."""
        if self.static_image_mode or (height, width) != self._frame_size:
            # another frame size is another scene: nobody followed or refitted carries over
            self.reset()
            self._frame_size = (height, width)
        views = view_squares(height, width, self.views)
        maps = []
        for x0, y0, side_w, side_h in views:
            scale, px, py, _, _ = letterbox_geometry(side_h, side_w)
            maps.append((x0 - px / scale, y0 - py / scale, scale))  # frame px = offset + input px / scale
        refit = self._refiner is not None and self._refit_due()
        round_due = self._round_due(refit)
        self.proposed = 0
        if self._proposals is not None and refit:
            self._propose(rgb, round_due)
        started = []

        def start_followed():
            # the landmark model on the followed regions: on a GPU it runs on its own stream
            # while the detector's passes run on theirs
            anchors, held, *_ = self._followed
            started.append(self._refiner.start(rgb, keypoints_from_anchors(anchors), held))

        follow_now = refit and self.follow and len(self._followed[2])
        inputs, outs = self._net.first_pass(rgb, views, meanwhile=start_followed if follow_now else None)
        all_boxes, all_scores, all_kps = [], [], []
        active = list(range(len(views)))
        self.passes = 0
        rounds = self.rounds if round_due else 0
        self._since_round = 0 if rounds else self._since_round + 1
        for round_ in range(rounds + 1):
            if not active:
                break
            if round_:
                outs = self._net.run(inputs, active)
            self.passes += len(active)
            still = []
            for i, (raw, logits) in zip(active, outs):
                kps, scores = self._decode(raw, logits)
                if round_ and len(scores):
                    keep = scores >= self.round_min_score
                    kps, scores = kps[keep], scores[keep]
                if not len(scores):
                    continue
                ox, oy, scale = maps[i]
                kps_px = kps * INPUT_SIZE / scale + np.array([ox, oy], np.float32)
                boxes = person_boxes(kps_px, self.width_ratio, self.height_ratio)
                all_boxes.append(boxes)
                all_scores.append(scores)
                all_kps.append(kps_px)
                if round_ < rounds:
                    # black out what was found (in input pixels) so the next round sees the others
                    local = (boxes - np.array([ox, oy, ox, oy], np.float32)) * scale
                    self._net.mask(inputs, i, local)
                still.append(i)
            active = still
        if all_boxes:
            boxes, scores, kps = np.concatenate(all_boxes), np.concatenate(all_scores), np.concatenate(all_kps)
            idx = merge_order(boxes, scores, self.merge_iou, height, width)
            boxes, scores, kps = boxes[idx], scores[idx], kps[idx]
        else:
            boxes, scores, kps = np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 4, 2), np.float32)
        if self._refiner is None:
            return boxes, scores
        return self._refine(rgb, kps, boxes, scores, height, width, refit, started[0] if started else None)

    def _propose(self, rgb, round_due: bool) -> None:
        """Blobs of the person segmentation (of a round frame: this one, or on a GPU the last
        one) that nobody followed covers join the followed regions with score 0: the landmark
        pass keeps those it sees a pose in, and follows them."""
        anchors, held, scores, unsure = self._followed
        room = self.post.max_persons - len(scores)
        if self._segment_later:
            blobs = self._proposals.collect()
            if round_due:
                self._proposals.start(rgb)
        else:
            blobs = self._proposals.blobs(rgb) if round_due and room > 0 else None
        if blobs is None or room <= 0:
            return
        regions, boxes = self._proposals.select(blobs, held, room)
        self.proposed = len(boxes)
        if len(boxes):
            self._followed = (np.concatenate([anchors, regions]), np.concatenate([held, boxes]).astype(np.float32),
                              np.concatenate([scores, np.zeros(len(boxes), np.float32)]),
                              np.concatenate([unsure, np.zeros(len(boxes), np.int64)]))

    def _round_due(self, refit: bool) -> bool:
        """Whether this frame runs the masked rounds: every `round_every`th frame, and with
        refits every few frames (the CPU) only on a refit frame (with refits every frame, every
        frame is one)."""
        if self._since_round + 1 < self.round_every:
            return False
        return refit or self._refiner is None

    def _refit_due(self) -> bool:
        """Whether the next `_refine` refits every person (rather than moving known shapes)."""
        return (self._since_refined + 1 >= self.refine_every
                or not (len(self._shapes[0]) or len(self._followed[2])))

    def _refine(self, rgb, kps, boxes, scores, height: int, width: int, refit: bool, started=None):
        """`started`: the landmark pass of the followed regions, launched by `find`."""
        self._since_refined += 1
        if refit:
            self._since_refined = 0
            return self._refine_all(rgb, kps, boxes, scores, started)
        # a body refined earlier keeps its box shape on its new keypoint box; new ones are refined
        then_kp, then_fit = self._shapes
        match = match_one_to_one(iou_matrix(boxes, then_kp), SHAPE_MATCH_IOU)
        known = np.flatnonzero(match >= 0)
        moved = transfer_shapes(then_kp[match[known]], then_fit[match[known]], boxes[known])
        # The detector's keypoints put a body's scale less steadily than the body changes it: one
        # keypoint box shrank by a third from one frame to the next where the person did not (sample
        # clip, bus.jpg's second man). Its position is followed, its size only by SHAPE_STEP a frame
        # (a person walking at the camera grows far less); the next refit sets the size again.
        # Sample clip, CPU default: 66.8 % -> 69.3 % found, 10.8 -> 3.3 false persons per 100 frames.
        moved = limit_size_change(moved, then_fit[match[known]], SHAPE_STEP)
        new = np.flatnonzero(match < 0)
        keep, r = self._refined(rgb, kps[new], boxes[new], scores[new])
        new_kp, new_fit, new_scores = boxes[new][keep], r.boxes[keep], scores[new][keep]
        # a new detection on a known body (a duplicate the box merge missed) is not a new person
        fresh = (iou_matrix(new_fit, moved).max(axis=1, initial=0.0) <= self.merge_iou if len(new_fit)
                 else np.zeros(0, bool))
        out_kp = np.concatenate([boxes[known], new_kp[fresh]])
        out_fit = np.concatenate([moved, new_fit[fresh]]).astype(np.float32)
        out_scores = np.concatenate([scores[known], new_scores[fresh]])
        np.clip(out_fit[:, 0::2], 0, width, out=out_fit[:, 0::2])
        np.clip(out_fit[:, 1::2], 0, height, out=out_fit[:, 1::2])
        self._shapes = (out_kp, out_fit)
        if self.follow:
            # between refits a followed person the detector does not see now keeps its last
            # fitted box; newly refitted ones are followed from the next refit on
            anchors, held, held_scores, unsure = self._followed
            if len(held) and fresh.any():
                # a body refitted now as a new detection is followed from its new landmarks; its
                # old record would come back as a second box once the detector misses it again
                # (sample clip, CPU default: 4 such duplicates in 240 frames)
                again = iou_matrix(held, new_fit[fresh]).max(axis=1) > self.merge_iou
                anchors, held, held_scores, unsure = (a[~again] for a in self._followed)
            lost = ((iou_matrix(held, out_fit).max(axis=1, initial=0.0) <= self.merge_iou)
                    & (covered(held, out_fit) < FOLLOW_COVERED) if len(held) else np.zeros(0, bool))
            out_fit = np.concatenate([out_fit, held[lost]]).astype(np.float32)
            out_scores = np.concatenate([out_scores, held_scores[lost]])
            self._limit_followed(
                np.concatenate([anchors, r.anchors[keep][fresh]]), np.concatenate([held, new_fit[fresh]]),
                np.concatenate([held_scores, new_scores[fresh]]),
                np.concatenate([unsure, np.zeros(int(fresh.sum()), np.int64)]))
        return out_fit, out_scores

    def _refine_all(self, rgb, kps, boxes, scores, started=None):
        n = len(boxes)
        anchors, held, held_scores, unsure = self._followed if self.follow else _nobody_followed()
        if len(held_scores):
            # the persons of the last refit go through the landmark model with this frame's
            # detections, in the regions it drew around them (MediaPipe's own tracking): a body
            # the detector misses now (face turned away, masked round not run) is kept while
            # the model still sees a pose there; one body found both ways is kept once, as the
            # detection (it outranks)
            follow_kps = keypoints_from_anchors(anchors)
            r_followed = (self._refiner.finish(started) if started is not None
                          else self._refiner(rgb, follow_kps, held))
            # a proposal's landmarks come from a region guessed around a blob, not one the model
            # drew around a body: no detection takes them
            reusable = np.arange(len(held_scores)) < len(held_scores) - self.proposed
            r = Refined.join([self._detections_refined(rgb, kps, boxes, r_followed, reusable), r_followed])
            kps = np.concatenate([kps.reshape(-1, 4, 2), follow_kps.astype(np.float32)])
            boxes = np.concatenate([boxes, held]).astype(np.float32)
            scores = np.concatenate([scores, held_scores]).astype(np.float32)
        else:
            r = self._refiner(rgb, kps, boxes)
        priority = scores + (np.arange(len(scores)) < n)
        # A followed body is kept through a short dip of its pose presence (hysteresis): the
        # landmark model's presence for one person flickers from frame to frame (bus.jpg's
        # walker, the same image repeated: 0.96, 0.14, 0.97 at IoU 0.91 with his box throughout).
        # Proposals (the rows after the followed ones) must pass min_presence.
        unsure_rows = np.concatenate([np.zeros(n, np.int64), unsure])
        rows = np.arange(len(scores))
        held_row = (rows >= n) & (rows < len(scores) - self.proposed) & (unsure_rows < FOLLOW_UNSURE_FRAMES)
        floor = np.where(held_row, FOLLOW_KEEP_PRESENCE, self._refiner.min_presence)
        keep = self._select(r, scores, priority, floor)
        detected = keep[keep < n]
        followed = keep[keep >= n]
        if len(followed) and len(detected):
            # a region that drifted onto people the detector found outlines them, not a person
            # of its own (seen where one person reaches across another)
            drifted = followed[covered(r.boxes[followed], r.boxes[detected]) >= FOLLOW_COVERED]
            keep = keep[~np.isin(keep, drifted)]
        self._shapes = (boxes[detected], r.boxes[detected])
        # a followed body's score is the landmark model's pose presence in its region
        out_scores = np.where(keep < n, scores[keep], r.person[keep]).astype(np.float32)
        fitted = r.boxes[keep]
        if self.follow:
            sure = (keep < n) | (r.person[keep] >= self._refiner.min_presence)
            self._limit_followed(r.anchors[keep], fitted, out_scores, np.where(sure, 0, unsure_rows[keep] + 1))
        return fitted, out_scores

    def _limit_followed(self, anchors, boxes, scores, unsure) -> None:
        """Follows these bodies from the next refit on, the best `max_persons` of them."""
        # more followed bodies than the record holds would cost landmark passes for nothing
        top = np.argsort(-np.asarray(scores), kind="stable")[:self.post.max_persons]
        self._followed = (np.asarray(anchors, np.float64).reshape(-1, 2, 2)[top],
                          np.asarray(boxes, np.float32).reshape(-1, 4)[top], np.asarray(scores, np.float32)[top],
                          np.asarray(unsure, np.int64)[top])

    def _detections_refined(self, rgb, kps, boxes, r_followed, reusable):
        """The Refined of each detection. One whose region is where a followed body's landmarks
        put it now (regions overlapping >= SAME_REGION_IOU) is that body: it takes those
        landmarks instead of a landmark pass of its own (MediaPipe tracks a pose the same way),
        so a steady scene costs one pass per person, not two."""
        n = len(boxes)
        match = np.full(n, -1, np.int64)
        seen = np.flatnonzero((r_followed.person >= self._refiner.min_presence) & reusable)
        if n and len(seen):
            there = region_squares(keypoints_from_anchors(r_followed.anchors[seen]))
            m = match_one_to_one(iou_matrix(region_squares(kps), there), SAME_REGION_IOU)
            match[m >= 0] = seen[m[m >= 0]]
        fresh, known = np.flatnonzero(match < 0), np.flatnonzero(match >= 0)
        self.reused_regions += len(known)
        rows = Refined.join([self._refiner(rgb, kps[fresh], boxes[fresh]), r_followed.take(match[known])])
        return rows.take(np.argsort(np.concatenate([fresh, known]), kind="stable"))

    def _refined(self, rgb, kps, boxes, scores, priority=None):
        """(indices of the detections the landmark model sees a pose in, one per body; its Refined)."""
        r = self._refiner(rgb, kps, boxes)
        return self._select(r, scores, priority), r

    def _select(self, r, scores, priority=None, floor=None):
        """Indices of the rows of `r` the landmark model sees a pose in, one per body."""
        present = np.flatnonzero(r.person >= (self._refiner.min_presence if floor is None else floor))
        rank = scores if priority is None else priority
        # the same body seen whole and in a tile now has one set of landmarks; people whose
        # fitted boxes overlap (an arm across another person) do not
        return present[distinct_bodies(rank[present], r.centres[present], r.torso[present])]

    def _decode(self, raw: np.ndarray, logits: np.ndarray):
        boxes, kps, scores = decode(raw, logits, self.anchors, self.min_score)
        if not len(scores):
            return kps, scores
        _, kps, scores = weighted_nms(boxes, kps, scores, self.nms_iou)
        return kps, scores

    def reset(self) -> None:
        self.tracker.reset()
        self._shapes = (np.zeros((0, 4), np.float32), np.zeros((0, 4), np.float32))
        self._followed = _nobody_followed()
        if self._proposals is not None:
            self._proposals.drop()
        self._since_refined = 0
        self._since_round = ROUND_DUE
        self._frame_size = None

    def info(self) -> dict:
        return {"kind": self.kind, "model": self.model_path, "runtime": self.runtime, "device": self.device,
                "half": self.half, "precision": "fp16" if self.half else "fp32", "single_person": False,
                "tracker": "iou", "views": self.views, "rounds": self.rounds,
                "round_every": self.round_every, "refine": self.refine,
                "refine_every": self.refine_every, "follow": self.follow, "segment": self.segment,
                "static_image_mode": self.static_image_mode,
                "thresholds": {"min_score": self.min_score, "round_min_score": self.round_min_score,
                               "nms_iou": self.nms_iou, "merge_iou": self.merge_iou},
                **self.post.as_dict()}

    def register_host(self, address: int, size: int) -> bool:
        locked = getattr(self._net, "locked", None)
        return locked is not None and locked.register(address, size)

    def unregister_host(self) -> None:
        locked = getattr(self._net, "locked", None)
        if locked is not None:
            locked.release()

    def close(self) -> None:
        self.unregister_host()
        self._net = None
        if self._refiner is not None:
            self._refiner.close()
        self._refiner = None
        if self._proposals is not None:
            self._proposals.close()
        self._proposals = None
        super().close()


def _nobody_followed():
    return np.zeros((0, 2, 2)), np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)


def _landmark_refiner(threads: int, outline: str, device: str = "cpu"):
    from pipeline.detectors.landmark_boxes import LandmarkRefiner
    from pipeline.models.tflite import TfliteError
    try:
        return LandmarkRefiner(threads=threads, outline=outline, device=device)
    except TfliteError as exc:
        raise DetectorError(f"blazepose refine={outline!r} needs MediaPipe's pose landmark model: {exc}") from exc


def _segment_proposals(threads: int):
    from pipeline.detectors.segment_proposals import SegmentProposals
    from pipeline.models.tflite import TfliteError
    try:
        return SegmentProposals(threads=threads)
    except TfliteError as exc:
        raise DetectorError(f"blazepose segment=true needs MediaPipe's selfie segmentation model: {exc}; "
                            f"or set detection.segment=false") from exc


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def letterbox_geometry(height: int, width: int) -> tuple[float, int, int, int, int]:
    """(scale, pad_x, pad_y, new_w, new_h): input px = image px * scale + pad, the image
    resized to new_w x new_h and centred in 224x224."""
    scale = INPUT_SIZE / max(height, width)
    nw, nh = max(1, round(width * scale)), max(1, round(height * scale))
    return scale, (INPUT_SIZE - nw) // 2, (INPUT_SIZE - nh) // 2, nw, nh


class _LiteRtNet:
    """The .tflite file on LiteRT (XNNPACK on the CPU), one view at a time."""

    def __init__(self, path, threads: int, cv2):
        from pipeline.models.tflite import TfliteModel
        self.cv2 = cv2
        self.model = TfliteModel(path, threads=threads, inputs=MODEL_INPUTS, outputs=2)
        shapes = sorted(self.model.output_shapes)
        want = sorted([(1, NUM_ANCHORS, NUM_COORDS), (1, NUM_ANCHORS, 1)])
        if shapes != want:
            from pipeline.models.tflite import TfliteError
            raise TfliteError(f"{path} has output tensors {self.model.output_shapes}, expected {want}: "
                              f"not BlazePose's person detector")
        self.regressor_first = self.model.output_shapes[0][-1] == NUM_COORDS

    def first_pass(self, rgb, views, meanwhile=None):
        if meanwhile is not None:
            meanwhile()
        inputs = [self._letterbox(rgb[y0:y0 + h, x0:x0 + w]) for x0, y0, w, h in views]
        return inputs, self.run(inputs, range(len(inputs)))

    def _letterbox(self, img: np.ndarray) -> np.ndarray:
        """img -> (224,224,3) float32 in [-1, 1], centred, black (-1) borders."""
        h, w = img.shape[:2]
        _, px, py, nw, nh = letterbox_geometry(h, w)
        # INTER_AREA: a plain bilinear shrink of a 1080p frame to 224 aliases and loses people
        small = self.cv2.resize(img, (nw, nh), interpolation=self.cv2.INTER_AREA)
        x = np.full((INPUT_SIZE, INPUT_SIZE, 3), -1.0, np.float32)
        np.multiply(small, 1.0 / 127.5, out=x[py:py + nh, px:px + nw], casting="unsafe")
        x[py:py + nh, px:px + nw] -= 1.0
        return x

    def run(self, inputs, which) -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        for i in which:
            a, b = self.model(inputs[i][None])
            raw, logits = (a, b) if self.regressor_first else (b, a)
            out.append((raw[0], logits[0]))
        return out

    @staticmethod
    def mask(inputs, i, boxes_input_px) -> None:
        for x1, y1, x2, y2 in np.clip(np.round(boxes_input_px), 0, INPUT_SIZE).astype(int):
            inputs[i][y1:y2, x1:x2] = -1.0


class _TorchNet:
    """The same weights as a torch module on `device`; all views of a frame in one batch. On a
    GPU, one CUDA graph per frame size holds the upload's consumer, the letterbox and the
    network of the first pass, and a second graph the masked rounds: the boxes to black out go
    up as a small (views, MASK_BOXES, 4) tensor and the mask is drawn on the device, so a round
    costs one tiny upload and one replay instead of an eager network call."""

    MASK_BOXES = 16     # boxes blacked out per view (cumulative over rounds); more are rare

    def __init__(self, path, device: str, threads: int):
        import torch

        from pipeline.backends.pinned import PageLocked
        from pipeline.models.tflite_torch import build_module
        self.torch = torch
        self.device = torch.device("cuda:0" if device == "cuda" else device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise DetectorError(f"blazepose device {device!r} asked for, but torch sees no CUDA GPU; "
                                f"use detection.device=cpu")
        if self.device.type == "cpu":
            torch.set_num_threads(threads)
        _check_model_file(path)
        self.net = build_module(path, nchw_input=True).to(self.device)
        self.cuda = self.device.type == "cuda"
        self.locked = PageLocked(self.device)   # frames rings the detection worker registered
        self._graphs: dict = {}

    def first_pass(self, rgb, views, meanwhile=None):
        """(inputs, [(raw, logits)] per view). `meanwhile` is called once the pass is launched
        and before its outputs are read back: on a GPU, CPU work done there overlaps the pass."""
        torch = self.torch
        h, w = rgb.shape[:2]
        key = (h, w, tuple(views))
        with torch.inference_mode():
            if not self.cuda:
                if meanwhile is not None:
                    meanwhile()
                frame = torch.from_numpy(np.ascontiguousarray(rgb))
                batch = letterbox_views(frame, views)
                raw, logits = self.net(batch)
                return batch, self._to_host(raw, logits, range(len(views)))
            cap = self._graphs.get(key) or self._capture(key, h, w, views)
            if self.locked.contains(rgb):
                # straight from the page-locked ring slot (claimed until the read-back below)
                cap.frame.copy_(torch.from_numpy(rgb), non_blocking=True)
            else:
                np.copyto(cap.host_np, rgb)
                cap.frame.copy_(cap.host, non_blocking=True)
            cap.graph.replay()
            cap.mask_np[:] = 0.0     # an all-zero box covers no pixel
            cap.masked[:] = 0
            if meanwhile is not None:
                meanwhile()
            return cap, self._to_host(cap.raw, cap.logits, range(len(views)))

    def _capture(self, key, h, w, views):
        torch = self.torch
        if len(self._graphs) >= 4:
            self._graphs.pop(next(iter(self._graphs)))
        cap = _Graph()
        cap.host = torch.empty((h, w, 3), dtype=torch.uint8, pin_memory=True)
        cap.host_np = cap.host.numpy()
        cap.frame = torch.zeros((h, w, 3), dtype=torch.uint8, device=self.device)
        cap.mask_host = torch.zeros((len(views), self.MASK_BOXES, 4), dtype=torch.float32, pin_memory=True)
        cap.mask_np = cap.mask_host.numpy()
        cap.masked = np.zeros(len(views), int)
        cap.mask_dev = torch.zeros((len(views), self.MASK_BOXES, 4), dtype=torch.float32, device=self.device)
        cap.pixels = torch.arange(INPUT_SIZE, dtype=torch.float32, device=self.device)
        from pipeline.backends.graphs import capture_graph

        def first():
            batch = letterbox_views(cap.frame, views)
            return (batch, *self.net(batch))

        def both():   # the warm-up covers the masked round's kernels too
            batch, *_ = first()
            self.net(_mask_on_device(batch, cap.mask_dev, cap.pixels))

        cap.graph, (cap.batch, cap.raw, cap.logits) = capture_graph(first, self.device, warmup=both)
        cap.round_graph, (cap.raw2, cap.logits2) = capture_graph(
            lambda: self.net(_mask_on_device(cap.batch, cap.mask_dev, cap.pixels)), self.device, warmup_calls=0)
        self._graphs[key] = cap
        log.info("blazepose: captured CUDA graphs for %dx%d frames, %d views", w, h, len(views))
        return cap

    def run(self, inputs, which):
        torch = self.torch
        idx = list(which)
        with torch.inference_mode():
            if isinstance(inputs, _Graph):
                inputs.mask_dev.copy_(inputs.mask_host, non_blocking=True)
                inputs.round_graph.replay()
                return self._to_host(inputs.raw2, inputs.logits2, idx)
            raw, logits = self.net(inputs[idx])
        return self._to_host(raw, logits, range(len(idx)))

    @staticmethod
    def _to_host(raw, logits, which):
        raw, logits = raw.float().cpu().numpy(), logits.float().cpu().numpy()
        return [(raw[i], logits[i]) for i in which]

    def mask(self, inputs, i, boxes_input_px) -> None:
        boxes = np.clip(np.round(boxes_input_px), 0, INPUT_SIZE).astype(np.float32).reshape(-1, 4)
        if isinstance(inputs, _Graph):
            n = int(inputs.masked[i])
            take = boxes[:max(0, self.MASK_BOXES - n)]
            inputs.mask_np[i, n:n + len(take)] = take
            inputs.masked[i] = n + len(take)
            return
        # inputs were made under inference_mode: torch allows in-place writes to them only there
        with self.torch.inference_mode():
            for x1, y1, x2, y2 in boxes.astype(int):
                inputs[i, :, y1:y2, x1:x2] = -1.0


def letterbox_views(frame, views):
    """uint8 HxWx3 torch frame (any device) -> (V, 3, 224, 224) float in [-1, 1] of each view
    (x0, y0, w, h), letterboxed with black borders: the torch runtime's model input."""
    import torch
    import torch.nn.functional as F
    batch = torch.full((len(views), 3, INPUT_SIZE, INPUT_SIZE), -1.0, device=frame.device)
    for v, (x0, y0, w, h) in enumerate(views):
        _, px, py, nw, nh = letterbox_geometry(h, w)
        crop = frame[y0:y0 + h, x0:x0 + w].permute(2, 0, 1).unsqueeze(0).float()
        # antialiased like OpenCV's area resize: a plain bilinear 1080p -> 224 shrink aliases
        small = F.interpolate(crop, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
        batch[v:v + 1, :, py:py + nh, px:px + nw] = small * (1.0 / 127.5) - 1.0
    return batch


def _mask_on_device(batch, boxes, pixels):
    """batch (V,3,S,S) with every pixel inside any of boxes (V,K,4: x1,y1,x2,y2 in whole input
    pixels, end exclusive, as the host's slice mask) set to -1 (black)."""
    x1, y1, x2, y2 = boxes.unbind(-1)                                        # (V, K) each
    in_x = (pixels >= x1[..., None]) & (pixels < x2[..., None])              # (V, K, S)
    in_y = (pixels >= y1[..., None]) & (pixels < y2[..., None])
    inside = (in_y[..., :, None] & in_x[..., None, :]).any(1)                # (V, S, S)
    return batch.masked_fill(inside[:, None], -1.0)


class _Graph:
    """Buffers and the CUDA graph of one frame size."""


def _check_model_file(path) -> None:
    """Refuse a .tflite file that is not BlazePose's detector before converting it."""
    _LiteRtNet(path, 1, None)


def view_squares(height: int, width: int, views: str) -> list[tuple[int, int, int, int]]:
    """The regions (x0, y0, w, h) the model looks at: the whole frame and/or squares of the short
    side along the long side, overlapping by at least TILE_OVERLAP, for frames not already square."""
    out = []
    if views in ("full", "both"):
        out.append((0, 0, width, height))
    short, long_ = min(height, width), max(height, width)
    if views in ("tiles", "both") and long_ > 1.2 * short or views == "tiles":
        n = max(1, int(np.ceil((long_ - short) / ((1 - TILE_OVERLAP) * short))) + 1)
        starts = np.linspace(0, long_ - short, n).round().astype(int) if n > 1 else [0]
        for s in starts:
            out.append((int(s), 0, short, short) if width >= height else (0, int(s), short, short))
    return out


def merge(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, height: int, width: int):
    """One box per person across views and rounds: greedy by score on the boxes clipped to the
    frame (the same body seen whole and in a tile extrapolates differently outside it)."""
    idx = merge_order(boxes, scores, iou_threshold, height, width)
    return boxes[idx], scores[idx]


def merge_order(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, height: int, width: int) -> np.ndarray:
    """Indices of the boxes `merge` keeps, best score first."""
    clipped = boxes.copy()
    np.clip(clipped[:, 0::2], 0, width, out=clipped[:, 0::2])
    np.clip(clipped[:, 1::2], 0, height, out=clipped[:, 1::2])
    order = np.argsort(-scores, kind="stable")
    iou = iou_matrix(clipped[order], clipped[order])
    keep = []
    for i in range(len(order)):
        if all(iou[i, j] <= iou_threshold for j in keep):
            keep.append(i)
    return order[keep]
