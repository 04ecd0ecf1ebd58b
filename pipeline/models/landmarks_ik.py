"""The `landmarks-ik` model family (docs/architecture.md §6): SMPL parameters from MediaPipe's
trained pose landmark model, by inverse kinematics. No weights to download: the landmark model
ships inside the mediapipe wheel (`pipeline.models.tflite`).

Per detected person: a square crop (side 1.25 x the box's longer side, the margin MediaPipe's
own region of interest has) resized to 256 x 256 RGB in [0, 1] -> `pose_landmark_full.tflite`
(LiteRT) -> 33 landmarks with image coordinates, visibility and presence (both logits: a
sigmoid gives the probability, as MediaPipe's graph does) and metric "world" coordinates
(hip-centred, x right, y down, z away from the camera, as seen along the crop's viewing ray:
`ray_rotation` turns them into the full-image camera frame), plus the pose presence score
(already a probability; MediaPipe counts a pose as present from 0.5) -> `pipeline.pose.landmark_ik`.

Outputs per person, the same fields POCO gives (`pipeline.models.postprocess.to_smpl_params`):
`global_orient`, `body_pose` (axis-angle), `betas` (zeros without the SMPL model file; fitted
to the landmark bone lengths with it), `transl` (full-image camera frame, metres: the camera
position of the landmarks is the least-squares fit of their 3D shape to their 2D image
positions under the full-image camera f = sqrt(W^2 + H^2) of docs/architecture.md §6),
`pred_cam` (the weak-perspective [s, tx, ty] that gives the same `transl` through POCO's
formula), `joint_uncertainty` and `joints` (the posed skeleton used, camera frame), plus
`found`.

A crop without a person (pose presence below `min_presence`, 0.1) is reported as not found
(`found` False): the inference worker leaves it out of the record, so the person count says
what the landmark model saw. Below 0.5 presence, every joint's uncertainty rises towards 1.
A landmark projected outside the frame (a person cut by the image border) counts as at most
25 % confident, whatever the model says.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np

from pipeline.pose import landmark_ik as ik
from pipeline.pose.rotations import rotmat_to_axis_angle

log = logging.getLogger(__name__)

MODEL_NAME = "landmarks-ik"
LANDMARK_MODEL = "pose_landmark_full"
CROP_RES = 256
BOX_SCALE = 1.25
NUM_RAW = 39            # landmarks in the network's outputs (33 body + 6 auxiliary)
PRESENT = 0.5           # MediaPipe's pose presence threshold
MIN_PRESENCE = 0.1      # below this a crop holds nobody (photo crops without a person score < 0.01)
OUT_OF_FRAME_CONFIDENCE = 0.25


@dataclass
class Landmarks:
    """The landmark model's outputs for B crops, in full-frame terms."""
    world: np.ndarray        # (B, 33, 3) metres, hip-centred, camera-oriented
    image: np.ndarray        # (B, 33, 2) full-frame pixels
    visibility: np.ndarray   # (B, 33) probability
    presence: np.ndarray     # (B, 33) probability
    person: np.ndarray       # (B,) pose presence probability
    mask: np.ndarray | None = None   # (B, 256, 256) the crop's person segmentation, logits
    # (B, 2, 2) full-frame pixels: the two auxiliary points MediaPipe builds the next frame's
    # region from (the mid-hip centre and the end of the body radius), as the detector's kp 0, 1
    anchors: np.ndarray | None = None


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0)))


class GraphedLandmarks:
    """The landmark model as a torch module on a CUDA device. Crops go up from one page-locked
    buffer; a batch of B crops replays the CUDA graph captured for the smallest bucket >= B
    (1, 2, 4, 8, 16; more crops run in chunks), so any person count costs one upload, one
    replay and one read-back, never a Python loop over the network's ~140 operators.

    Bucket 1 is captured when this is made; the others on a background thread right after.
    The first run of a new batch shape can cost cuDNN seconds (5.8-6.2 s per bucket measured on
    an H200 host, tools/device/results/h200_session8_blazepose_breakdown.log), which a frame
    must not wait for: until its bucket is ready a batch runs padded into a larger captured
    bucket, or in chunks of the largest one."""

    BUCKETS = (1, 2, 4, 8, 16)
    WANTED = (0, 1, 2, 4)    # landmarks, presence, segmentation, world (not the heatmap)

    def __init__(self, path, device: str):
        import torch

        from pipeline.models.tflite_torch import build_module
        self.torch = torch
        self.device = torch.device("cuda:0" if device == "cuda" else device)
        if self.device.type != "cuda":
            raise ValueError(f"GraphedLandmarks runs on a CUDA device, not {device!r}")
        self.net = build_module(path).to(self.device)
        for p in self.net.parameters():
            p.requires_grad_(False)
        top = self.BUCKETS[-1]
        self.host_in = torch.empty((top, CROP_RES, CROP_RES, 3), dtype=torch.float32, pin_memory=True)
        self.host_in_np = self.host_in.numpy()
        self._graphs: dict = {}
        # the network's own stream: a launch overlaps whatever the caller's stream runs
        self.stream = torch.cuda.Stream(self.device)
        self._pending = None
        self._capture(self.BUCKETS[0])
        self._stop = threading.Event()
        # not a daemon: the interpreter joins it before it finalises (a daemon thread inside a
        # CUDA call at exit aborted the process: "terminate called without an active
        # exception"); at exit it stops after the capture in flight
        self._background = threading.Thread(target=self._capture_rest, name="landmark-graphs")
        register_atexit = getattr(threading, "_register_atexit", None)   # what concurrent.futures uses
        if register_atexit is not None:
            register_atexit(self._stop.set)
        self._background.start()

    def _capture_rest(self) -> None:
        for bucket in self.BUCKETS[1:]:
            if self._stop.is_set():
                return
            try:
                self._capture(bucket, mode="thread_local")
            except Exception as exc:  # noqa: BLE001 - the captured buckets still serve every batch
                log.warning("landmark model: no CUDA graph for %d crops (%s: %s); larger batches run in "
                            "chunks of %d", bucket, type(exc).__name__, exc, max(self._graphs))
                return

    def wait_captured(self, timeout: float | None = None) -> bool:
        """Whether every bucket's graph is there (or failed), after waiting up to `timeout` s."""
        self._background.join(timeout)
        return not self._background.is_alive()

    def close(self) -> None:
        """Stops the captures after the one in flight and waits for it: a CUDA call on a thread
        the interpreter is tearing down can abort the process."""
        self._stop.set()
        if self._background.is_alive():
            self._background.join(timeout=30.0)

    def _capture(self, bucket: int, mode: str = "global"):
        from pipeline.backends.graphs import capture_graph

        torch = self.torch
        t0 = time.perf_counter()
        cap = _LandmarkGraph()
        cap.input = torch.zeros((bucket, CROP_RES, CROP_RES, 3), dtype=torch.float32, device=self.device)
        # Full fp32 convolutions, as LiteRT computes: with TF32 the landmarks' depth moved by up
        # to 1.8 (of ~250) on an H100. The graph keeps the kernels chosen here.
        with torch.inference_mode():
            cap.graph, outs = capture_graph(lambda: self.net(cap.input), self.device, capture_error_mode=mode,
                                            cudnn_tf32=False)
        cap.outputs = [outs[i] for i in self.WANTED]
        cap.host = [torch.empty(o.shape, dtype=o.dtype, pin_memory=True) for o in cap.outputs]
        self._graphs[bucket] = cap
        log.info("landmark model: captured a CUDA graph for %d crops on %s in %.0f ms", bucket, self.device,
                 (time.perf_counter() - t0) * 1e3)
        return cap

    def __call__(self, crops: np.ndarray):
        """(raw (B,195), presence (B,1), segmentation (B,256,256,1), world (B,117)) float32."""
        return self.collect(self.launch(crops))

    def launch(self, crops: np.ndarray):
        """Start the network on `crops` on this model's own CUDA stream and return at once: the
        caller's stream (a detector pass) runs meanwhile. `collect` gives the outputs. One batch
        is in flight at a time: a launch first collects the one before (it shares the buffers)."""
        if self._pending is not None:
            self._pending.wait()
        b = len(crops)
        ready = sorted(self._graphs)          # a snapshot: the background thread adds to it
        bucket = next((k for k in ready if k >= b), None)
        if bucket is None:
            step = ready[-1]
            parts = [self(crops[i:i + step]) for i in range(0, b, step)]
            return _Done(tuple(np.concatenate(p) for p in zip(*parts)))
        cap = self._graphs[bucket]
        np.copyto(self.host_in_np[:b], crops)
        torch = self.torch
        with torch.inference_mode(), torch.cuda.stream(self.stream):
            cap.input[:b].copy_(self.host_in[:b], non_blocking=True)
            cap.graph.replay()
            for dev, host in zip(cap.outputs, cap.host):
                host[:b].copy_(dev[:b], non_blocking=True)
            done = torch.cuda.Event()
            done.record(self.stream)
        self._pending = _InFlight(cap, b, done)
        return self._pending

    def collect(self, launched):
        out = launched.result()
        if launched is self._pending:
            self._pending = None
        return out


class _InFlight:
    """A launched batch: its bucket, size and the event its read-back records."""

    def __init__(self, cap, b: int, event):
        self.cap, self.b, self.event, self._out = cap, b, event, None

    def wait(self) -> None:
        if self._out is None:
            self.event.synchronize()
            # copies: the pinned buffers are reused by the next launch
            self._out = tuple(h[:self.b].numpy().copy() for h in self.cap.host)

    def result(self):
        self.wait()
        return self._out


class _Done:
    """Outputs computed at once (CPU, or a batch run in chunks)."""

    def __init__(self, out):
        self._out = out

    def result(self):
        return self._out


class _LandmarkGraph:
    """One bucket's input buffer, graph and outputs."""


class LandmarkNetwork:
    """MediaPipe's pose landmark network on square crops: LiteRT on the CPU, or (device "cuda")
    the same weights as a torch module (`pipeline.models.tflite_torch`) run batched in CUDA graphs."""

    def __init__(self, threads: int = 1, name: str = LANDMARK_MODEL, device: str = "cpu"):
        from pipeline.models.tflite import TfliteError, TfliteModel, mediapipe_model_path

        self.path = mediapipe_model_path(name)
        self.device = str(device)
        self.model = TfliteModel(self.path, threads=threads, inputs={"input_1": (1, CROP_RES, CROP_RES, 3)},
                                 outputs=5)
        shapes = self.model.output_shapes
        if (shapes[0] != (1, NUM_RAW * 5) or shapes[1] != (1, 1) or shapes[2] != (1, CROP_RES, CROP_RES, 1)
                or shapes[4] != (1, NUM_RAW * 3)):
            raise TfliteError(f"{self.path} has outputs {shapes}; expected (1, 195) landmarks, (1, 1) presence, "
                              f"(1, 256, 256, 1) segmentation and (1, 117) world landmarks: not MediaPipe's pose "
                              f"landmark model")
        self._gpu = None
        if self.device != "cpu":
            self._gpu = GraphedLandmarks(self.path, self.device)
            self.model = None   # the GPU runs every crop; LiteRT's interpreter is not kept

    def close(self) -> None:
        if self._gpu is not None:
            self._gpu.close()

    @staticmethod
    def crops(frame_rgb: np.ndarray, centres, sides) -> np.ndarray:
        """(B, 256, 256, 3) float32 in [0, 1]: square crops, zero outside the frame."""
        from pipeline.models.preprocess import crop_cv2

        out = np.empty((len(sides), CROP_RES, CROP_RES, 3), np.float32)
        for i, (c, s) in enumerate(zip(centres, sides)):
            out[i] = crop_cv2(frame_rgb, c, s, res=CROP_RES)
        out *= 1.0 / 255.0
        return out

    def __call__(self, crops: np.ndarray, centres, sides) -> Landmarks:
        """Run every crop and map image landmarks back to the frame. LiteRT takes one crop at a
        time (batching it measured no faster per crop on CPU); the GPU takes them all at once."""
        return self.finish(self.launch(crops, centres, sides))

    def launch(self, crops: np.ndarray, centres, sides):
        """Start the crops on the GPU and return at once (`finish` waits for them); on the CPU
        they run here and now."""
        if self._gpu is not None:
            return (self._gpu.launch(crops), len(crops), centres, sides)
        return (_Done(self._run_cpu(crops)), len(crops), centres, sides)

    def _run_cpu(self, crops):
        b = len(crops)
        raw = np.empty((b, NUM_RAW, 5), np.float32)
        world = np.empty((b, NUM_RAW, 3), np.float32)
        person = np.empty(b, np.float32)
        mask = np.empty((b, CROP_RES, CROP_RES), np.float32)
        for i in range(b):
            out = self.model(crops[i:i + 1])
            raw[i] = out[0].reshape(NUM_RAW, 5)
            person[i] = out[1].reshape(())
            mask[i] = out[2].reshape(CROP_RES, CROP_RES)
            world[i] = out[4].reshape(NUM_RAW, 3)
        return raw, person, mask, world

    def finish(self, launched) -> Landmarks:
        pending, b, centres, sides = launched
        if self._gpu is not None:
            raw, person, mask, world = self._gpu.collect(pending)
            raw, world = raw.reshape(b, NUM_RAW, 5), world.reshape(b, NUM_RAW, 3)
            person, mask = person.reshape(b), mask.reshape(b, CROP_RES, CROP_RES)
        else:
            raw, person, mask, world = pending.result()
        c = np.asarray(centres, np.float64).reshape(b, 1, 2)
        scale = (np.asarray(sides, np.float64) / CROP_RES).reshape(b, 1, 1)
        image = c + (raw[:, :ik.NUM_LANDMARKS, :2] - CROP_RES / 2.0) * scale
        anchors = c + (raw[:, ik.NUM_LANDMARKS:ik.NUM_LANDMARKS + 2, :2] - CROP_RES / 2.0) * scale
        return Landmarks(world=world[:, :ik.NUM_LANDMARKS].astype(np.float64), image=image,
                         visibility=_sigmoid(raw[:, :ik.NUM_LANDMARKS, 3].astype(np.float64)),
                         presence=_sigmoid(raw[:, :ik.NUM_LANDMARKS, 4].astype(np.float64)),
                         person=np.nan_to_num(person.astype(np.float64), nan=0.0), mask=mask,
                         anchors=anchors)


def landmark_confidence(lm: Landmarks, img_wh) -> np.ndarray:
    """(B, 33) confidence per landmark: visibility x presence x the person's presence (full
    from 0.5 up), at most `OUT_OF_FRAME_CONFIDENCE` outside the frame; 0 where non-finite."""
    w, h = float(img_wh[0]), float(img_wh[1])
    x, y = lm.image[..., 0], lm.image[..., 1]
    inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    person = np.clip(lm.person / PRESENT, 0.0, 1.0)[:, None]
    conf = lm.visibility * lm.presence * person
    conf = np.where(inside, conf, np.minimum(conf, OUT_OF_FRAME_CONFIDENCE))
    ok = np.isfinite(conf) & np.isfinite(lm.world).all(-1) & np.isfinite(lm.image).all(-1)
    return np.where(ok, conf, 0.0)


def fit_translation(points, image_xy, weights, img_wh) -> np.ndarray:
    """Camera-frame position t (B, 3) of the points' origin that best projects points + t
    (B, N, 3) onto image_xy (B, N, 2) under the full-image pinhole camera (f = image diagonal,
    principal point at the centre). Linear least squares in t, weighted by `weights` (B, N):
    (u - cx)(Z + tz) = f (X + tx) and the same for y."""
    from pipeline.models.preprocess import focal_length

    w, h = float(img_wh[0]), float(img_wh[1])
    f = focal_length(w, h)
    X = np.asarray(points, np.float64)
    u = np.asarray(image_xy, np.float64) - np.array([w / 2.0, h / 2.0])
    wt = np.clip(np.asarray(weights, np.float64), 0.0, None)
    b, n = X.shape[:2]
    # rows: [f, 0, -u] t = u Z - f X   and   [0, f, -v] t = v Z - f Y
    A = np.zeros((b, n, 2, 3))
    A[..., 0, 0] = A[..., 1, 1] = f
    A[..., 0, 2], A[..., 1, 2] = -u[..., 0], -u[..., 1]
    rhs = u * X[..., 2:3] - f * X[..., :2]
    A = A.reshape(b, 2 * n, 3)
    rhs = rhs.reshape(b, 2 * n)
    sw = np.repeat(wt, 2, axis=1)
    AtA = np.einsum("bni,bn,bnj->bij", A, sw, A)
    Atb = np.einsum("bni,bn,bn->bi", A, sw, rhs)
    # a tiny ridge keeps a person with no usable landmark solvable; then fall back to 3 m ahead
    AtA += np.eye(3) * (1e-9 * f * f)
    t = np.linalg.solve(AtA, Atb[..., None])[..., 0]
    unusable = (sw.sum(1) < 1e-6) | ~np.isfinite(t).all(-1) | (t[:, 2] < 0.1)
    return np.where(unusable[:, None], np.array([0.0, 0.0, 3.0]), t)


def ray_rotation(centres, img_wh) -> np.ndarray:
    """(B, 3, 3) rotations taking the optical axis onto the ray through each crop's centre.

    The landmark network sees only its crop, so its world landmarks are oriented as seen along
    that crop's viewing ray, not along the optical axis; rotating them by this puts them in
    the full-image camera frame (measured on the bundled photos: mean reprojection error of
    the confident body landmarks 6.6 -> 5.2 px for a person near the centre, 27.6 -> 15.3 px
    for one near the edge)."""
    from pipeline.models.preprocess import focal_length

    w, h = float(img_wh[0]), float(img_wh[1])
    c = np.asarray(centres, np.float64).reshape(-1, 2)
    ray = np.concatenate([c - np.array([w / 2.0, h / 2.0]), np.full((len(c), 1), focal_length(w, h))], 1)
    ray /= np.linalg.norm(ray, axis=1, keepdims=True)
    return ik.swing(np.broadcast_to(np.array([0.0, 0.0, 1.0]), ray.shape), ray)


def camera_from_transl(transl, centres, sides, img_wh) -> np.ndarray:
    """The weak-perspective crop camera [s, tx, ty] (B, 3) that gives `transl` through POCO's
    formula transl = [tx + 2(cx - W/2)/(s b), ty + 2(cy - H/2)/(s b), 2 f/(s b)]."""
    from pipeline.models.preprocess import focal_length

    w, h = float(img_wh[0]), float(img_wh[1])
    f = focal_length(w, h)
    t = np.asarray(transl, np.float64)
    c = np.asarray(centres, np.float64).reshape(-1, 2)
    b = np.asarray(sides, np.float64).reshape(-1)
    s = 2.0 * f / (b * np.maximum(t[:, 2], 1e-6))
    sb = s * b
    return np.stack([s, t[:, 0] - 2.0 * (c[:, 0] - w / 2.0) / sb, t[:, 1] - 2.0 * (c[:, 1] - h / 2.0) / sb], -1)


class ShapeSpace:
    """SMPL's rest joints as a linear function of the betas: J(b) = template + dirs . b."""

    # bones whose landmark lengths the betas are fitted to: (joint, child) on SMPL's skeleton
    # and the landmarks at their ends. Hip width and torso length are left out: MediaPipe's hip
    # landmarks sit wider and higher than SMPL's hip joints, so they are a different length.
    BONES = ((1, 4, ik.L_HIP, ik.L_KNEE), (2, 5, ik.R_HIP, ik.R_KNEE), (4, 7, ik.L_KNEE, ik.L_ANKLE),
             (5, 8, ik.R_KNEE, ik.R_ANKLE), (16, 18, ik.L_SHOULDER, ik.L_ELBOW), (17, 19, ik.R_SHOULDER, ik.R_ELBOW),
             (18, 20, ik.L_ELBOW, ik.L_WRIST), (19, 21, ik.R_ELBOW, ik.R_WRIST),
             (17, 16, ik.R_SHOULDER, ik.L_SHOULDER))
    RIDGE = 1e-3      # m^2 per beta^2: a 3 cm length error is worth one unit of beta
    MAX_BETA = 3.0

    def __init__(self, template: np.ndarray, dirs: np.ndarray, ridge: float = RIDGE):
        self.ridge = float(ridge)
        self.template = np.asarray(template, np.float64).reshape(24, 3)
        self.dirs = np.asarray(dirs, np.float64).reshape(24, 3, -1)[..., :10]
        j, c, a, b = (np.array(x) for x in zip(*self.BONES))
        self._j, self._c, self._a, self._b = j, c, a, b

    @classmethod
    def from_smpl(cls, layer) -> "ShapeSpace":
        """From a `pipeline.models.smpl.SmplLayer` (smplx): joint regressor applied to the
        template mesh and to the shape blend shapes."""
        smpl = layer.smpl
        reg = smpl.J_regressor.detach().cpu().numpy().astype(np.float64)
        v = smpl.v_template.detach().cpu().numpy().astype(np.float64)
        dirs = smpl.shapedirs.detach().cpu().numpy().astype(np.float64)
        return cls(reg @ v, np.einsum("jv,vcb->jcb", reg, dirs))

    def joints(self, betas) -> np.ndarray:
        return self.template + np.einsum("jcb,pb->pjc", self.dirs, np.asarray(betas, np.float64))

    def fit(self, world, confidence, iterations: int = 2) -> np.ndarray:
        """Betas (P, 10) whose skeleton's bone lengths match the landmarks' (Gauss-Newton on
        the lengths, ridge towards the mean shape, clipped to +-3)."""
        W = np.asarray(world, np.float64)
        conf = np.asarray(confidence, np.float64)
        target = np.linalg.norm(W[:, self._b] - W[:, self._a], axis=-1)            # (P, n)
        weight = np.minimum(conf[:, self._a], conf[:, self._b]) * (target > ik._MIN_BONE)
        D = self.dirs[self._c] - self.dirs[self._j]                                  # (n, 3, 10)
        betas = np.zeros((W.shape[0], self.dirs.shape[-1]))
        for _ in range(iterations):
            bone = (self.template[self._c] - self.template[self._j])[None] + np.einsum("nck,pk->pnc", D, betas)
            length = np.linalg.norm(bone, axis=-1)
            jac = np.einsum("pnc,nck->pnk", bone / np.maximum(length, 1e-9)[..., None], D)   # (P, n, 10)
            r = target - length
            AtA = np.einsum("pni,pn,pnj->pij", jac, weight, jac) + max(self.ridge, 1e-12) * np.eye(betas.shape[1])
            Atb = np.einsum("pni,pn,pn->pi", jac, weight, r) - self.ridge * betas
            betas = betas + np.linalg.solve(AtA, Atb[..., None])[..., 0]
        return np.clip(np.nan_to_num(betas), -self.MAX_BETA, self.MAX_BETA)


class LandmarksIk:
    """The `landmarks-ik` model behind the inference worker: crop, landmark network, IK.

    Shaped like a backend (`load`, `warmup`, `info`, `close`, `asynchronous`), but it takes
    raw frame crops and returns SMPL parameters directly (`submit(...).result()`), because its
    network is not POCO's and needs none of POCO's post-processing.
    """

    name = "litert"
    asynchronous = False

    def __init__(self, threads: int = 1, min_presence: float = MIN_PRESENCE, box_scale: float = BOX_SCALE):
        if not 0.0 <= float(min_presence) <= 1.0:
            raise ValueError(f"landmarks-ik min_presence must be in [0, 1], got {min_presence!r}")
        self.threads = max(1, int(threads))
        self.min_presence = float(min_presence)
        self.box_scale = float(box_scale)
        self.network: LandmarkNetwork | None = None
        self.shape: ShapeSpace | None = None
        self.timings = {"landmarks_ms": 0.0, "ik_ms": 0.0}
        self._load_s = self._warmup_s = 0.0

    def load(self) -> None:
        t = time.perf_counter()
        self.network = LandmarkNetwork(threads=self.threads)
        self._load_s = time.perf_counter() - t

    def use_smpl(self, layer) -> None:
        """With the SMPL model: fit betas and pose SMPL's own skeleton instead of the template."""
        self.shape = None if layer is None else ShapeSpace.from_smpl(layer)

    def warmup(self) -> None:
        t = time.perf_counter()
        crops = np.zeros((1, CROP_RES, CROP_RES, 3), np.float32)
        self.run(crops, np.array([[128.0, 128.0]]), np.array([256.0]), (256, 256))
        self._warmup_s = time.perf_counter() - t

    def crop(self, frame_rgb, centres, sides) -> np.ndarray:
        return LandmarkNetwork.crops(frame_rgb, centres, sides)

    def submit(self, crops, centres, sides, img_wh):
        from pipeline.backends.base import Done

        return Done(self.run(crops, centres, sides, img_wh))

    def run(self, crops, centres, sides, img_wh) -> dict:
        t0 = time.perf_counter()
        lm = self.network(crops, centres, sides)
        t1 = time.perf_counter()
        out = self.smpl_params(lm, centres, sides, img_wh)
        self.timings = {"landmarks_ms": (t1 - t0) * 1e3, "ik_ms": (time.perf_counter() - t1) * 1e3}
        return out

    def smpl_params(self, lm: Landmarks, centres, sides, img_wh) -> dict:
        """Landmarks of B crops -> SMPL parameters (float32, the fields POCO gives) + `found`."""
        conf = landmark_confidence(lm, img_wh)
        world = np.where(np.isfinite(lm.world), lm.world, 0.0)
        world = world @ np.swapaxes(ray_rotation(centres, img_wh), 1, 2)
        b = world.shape[0]
        if self.shape is not None:
            betas = self.shape.fit(world, conf)
            res = ik.solve(world, conf, rest_joints=self.shape.joints(betas), personalised=False)
        else:
            betas = np.zeros((b, 10))
            res = ik.solve(world, conf)
        image = np.where(np.isfinite(lm.image), lm.image, 0.0)
        t = fit_translation(world, image, conf, img_wh)
        transl = t + res.pelvis - res.rest_joints[:, 0]
        aa = rotmat_to_axis_angle(res.rotmats).reshape(b, 72)
        unc = np.maximum(res.uncertainty, 1.0 - np.clip(lm.person / PRESENT, 0.0, 1.0)[:, None])
        f32 = lambda x: np.ascontiguousarray(np.nan_to_num(x), dtype=np.float32)  # noqa: E731
        return {
            "global_orient": f32(aa[:, :3]), "body_pose": f32(aa[:, 3:]), "betas": f32(betas),
            "transl": f32(transl), "pred_cam": f32(camera_from_transl(transl, centres, sides, img_wh)),
            "joint_uncertainty": f32(unc), "joints": f32(res.joints + t[:, None]),
            "found": lm.person >= self.min_presence,
        }

    def info(self) -> dict:
        path = getattr(self.network, "path", None)
        return {"name": self.name, "device": "cpu", "precision": "fp32", "untrained": False,
                "landmark_model": str(path) if path else LANDMARK_MODEL, "threads": self.threads,
                "skeleton": "SMPL (betas fitted)" if self.shape is not None else "template (bone lengths fitted)",
                "load_s": round(self._load_s, 3), "warmup_s": round(self._warmup_s, 3)}

    def close(self) -> None:
        self.network = None
