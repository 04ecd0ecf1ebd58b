#!/usr/bin/env python
"""Where a BlazePose frame's time goes (standalone, batch 1): each step of `detect()` timed with
the wall clock by wrapping it, on the 1080p clip with N real people (tools/people_clip.py).

    python tools/device/blazepose_breakdown.py --device cuda --persons 1,5
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))


def timed(obj, name, table, label=None):
    fn = getattr(obj, name)

    def wrapper(*a, **kw):
        t0 = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            table[label or name].append(time.perf_counter() - t0)
    setattr(obj, name, wrapper)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--persons", default="1,5")
    ap.add_argument("--frames", type=int, default=60)
    args = ap.parse_args()
    import logging
    logging.basicConfig(level=logging.WARNING, format="%(relativeCreated)8.0f ms %(name)s: %(message)s")
    for name in ("pipeline.models.landmarks_ik", "pipeline.detectors.blazepose"):
        logging.getLogger(name).setLevel(logging.INFO)
    from bench_detect import read_video
    from people_clip import make_people_video

    from pipeline.detectors import make_detector
    tmp = Path(tempfile.mkdtemp(prefix="blaze-breakdown-"))
    for n in [int(v) for v in args.persons.split(",")]:
        frames = read_video(make_people_video(tmp / f"p{n}.mp4", n, frames=args.frames), args.frames)
        det = make_detector("blazepose", device=args.device)
        det.setup()
        table = collections.defaultdict(list)
        net, ref = det._net, det._refiner
        timed(net, "first_pass", table, "first pass (upload, views, read-back)")
        if args.device != "cpu":
            timed(net, "run", table, "masked round")
        timed(ref.network, "crops", table, "landmarks: crops on the CPU")
        timed(ref, "start", table, "landmarks: start (crops, launch)")
        timed(ref, "finish", table, "landmarks: finish (wait, boxes)")
        if getattr(ref.network, "_gpu", None) is not None:
            timed(ref.network._gpu, "collect", table, "landmarks: wait for the GPU, read-back")
        timed(det, "_refine", table, "refit: all (with matching, follow)")
        if det._proposals is not None:
            timed(det._proposals, "start", table, "segmentation: resize, start (GPU)")
            timed(det._proposals, "_blobs", table, "segmentation: model, blobs (GPU: own thread)")
        timed(det, "detect", table, "detect() total")
        found = []
        for rgb in frames[:5]:
            det.detect(rgb)
        table.clear()
        reused, proposed = det.reused_regions, 0
        for rgb in frames:
            found.append(len(det.detect(rgb)))
            proposed += det.proposed
        reused = (det.reused_regions - reused) / len(frames)
        print(f"{n} person(s) on {args.device}: {np.mean(found):.2f} found per frame, {reused:.2f} detections per "
              f"frame took a followed body's landmarks, {proposed / len(frames):.2f} segmentation proposals per "
              f"frame; ms per frame "
              f"(total / frames), median ms per call, calls per frame:")
        for label, v in table.items():
            print(f"  {label:<44} {1e3 * np.sum(v) / len(frames):7.2f} {1e3 * np.median(v):7.2f} "
                  f"{len(v) / len(frames):5.1f}", flush=True)
        det.close()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("GLOG_minloglevel", "2")
    sys.exit(main())
