#!/usr/bin/env python
"""Detection quality on real people: the photos that ship inside ultralytics and the sample clip.

Ground truth: the person boxes of `bus.jpg` (4 people, one cut by the left edge) and
`zidane.jpg` (2 people), drawn by hand (visible extent, pixels; `people_clip.GROUND_TRUTH`). The clip is
the built-in `sample` source (pipeline/sources/sample.py: each photo panned and zoomed for
4 s at 30 fps, 1280x720); its ground truth is the photo boxes moved by the same affine map
and clipped to the frame. A person less than `--min-visible` visible in a clip frame is
"don't care": finding it is not counted, and neither is a box on it.

A third source, "scenes", holds other real photos from installed packages (`SCENES`): a
portrait and eight scenes with nobody in them, where every box is a false person.

Per detector and source it prints: people found (% of ground-truth people matched by a box
with IoU >= --iou, boxes clipped to the frame), false persons per 100 frames (boxes matching
nobody), mean persons per frame, detection ms p50, and, where MediaPipe's single-person
solution and the detector both see exactly one person, their agreement (IoU p50 / p10).

    python tools/detect_quality.py                        # blazepose variants + mediapipe
    python tools/detect_quality.py --yolo data/yolo11n.pt --device cuda
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from people_clip import GROUND_TRUTH  # noqa: E402  hand-drawn visible extents, photo pixels


def match(pred: np.ndarray, gt: np.ndarray, care: np.ndarray, iou_min: float) -> tuple[int, int]:
    """(ground-truth people matched among those we care about, false boxes), greedy by IoU."""
    from pipeline.detectors.tracker import iou_matrix
    if not len(pred):
        return 0, 0
    if not len(gt):
        return 0, len(pred)
    iou = iou_matrix(pred, gt)
    used_p, used_g = set(), set()
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        p, g = divmod(int(flat), len(gt))
        if iou[p, g] < iou_min:
            break
        if p in used_p or g in used_g:
            continue
        used_p.add(p)
        used_g.add(g)
    found = sum(1 for g in used_g if care[g])
    # a box on a don't-care person (mostly outside the frame) is neither found nor false
    excused = (iou[:, ~care] > 0.1).any(axis=1) if (~care).any() else np.zeros(len(pred), bool)
    false = sum(1 for p in range(len(pred)) if p not in used_p and not excused[p])
    return found, false


def clip_boxes(boxes: np.ndarray, h: int, w: int) -> np.ndarray:
    out = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
    np.clip(out[:, 0::2], 0, w, out=out[:, 0::2])
    np.clip(out[:, 1::2], 0, h, out=out[:, 1::2])
    return out


def still_frames(photos: dict, repeat: int):
    for name, rgb in photos.items():
        gt = np.array(GROUND_TRUTH[name], np.float32)
        for _ in range(repeat):
            yield name, rgb, gt, np.ones(len(gt), bool)


# More real photos that ship inside installed dependencies, unlike the people of the sample:
# a head-and-shoulders portrait (matplotlib) and empty scenes (viser's environment maps: a night
# field, a warehouse, a forest, a rocky hill, a flat, a park, a hall, a photo studio; its city
# square and waterfront are left out, as they hold people a few pixels tall). Hand-drawn boxes.
SCENES = [("matplotlib", "mpl-data/sample_data/grace_hopper.jpg", [(12, 22, 512, 600)])] + [
    ("viser", f"_assets/hdri/{name}_1k.jpg", []) for name in (
        "dikhololo_night", "empty_warehouse_01", "forest_slope", "kiara_1_dawn", "lebombo",
        "rooitou_park", "st_fagans_interior", "studio_small_03")]


def scene_frames(repeat: int):
    """`SCENES` as stills, `repeat` frames each; those whose package is missing are left out."""
    import importlib.util

    import cv2
    for package, relative, boxes in SCENES:
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            continue
        bgr = cv2.imread(str(Path(spec.origin).parent / relative))
        if bgr is None:
            continue
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        gt = np.array(boxes, np.float32).reshape(-1, 4)
        for _ in range(repeat):
            yield f"scene:{Path(relative).stem}", rgb, gt, np.ones(len(gt), bool)


def clip_frames(min_visible: float, frames: int | None):
    from pipeline.sources.sample import PHOTOS, SampleSource
    src = SampleSource(realtime=False, loop=False)
    n = src.clip_frames if frames is None else min(frames, src.clip_frames)
    for k in range(n):
        scene, m = src.view(k)
        name = PHOTOS[scene]
        gt = np.array(GROUND_TRUTH[name], np.float32)
        corners = np.stack([gt[:, [0, 1]], gt[:, [2, 3]]], axis=1)          # (P, 2, 2)
        moved = corners @ m[:, :2].T + m[:, 2]
        boxes = moved.reshape(-1, 4).astype(np.float32)
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        vis = clip_boxes(boxes, src.height, src.width)
        vis_area = (vis[:, 2] - vis[:, 0]) * (vis[:, 3] - vis[:, 1])
        care = vis_area >= min_visible * area
        yield f"clip:{name}", src.render(k), vis, care


def evaluate(det, frames, iou_min: float, reference=None) -> dict:
    det.reset()
    found = total = false = persons = 0
    times, agree, n = [], [], 0
    cut = None
    for name, rgb, gt, care in frames:
        if name != cut:
            det.reset()     # a scene cut, as the detection worker does on a new source epoch
            cut = name
        h, w = rgb.shape[:2]
        t0 = time.perf_counter()
        d = det.detect(rgb)
        times.append(time.perf_counter() - t0)
        pred = clip_boxes(d.boxes, h, w)
        f, fp = match(pred, gt, care, iou_min)
        found += f
        total += int(care.sum())
        false += fp
        persons += len(pred)
        n += 1
        if reference is not None:
            ref = reference.get((name, n))
            if ref is not None and len(ref) == 1 and len(pred) == 1:
                from pipeline.detectors.tracker import iou_matrix
                agree.append(float(iou_matrix(pred, ref)[0, 0]))
    t = np.array(times) * 1e3
    return {"frames": n, "found_pct": 100.0 * found / max(total, 1), "found": found, "people": total,
            "false_per_100": 100.0 * false / max(n, 1), "persons_mean": persons / max(n, 1),
            "ms_p50": float(np.percentile(t, 50)), "ms_p99": float(np.percentile(t, 99)),
            "agree_iou_p50": float(np.median(agree)) if agree else None,
            "agree_iou_p10": float(np.percentile(agree, 10)) if agree else None, "agree_frames": len(agree)}


def reference_boxes(det, frames) -> dict:
    """MediaPipe's own single-person boxes, keyed by (source frame name, index)."""
    out, n, cut = {}, 0, None
    det.reset()
    for name, rgb, _, _ in frames:
        if name != cut:
            det.reset()
            cut = name
        n += 1
        h, w = rgb.shape[:2]
        out[(name, n)] = clip_boxes(det.detect(rgb).boxes, h, w)
    return out


def detectors(args):
    from pipeline.detectors import make_detector
    blaze = lambda **kw: lambda: make_detector("blazepose", threads=args.threads, **kw)  # noqa: E731

    def gpu(**kw):   # the GPU's defaults, run here on LiteRT
        return blaze(**{"rounds": 1, "refine": "mask", "refine_every": 1, "round_every": 5, **kw})
    rows = [("blazepose CPU default (mask every 5th, follow)", blaze()),
            ("blazepose CPU default without follow", blaze(follow=False)),
            ("blazepose views, no refine (old CPU default)", blaze(refine="none")),
            ("blazepose 1 pass (whole frame only)", blaze(views="full", rounds=0, refine="none")),
            ("blazepose views, refine=landmarks", blaze(refine="landmarks", refine_every=1)),
            ("blazepose views + 1 round, no refine (old GPU)", blaze(rounds=1, refine="none")),
            ("blazepose GPU default (round every 5th, mask, follow)", gpu()),
            ("blazepose GPU default, round every frame", gpu(round_every=1)),
            ("blazepose GPU default, scores 0.5/0.7", gpu(min_score=0.5, round_min_score=0.7)),
            ("blazepose GPU default without follow", gpu(follow=False, round_every=1))]
    if args.torch:
        rows.append((f"blazepose torch {args.device or 'cpu'}",
                     lambda: make_detector("blazepose", runtime="torch", device=args.device or "cpu")))
    if args.yolo:
        rows.append((f"yolo {Path(args.yolo).name}", lambda: make_detector("yolo", model=args.yolo, device=args.device)))
    if args.yolo_random:
        rows.append(("yolo11n RANDOM weights (counts meaningless)",
                     lambda: make_detector("yolo", model=random_yolo(args.tmp), device=args.device)))
    return rows


def random_yolo(tmp: Path) -> Path:
    from pipeline.detectors.yolo_model import build_untrained
    return build_untrained("yolo11n.yaml", tmp / "yolo11n_untrained.pt")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iou", type=float, default=0.5, help="IoU for a box to count as a found person")
    ap.add_argument("--min-visible", type=float, default=0.5, help="clip: visible fraction below which a person is don't-care")
    ap.add_argument("--repeat", type=int, default=3, help="frames per photo for the stills")
    ap.add_argument("--clip-frames", type=int, default=None, help="first N clip frames (default: all 240)")
    ap.add_argument("--threads", type=int, default=1, help="LiteRT threads for blazepose")
    ap.add_argument("--torch", action="store_true", help="also the torch runtime of blazepose")
    ap.add_argument("--yolo", help="a YOLO weights file")
    ap.add_argument("--yolo-random", action="store_true", help="also yolo11n from its yaml (random weights)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--no-mediapipe", action="store_true")
    ap.add_argument("--only", default=None, help="comma-separated substrings: just the rows whose name holds one")
    args = ap.parse_args()
    import tempfile
    from pipeline.detectors.yolo import prepare_offline_env
    os.environ.setdefault("GLOG_minloglevel", "2")
    args.tmp = Path(tempfile.mkdtemp(prefix="detect-quality-"))
    prepare_offline_env(args.tmp / "ultralytics")

    from pipeline.detectors import make_detector
    from pipeline.sources.sample import load_photos, PHOTOS
    photos = dict(zip(PHOTOS, load_photos()))
    sources = {"photos": list(still_frames(photos, args.repeat)),
               "clip": list(clip_frames(args.min_visible, args.clip_frames)),
               "scenes": list(scene_frames(args.repeat))}
    print(f"ground truth: {sum(len(v) for v in GROUND_TRUTH.values())} people on {len(photos)} photos; "
          f"clip {len(sources['clip'])} frames, {sum(int(c.sum()) for *_, c in sources['clip'])} person-frames "
          f"(>= {args.min_visible:.0%} visible); scenes {len(sources['scenes'])} frames "
          f"({sum(len(g) for _, _, g, _ in sources['scenes'])} person-frames, the rest empty); "
          f"match IoU >= {args.iou}", flush=True)
    from detector_rows import started_detectors

    print(f"{'source':<7} {'detector':<44} {'frames':>6} {'found %':>8} {'found':>9} {'false/100f':>10} "
          f"{'persons':>7} {'ms p50':>7} {'agree IoU p50/p10 (n)':>22}")
    # MediaPipe's single-person boxes are the agreement reference of the rows after its own.
    mediapipe = [] if args.no_mediapipe else [("mediapipe (legacy, one person)", lambda: make_detector("mediapipe"))]
    refs = {}
    for label, det, _ in started_detectors(mediapipe + detectors(args),
                                                   only=args.only.split(",") if args.only else None):
        is_reference = label.startswith("mediapipe")
        if is_reference:
            refs = {src: reference_boxes(det, frames) for src, frames in sources.items()}
        for src, frames in sources.items():
            r = evaluate(det, frames, args.iou, None if is_reference else refs.get(src))
            agree = ("" if r["agree_iou_p50"] is None else
                     f"{r['agree_iou_p50']:.2f}/{r['agree_iou_p10']:.2f} ({r['agree_frames']})")
            print(f"{src:<7} {label:<44} {r['frames']:>6} {r['found_pct']:>8.1f} {r['found']:>4}/{r['people']:<4} "
                  f"{r['false_per_100']:>10.1f} {r['persons_mean']:>7.2f} {r['ms_p50']:>7.1f} {agree:>22}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
