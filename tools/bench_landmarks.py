"""The landmarks-ik model's goals (issue 19) measured in one run:

    python tools/bench_landmarks.py                      # everything, ~2 minutes on 2 cores
    python tools/bench_landmarks.py --pipeline-seconds 0 # skip the whole-pipeline run

1. Self-consistency: forward kinematics of the output rotations on the skeleton used against
   MediaPipe's world landmarks (after root alignment: both hip midpoints at the origin; both in
   the camera-oriented frame the IK works in), the 12 limb joints, per joint in cm: on the
   photos that ship with ultralytics (bus.jpg, zidane.jpg; person boxes listed below), on a
   generated clip (those photos under a slow zoom and sway, boxes moved with them) and on
   synthetic landmark sets (exact by construction: a check of the IK alone). The skeleton used
   without the SMPL file is the template with the landmarks' bone lengths; with
   `<data-dir>/smpl/SMPL_NEUTRAL.pkl` also SMPL's own skeleton with fitted betas; for
   comparison also the template with its own lengths (what any fixed skeleton gives).
2. Temporal stability: a photo played as a 30 fps video, frame-to-frame change of every joint
   rotation (degrees, p50/p99/max over joints x frames x persons) raw and after each smoothing
   preset (pipeline/pose/smoothing.py), for identical frames, for the photo encoded as an mp4v
   video and decoded (the codec's frames differ by a few grey levels), and for frames with
   camera-like noise (Gaussian, sigma `--noise` grey levels, new every frame).
3. Speed: the IK alone per person (1 and 4 persons per call; median and best of N), the
   landmark network per crop, and the whole default pipeline (`pipeline start`: default
   detector, default model = landmarks-ik without POCO weights, publisher, metrics, viewer
   unless --no-viewer) on a generated one-person clip played at 30 fps: published FPS and
   capture -> publish latency.

Writes <out>/landmarks.json too. The numbers depend on the machine's load: run it on a quiet one.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

PHOTO_BOXES = {   # (x1, y1, x2, y2) of whole persons in the bundled photos
    "bus.jpg": [(50, 400, 245, 905), (220, 405, 345, 860)],
    "zidane.jpg": [(130, 195, 1150, 720), (740, 40, 1150, 720)],
}
LIMB_NAMES = ("L hip", "R hip", "L knee", "R knee", "L ankle", "R ankle",
              "L shoulder", "R shoulder", "L elbow", "R elbow", "L wrist", "R wrist")


def photos() -> dict:
    from pipeline.sources.sample import PHOTOS, load_photos
    return dict(zip(PHOTOS, load_photos()))


def clip_frames(img, boxes, n: int, size=(960, 540)):
    """n frames of `img` under a slow zoom and sideways sway, with the boxes moved alike."""
    import cv2

    h, w = img.shape[:2]
    out_w, out_h = size
    fit = min(out_w / w, out_h / h)
    for k in range(n):
        u = k / max(n - 1, 1)
        s = fit * (1.0 + 0.25 * np.sin(np.pi * u))
        cx = w / 2 + 0.05 * w * np.sin(2 * np.pi * u)
        cy = h / 2 + 0.03 * h * np.sin(4 * np.pi * u)
        m = np.array([[s, 0, out_w / 2 - s * cx], [0, s, out_h / 2 - s * cy]])
        frame = cv2.warpAffine(img, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        b = np.asarray(boxes, np.float64)
        moved = np.stack([b[:, 0] * s + m[0, 2], b[:, 1] * s + m[1, 2], b[:, 2] * s + m[0, 2],
                          b[:, 3] * s + m[1, 2]], 1)
        yield frame, moved


class Runner:
    """The landmarks-ik model on frames, keeping what the measurements need."""

    def __init__(self, smpl_layer=None):
        from pipeline.models.landmarks_ik import LandmarksIk

        self.model = LandmarksIk()
        self.model.load()
        self.model.use_smpl(smpl_layer)

    def __call__(self, frame, boxes):
        from pipeline.models import landmarks_ik as lik
        from pipeline.models.preprocess import square_boxes

        h, w = frame.shape[:2]
        centres, sides = square_boxes(np.asarray(boxes, np.float64), self.model.box_scale)
        lm = self.model.network(self.model.crop(frame, centres, sides), centres, sides)
        out = self.model.smpl_params(lm, centres, sides, (w, h))
        world = lm.world @ np.swapaxes(lik.ray_rotation(centres, (w, h)), 1, 2)
        t = lik.fit_translation(world, lm.image, lik.landmark_confidence(lm, (w, h)), (w, h))
        return lm, out, world, t


def limb_errors(out, world, t, found) -> np.ndarray:
    """(P, 12) distance in metres of the skeleton's limb joints from the landmarks, hip
    midpoints aligned."""
    from pipeline.pose import landmark_ik as ik

    joints = out["joints"].astype(np.float64) - t[:, None]
    lms = world[:, [ik.LIMB_LANDMARKS[j] for j in ik.LIMB_JOINTS]]
    joints = joints[:, ik.LIMB_JOINTS]
    # root alignment: both hip midpoints (joints 1, 2 / the first two limb joints) at the origin
    joints = joints - joints[:, :2].mean(1, keepdims=True)
    lms = lms - lms[:, :2].mean(1, keepdims=True)
    return np.linalg.norm(joints - lms, axis=-1)[found]


def fixed_skeleton_errors(lm, out, world, t, img_wh):
    """limb_errors of the IK on the template with its own bone lengths (not the landmarks'):
    what any fixed skeleton gives, for comparison."""
    from pipeline.models import landmarks_ik as lik
    from pipeline.pose import landmark_ik as ik

    res = ik.solve(world, lik.landmark_confidence(lm, img_wh), personalised=False)
    return limb_errors({"joints": res.joints}, world, np.zeros_like(t), out["found"])


def consistency(runner, frames, fixed: bool = False) -> dict:
    errs = [fixed_skeleton_errors(lm, out, world, t, frame.shape[1::-1]) if fixed
            else limb_errors(out, world, t, out["found"])
            for frame, boxes in frames for lm, out, world, t in [runner(frame, boxes)]]
    e = np.concatenate(errs) * 100.0
    return {"persons": int(len(e)), "mean_cm": float(e.mean()) if len(e) else None,
            "max_cm": float(e.max()) if len(e) else None,
            "per_joint_mean_cm": dict(zip(LIMB_NAMES, np.round(e.mean(0), 3).tolist())) if len(e) else {}}


def synthetic_consistency(n=500) -> dict:
    from pipeline.pose import landmark_ik as ik
    from pipeline.testing.landmarks import landmarks_from_pose, random_poses

    world = landmarks_from_pose(random_poses(n, seed=0))
    res = ik.solve(world)
    e = np.linalg.norm(res.joints[:, ik.LIMB_JOINTS] - world[:, [ik.LIMB_LANDMARKS[j] for j in ik.LIMB_JOINTS]],
                       axis=-1) * 100.0
    return {"persons": n, "mean_cm": float(e.mean()), "max_cm": float(e.max())}


def still_video(img, frames: int, kind: str, noise: float = 0.0):
    """A still photo as `frames` video frames: the same pixels ("identical"), through a video
    codec and back ("mp4v": its key and predicted frames differ by a few grey levels), or with
    fresh Gaussian noise of `noise` grey levels in every frame ("noise")."""
    import cv2

    if kind == "identical":
        return [img] * frames
    if kind == "noise":
        rng = np.random.default_rng(0)
        return [np.clip(img + rng.normal(0.0, noise, img.shape), 0, 255).astype(np.uint8) for _ in range(frames)]
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "still.mp4")
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*kind), 30.0, (img.shape[1], img.shape[0]))
        for _ in range(frames):
            writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        writer.release()
        from pipeline.sources import open_source
        with open_source(path, realtime=False) as src:  # decoded as the pipeline decodes a file
            return [frame.rgb for frame in itertools.islice(src, frames)]


def stability(runner, video, boxes, fps: float = 30.0) -> dict:
    """Frame-to-frame rotation change (degrees) over the frames of `video`."""
    from pipeline.pose.frame import Person, PosesFrame
    from pipeline.pose.rotations import axis_angle_to_rotmat, rotation_angle_between
    from pipeline.pose.smoothing import PRESETS, Smoother

    h, w = video[0].shape[:2]
    raw = []
    for k, frame in enumerate(video):
        _, out, _, _ = runner(frame, boxes)
        persons = [Person(track_id=i, box=np.asarray(b, np.float32), score=1.0, global_orient=out["global_orient"][i],
                          body_pose=out["body_pose"][i], betas=out["betas"][i], transl=out["transl"][i],
                          pred_cam=out["pred_cam"][i], joint_uncertainty=out["joint_uncertainty"][i])
                   for i, b in enumerate(boxes)]
        raw.append(PosesFrame(frame_id=k, t_capture_ns=int(k * 1e9 / fps), generation=1, source_epoch=0,
                              frame_height=h, frame_width=w, model="landmarks-ik", backend="litert",
                              precision="fp32", untrained=False, n_found=len(boxes), persons=persons))
    result = {}
    for preset in PRESETS:
        smoother = Smoother(preset)
        seq = [smoother.apply(f) for f in raw]
        rots = np.stack([[axis_angle_to_rotmat(np.concatenate([p.global_orient, p.body_pose]).reshape(24, 3))
                          for p in f.persons] for f in seq])          # (T, P, 24, 3, 3)
        d = np.degrees(rotation_angle_between(rots[1:], rots[:-1]))
        result[preset] = {"p50_deg": float(np.percentile(d, 50)), "p99_deg": float(np.percentile(d, 99)),
                          "max_deg": float(d.max())}
    return result


def timed(fn, repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3), float(np.min(times) * 1e3)


def speed(runner, img, repeat: int) -> dict:
    from pipeline.models.preprocess import square_boxes
    from pipeline.pose import landmark_ik as ik
    from pipeline.testing.landmarks import landmarks_from_pose, random_poses

    out = {}
    world = landmarks_from_pose(random_poses(4, seed=1))
    for p in (1, 4):
        med, best = timed(lambda: ik.solve(world[:p]), repeat)
        out[f"ik_{p}_person_ms_per_person"] = {"median": med / p, "best": best / p}
    boxes = PHOTO_BOXES["bus.jpg"][:1]
    h, w = img.shape[:2]
    centres, sides = square_boxes(np.asarray(boxes, np.float64), runner.model.box_scale)
    crops = runner.model.crop(img, centres, sides)
    lm = runner.model.network(crops, centres, sides)
    med, best = timed(lambda: runner.model.smpl_params(lm, centres, sides, (w, h)), repeat)
    out["ik_with_translation_1_person_ms"] = {"median": med, "best": best}
    med, best = timed(lambda: runner.model.network(crops, centres, sides), max(repeat // 10, 10))
    out["landmark_network_ms_per_crop"] = {"median": med, "best": best}
    med, best = timed(lambda: runner.model.crop(img, centres, sides), repeat)
    out["crop_ms_per_person"] = {"median": med, "best": best}
    return out


def one_person_clip(path: Path, seconds: float = 10.0, fps: float = 30.0) -> Path:
    """The centre person of bus.jpg, swaying and zooming slowly, as an MJPG video."""
    import cv2

    img = photos()["bus.jpg"][330:940, 120:460]          # one person with some street around
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (480, 640))
    for frame, _ in clip_frames(img, [(0, 0, 1, 1)], int(seconds * fps), size=(480, 640)):
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def whole_pipeline(seconds: float, viewer: bool, data_dir: Path) -> dict:
    sys.path.insert(0, str(REPO / "tools"))
    import bench_e2e

    with tempfile.TemporaryDirectory() as tmp:
        clip = one_person_clip(Path(tmp) / "one_person.avi")
        env = dict(os.environ, PYTHONPATH=str(REPO))
        args = ["start", "--detach", "--source", clip, f"data_dir={data_dir}",
                f"workers.metrics.params.prometheus_port={bench_e2e.free_port()}",
                f"sinks.native.endpoint=tcp://127.0.0.1:{bench_e2e.free_port()}"]
        args += ["--viewer-port", "0"] if viewer else ["--no-viewer"]
        bench_e2e.cli(*args, env=env, timeout=300)
        try:
            st = bench_e2e.wait_ready(env, 300)
            result = bench_e2e.measure(st["run_id"], seconds)
            workers = {w["name"]: w for w in bench_e2e.status(env).get("workers", [])}
            result["cpu_percent"] = {n: w.get("cpu_percent") for n, w in workers.items()}
            result["model"] = (workers.get("inference", {}).get("info") or {}).get("model")
            result["detector"] = (workers.get("detection", {}).get("info") or {}).get("detector")
        finally:
            bench_e2e.cli("stop", env=env, check=False, timeout=120)
    return result


def fmt_joints(d: dict) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in d.items())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/landmarks"))
    ap.add_argument("--clip-frames", type=int, default=60, help="frames of the generated clip per photo")
    ap.add_argument("--stability-frames", type=int, default=90)
    ap.add_argument("--noise", type=float, default=3.0, help="camera-like noise, grey levels (sigma)")
    ap.add_argument("--repeat", type=int, default=300, help="timing repetitions")
    ap.add_argument("--pipeline-seconds", type=float, default=20.0, help="0: skip the whole-pipeline run")
    ap.add_argument("--no-viewer", action="store_true", help="whole pipeline without the browser viewer")
    ap.add_argument("--data-dir", type=Path, default=REPO / "data",
                    help="where SMPL_NEUTRAL.pkl is looked for (smpl/); POCO weights there make the "
                         "default model POCO, so the pipeline run uses an empty folder instead")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("YOLO_OFFLINE", "1")
    report = {"load": os.getloadavg(), "cpus": os.cpu_count()}
    pics = photos()

    print(f"load average {report['load'][0]:.2f} on {report['cpus']} CPUs", flush=True)
    runner = Runner()
    skeletons = [("template skeleton, the landmarks' bone lengths", runner, False)]
    from pipeline.models.smpl import load_smpl
    layer = load_smpl(args.data_dir)
    if layer is not None:
        skeletons.append(("SMPL skeleton, fitted betas", Runner(layer), False))
    skeletons.append(("for comparison: template skeleton, its own bone lengths", runner, True))

    print("\n1. self-consistency: limb joints of FK(output rotations) vs MediaPipe world landmarks, cm")
    syn = synthetic_consistency()
    report["consistency"] = {"synthetic": syn}
    print(f"   synthetic landmark sets ({syn['persons']}): mean {syn['mean_cm']:.4f} max {syn['max_cm']:.4f}")
    photo_frames = [(pics[p], b) for p, b in PHOTO_BOXES.items()]
    clip = [fb for p, b in PHOTO_BOXES.items() for fb in clip_frames(pics[p], b, args.clip_frames)]
    for name, run, fixed in skeletons:
        for label, frames in (("photos", photo_frames), ("generated clip", clip)):
            c = consistency(run, frames, fixed)
            report["consistency"][f"{name} {label}"] = c
            print(f"   {name}; {label} ({c['persons']} persons): mean {c['mean_cm']:.3f}, "
                  f"max {c['max_cm']:.3f}\n     per joint: {fmt_joints(c['per_joint_mean_cm'])}", flush=True)

    print("\n2. temporal stability: a photo as a 30 fps video, joint rotation change frame to frame, deg")
    report["stability"] = {}
    for kind, label in (("identical", "identical frames"), ("mp4v", "through the mp4v codec"),
                        ("noise", f"noise sigma {args.noise:g}")):
        video = still_video(pics["bus.jpg"], args.stability_frames, kind, args.noise)
        s = stability(runner, video, PHOTO_BOXES["bus.jpg"])
        report["stability"][label] = s
        for preset, v in s.items():
            print(f"   {label:24s} smoothing {preset:8s}: p50 {v['p50_deg']:.3f}  p99 {v['p99_deg']:.3f}  "
                  f"max {v['max_deg']:.3f}", flush=True)

    print("\n3. speed, ms")
    sp = speed(runner, pics["bus.jpg"], args.repeat)
    report["speed"] = sp
    for k, v in sp.items():
        print(f"   {k:36s} median {v['median']:.3f}  best {v['best']:.3f}", flush=True)
    if args.pipeline_seconds > 0:
        empty = Path(tempfile.mkdtemp(prefix="posepipe-nodata-"))
        r = whole_pipeline(args.pipeline_seconds, not args.no_viewer, empty)
        report["pipeline"] = r
        print(f"   whole default pipeline ({r['model']}, detector {r['detector']}, one person, "
              f"{'viewer on' if not args.no_viewer else 'no viewer'}): {r['fps']:.1f} FPS published, "
              f"capture->publish p50 {r['e2e_p50_ms']:.1f} ms p99 {r['e2e_p99_ms']:.1f} ms, "
              f"persons/frame {r['persons_mean']:.2f}, source {r['captured_fps']:.1f} fps; "
              f"stage p50 {json.dumps({k: round(v, 1) for k, v in r['stage_p50_ms'].items()})}; "
              f"CPU % {r['cpu_percent']}", flush=True)
    report["load_after"] = os.getloadavg()
    (args.out / "landmarks.json").write_text(json.dumps(report, indent=2, default=str))
    print(f"\nwrote {args.out / 'landmarks.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
