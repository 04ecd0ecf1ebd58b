#!/usr/bin/env python
"""Person detection speed, standalone, batch 1, CPU and GPU: every detector on the same frames.

Frames (decoded once, held in memory, so only `detect()` is timed):
  1080p-1p   the 1080p clip with one real person (tools/people_clip.py),
  1080p-5p   the same with five people,
  sample     the built-in 1280x720 sample source (bus.jpg / zidane.jpg panned and zoomed).
Rows: center (no model), blazepose (LiteRT per --threads, and the torch module on each device),
mediapipe (legacy one-person solution),
and YOLO on each --devices entry with each engine that can run there (cpu: eager and
ultralytics' own predict; cuda: cudagraph, compile (timed once compiled), trt when TensorRT is
installed, ultralytics' predict).
YOLO weights: --yolo FILE, else yolo11n built from its yaml with RANDOM weights (its speed is
real, its person counts are meaningless; the row says UNTRAINED). Persons = mean boxes per
frame. Nothing is downloaded.

    python tools/bench_detect.py                                  # CPU rows
    python tools/bench_detect.py --devices cpu,cuda --frames 100  # on the GPU machine
"""
from __future__ import annotations

import argparse
import importlib.util
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))


def read_video(path: Path, n: int) -> list[np.ndarray]:
    """The first `n` frames of a video file as RGB, decoded by the pipeline's own video source."""
    from pipeline.sources import SourceError, open_source
    try:
        with open_source(str(path), realtime=False) as src:
            return [frame.rgb for frame in itertools.islice(src, n)]
    except SourceError as exc:
        sys.exit(f"OpenCV could not read back {path}: {exc}")


def sources(tmp: Path, n: int) -> dict:
    from people_clip import make_people_video

    from pipeline.sources.sample import SampleSource
    sample = SampleSource(realtime=False)
    step = max(1, sample.clip_frames // n)
    return {"1080p-1p": read_video(make_people_video(tmp / "p1.mp4", 1, frames=n), n),
            "1080p-5p": read_video(make_people_video(tmp / "p5.mp4", 5, frames=n), n),
            "sample": [sample.render(k) for k in range(0, sample.clip_frames, step)][:n]}


def run(det, frames, warm: int = 3, warming_timeout_s: float = 600.0) -> dict:
    for rgb in frames[:warm]:        # first frames of a size build graphs / allocate
        det.detect(rgb)
    t0 = time.monotonic()
    while det.warming() and time.monotonic() - t0 < warming_timeout_s:
        time.sleep(0.5)              # YOLO's compile engine: time what it runs once compiled
        det.detect(frames[0])        # the compiled graph takes over at the start of a frame
    det.reset()
    times, persons = [], []
    for rgb in frames:
        t0 = time.perf_counter()
        d = det.detect(rgb)
        times.append(time.perf_counter() - t0)
        persons.append(len(d))
    t = np.array(times) * 1e3
    return {"frames": len(t), "persons": float(np.mean(persons)), "fps": len(t) / (t.sum() / 1e3),
            "p50": float(np.percentile(t, 50)), "p99": float(np.percentile(t, 99))}


def detectors(args, yolo: Path, untrained: bool):
    from pipeline.detectors import make_detector
    yield "center", lambda: make_detector("center")
    for threads in args.threads:
        yield f"blazepose cpu litert {threads}t", lambda t=threads: make_detector("blazepose", threads=t)
    import torch
    for dev in args.devices:
        if dev == "cpu" or torch.cuda.is_available():
            # rounds=0 on both, so the rows compare the runtimes on the same work
            yield f"blazepose {dev} torch", lambda d=dev: make_detector("blazepose", runtime="torch", device=d, rounds=0)
    if torch.cuda.is_available() and any(d != "cpu" for d in args.devices):
        yield "blazepose cuda torch, 1 round (GPU default)", lambda: make_detector("blazepose", device="cuda")
    if importlib.util.find_spec("mediapipe") is not None and not args.no_mediapipe:
        yield "mediapipe cpu (one person)", lambda: make_detector("mediapipe")
    tag = " UNTRAINED" if untrained else ""
    for dev in args.devices:
        if dev.startswith("cuda") and not torch.cuda.is_available():
            print(f"(skipping yolo on {dev}: torch sees no CUDA GPU)", flush=True)
            continue
        engines = ["eager", "ultralytics"] if dev == "cpu" else ["cudagraph", "compile", "trt", "ultralytics"]
        for engine in engines:
            if engine == "trt" and importlib.util.find_spec("tensorrt") is None:
                print("(skipping yolo trt: the tensorrt package is not installed)", flush=True)
                continue
            yield (f"yolo {yolo.stem}{tag} {dev} {engine} {args.imgsz}",
                   lambda d=dev, e=engine: make_detector("yolo", model=yolo, device=d, engine=e, imgsz=args.imgsz,
                                                         tracker=args.tracker, cache_dir=args.tmp / "engines"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=60, help="frames per source (default 60)")
    ap.add_argument("--devices", default="cpu", help="yolo devices, e.g. cpu,cuda")
    ap.add_argument("--threads", default="1", help="blazepose LiteRT thread counts, e.g. 1,2")
    ap.add_argument("--yolo", type=Path, help="YOLO weights (default: untrained yolo11n from its yaml)")
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--tracker", default="bytetrack")
    ap.add_argument("--only", help="comma list of substrings: run only rows whose name has one")
    ap.add_argument("--no-mediapipe", action="store_true")
    args = ap.parse_args()
    args.devices = args.devices.split(",")
    args.threads = [int(t) for t in args.threads.split(",")]
    args.tmp = Path(tempfile.mkdtemp(prefix="bench-detect-"))
    from pipeline.detectors.yolo import prepare_offline_env
    prepare_offline_env(args.tmp / "ultralytics")
    os.environ.setdefault("GLOG_minloglevel", "2")
    untrained = args.yolo is None
    if untrained:
        from pipeline.detectors.yolo_model import build_untrained
        args.yolo = build_untrained("yolo11n.yaml", args.tmp / "yolo11n_untrained.pt")
    frames = sources(args.tmp, args.frames)
    import torch
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    print(f"batch 1; {os.cpu_count()} CPU cores, {gpu}; {args.frames} frames per source; times cover detect() only")
    print(f"{'detector':<44} {'source':<9} {'persons':>7} {'fps':>8} {'p50 ms':>7} {'p99 ms':>7}")
    from detector_rows import started_detectors

    only = args.only.split(",") if args.only else None
    for name, det, setup_s in started_detectors(detectors(args, args.yolo, untrained), only):
        for src, fr in frames.items():
            r = run(det, fr)
            print(f"{name:<44} {src:<9} {r['persons']:>7.2f} {r['fps']:>8.1f} {r['p50']:>7.2f} {r['p99']:>7.2f}",
                  flush=True)
        info = det.info()
        print(f"{'':<44} setup {setup_s:.1f} s; device {info.get('device')} {info.get('precision', '')} "
              f"{info.get('engine') or info.get('runtime') or ''}; tracker {info.get('tracker')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
