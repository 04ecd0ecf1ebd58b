#!/usr/bin/env python
"""Detection rate and speed of each person detector on real photos that ship with ultralytics.

Two sources are played through every detector, one frame at a time as the detection worker
would see them:
  still  bus.jpg and zidane.jpg at their own size, each repeated --frames times (a looping
         image source),
  clip   a 1280x720 mp4 generated here from the same photos (each on a 16:9 canvas, slow pan
         and 1.0->1.5x zoom over --frames frames), written with OpenCV and read back so codec
         artefacts are included.
Detection rate = % of frames with at least one person (the seed's metric). Times cover
`detect()` only (not decoding). Nothing is downloaded; YOLO runs only from a file you give.

    python tools/bench_detect.py                       # mediapipe (video + static mode), center
    python tools/bench_detect.py --yolo data/yolo11n.pt
    python tools/bench_detect.py --yolo-random         # yolo11n.yaml, random weights: speed only
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PHOTOS = ("bus.jpg", "zidane.jpg")


def assets_dir() -> Path:
    spec = importlib.util.find_spec("ultralytics")
    if spec is None or spec.origin is None:
        sys.exit("ultralytics is not installed; its sample photos are the benchmark data")
    return Path(spec.origin).parent / "assets"


def load_photos() -> list[tuple[str, np.ndarray]]:
    import cv2
    out = []
    for name in PHOTOS:
        bgr = cv2.imread(str(assets_dir() / name))
        if bgr is None:
            sys.exit(f"cannot read {assets_dir() / name}")
        out.append((name, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
    return out


def still_frames(photos, frames_per_photo: int):
    for _, rgb in photos:
        for _ in range(frames_per_photo):
            yield rgb


def pan_zoom(rgb: np.ndarray, n: int, size: tuple[int, int]):
    """n frames of size (W, H) panning and zooming over rgb placed on a 16:9 canvas."""
    import cv2
    out_w, out_h = size
    h, w = rgb.shape[:2]
    cw = max(w, int(round(h * out_w / out_h)))
    ch = int(round(cw * out_h / out_w))
    canvas = np.zeros((ch, cw, 3), np.uint8)
    y0, x0 = (ch - h) // 2, (cw - w) // 2
    canvas[y0:y0 + h, x0:x0 + w] = rgb
    for t in range(n):
        u = t / max(n - 1, 1)
        zoom = 1.0 + 0.5 * u
        ww, wh = cw / zoom, ch / zoom
        cx = cw / 2 + (u - 0.5) * (cw - ww) * 0.8
        cy = ch / 2 + (0.5 - u) * (ch - wh) * 0.5
        s = out_w / ww
        m = np.array([[s, 0, out_w / 2 - s * cx], [0, s, out_h / 2 - s * cy]], np.float32)
        yield cv2.warpAffine(canvas, m, (out_w, out_h), flags=cv2.INTER_AREA)


def write_clip(photos, frames_per_photo: int, size: tuple[int, int], path: Path) -> Path:
    import cv2
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, size)
    if not writer.isOpened():
        sys.exit(f"OpenCV cannot write {path} (no mp4v encoder?)")
    for _, rgb in photos:
        for frame in pan_zoom(rgb, frames_per_photo, size):
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def clip_frames(path: Path):
    import cv2
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    if not frames:
        sys.exit(f"OpenCV could not read back {path}")
    return frames


def run(det, frames) -> dict:
    det.reset()
    times, persons = [], []
    for rgb in frames:
        t0 = time.perf_counter()
        d = det.detect(rgb)
        times.append(time.perf_counter() - t0)
        persons.append(len(d))
    t = np.array(times) * 1e3
    p = np.array(persons)
    return {"frames": len(p), "rate": 100.0 * (p > 0).mean(), "persons": p.mean(),
            "fps": len(t) / (t.sum() / 1e3), "p50": np.percentile(t, 50), "p99": np.percentile(t, 99)}


def detectors(args, tmp: Path):
    from pipeline.detectors import make_detector
    yield "center", make_detector("center")
    yield "mediapipe (video)", make_detector("mediapipe")
    yield "mediapipe (static)", make_detector("mediapipe", static_image_mode=True)
    if args.yolo:
        yield f"yolo {Path(args.yolo).name}", make_detector("yolo", model=args.yolo, device=args.device)
        yield f"yolo {Path(args.yolo).name} seed", make_detector("yolo", model=args.yolo, preset="seed",
                                                                device=args.device)
    if args.yolo_random:
        from ultralytics import YOLO
        path = tmp / "yolo11n_random.pt"
        YOLO("yolo11n.yaml").save(str(path))
        yield "yolo11n RANDOM (speed only)", make_detector("yolo", model=path, device=args.device)
        yield "yolo11n RANDOM seed (speed only)", make_detector("yolo", model=path, preset="seed",
                                                                device=args.device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=60, help="frames per photo (default 60)")
    ap.add_argument("--size", default="1280x720", help="clip size WxH (default 1280x720)")
    ap.add_argument("--yolo", help="YOLO weights file, e.g. data/yolo11n.pt")
    ap.add_argument("--yolo-random", action="store_true", help="also time yolo11n with random weights")
    ap.add_argument("--device", default=None, help="yolo device (default: cuda if present, else cpu)")
    ap.add_argument("--keep-clip", type=Path, help="also save the generated clip here")
    args = ap.parse_args()
    if args.frames < 1:
        sys.exit("--frames must be >= 1")
    try:
        size = tuple(int(v) for v in args.size.lower().split("x"))
        assert len(size) == 2 and min(size) > 0
    except (ValueError, AssertionError):
        sys.exit(f"--size must look like 1280x720, got {args.size!r}")

    with tempfile.TemporaryDirectory(prefix="bench-detect-") as tmpdir:
        tmp = Path(tmpdir)
        os.environ.setdefault("YOLO_OFFLINE", "1")
        os.environ.setdefault("YOLO_AUTOINSTALL", "False")
        os.environ.setdefault("YOLO_CONFIG_DIR", str(tmp / "ultralytics"))
        os.environ.setdefault("GLOG_minloglevel", "2")
        photos = load_photos()
        clip = write_clip(photos, args.frames, size, tmp / "panzoom.mp4")
        if args.keep_clip:
            args.keep_clip.write_bytes(clip.read_bytes())
        sources = {"still": list(still_frames(photos, args.frames)), "clip": clip_frames(clip)}

        print(f"{'source':<6} {'detector':<34} {'frames':>6} {'det.rate %':>10} {'persons':>7} "
              f"{'fps':>7} {'p50 ms':>7} {'p99 ms':>7}")
        for name, det in detectors(args, tmp):
            t0 = time.perf_counter()
            det.setup()
            setup_s = time.perf_counter() - t0
            for src, frames in sources.items():
                r = run(det, frames)
                print(f"{src:<6} {name:<34} {r['frames']:>6} {r['rate']:>10.1f} {r['persons']:>7.2f} "
                      f"{r['fps']:>7.1f} {r['p50']:>7.1f} {r['p99']:>7.1f}", flush=True)
            print(f"{'':<6} {name:<34} setup {setup_s:.2f} s; {det.info().get('tracker')}", flush=True)
            det.close()


if __name__ == "__main__":
    main()
