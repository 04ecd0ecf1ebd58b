#!/usr/bin/env python
"""Where a YOLO frame's time goes on a GPU, standalone (no other process on the GPU), and what
channels-last or a smaller imgsz would change. yolo11n from its yaml (random weights, person
logit raised so the candidates hold boxes): speed only.

Per variant, on 1080p frames: the upload, the graph replay (letterbox + network + decode) and
the read-back timed with CUDA events; the host's thresholds + NMS, ByteTrack and the whole
`detect()` with the wall clock. Prints medians in ms.

    python tools/device/yolo_breakdown.py --frames 200
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pipeline.detectors.yolo import prepare_offline_env  # noqa: E402  (imports no ultralytics)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--imgsz", default="640,512,480")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="yolo-breakdown-"))
    prepare_offline_env(tmp / "cfg")
    import torch

    from pipeline.detectors import make_detector
    from pipeline.detectors.yolo_model import build_untrained
    weights = build_untrained("yolo11n.yaml", tmp / "yolo11n_untrained.pt", person_bias=8.0)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (1080, 1920, 3), np.uint8) for _ in range(4)]
    print(f"{torch.cuda.get_device_name(0)}; yolo11n UNTRAINED; 1080p frames; median ms of {args.frames}")
    print(f"{'variant':<28} {'detect':>7} {'upload':>7} {'replay':>7} {'readback':>8} {'host sel':>8} {'track':>6}")
    for imgsz in [int(v) for v in args.imgsz.split(",")]:
        for channels_last in (False, True):
            det = make_detector("yolo", model=str(weights), device="cuda", imgsz=imgsz, engine="cudagraph",
                                max_persons=8)
            det.setup()
            runner = det._runner
            if channels_last:
                runner._net = runner._net.to(memory_format=torch.channels_last)
                runner._graphs.clear()
            for f in frames:
                det.detect(f)
            total, up, rep, back, sel, trk = [], [], [], [], [], []
            ev = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
            for k in range(args.frames):
                rgb = frames[k % len(frames)]
                t0 = time.perf_counter()
                det.detect(rgb)
                total.append(time.perf_counter() - t0)
                cap = runner._graphs[(1080, 1920)]
                with torch.inference_mode():
                    ev[0].record()
                    np.copyto(cap.host_np, rgb)
                    cap.frame.copy_(cap.host, non_blocking=True)
                    ev[1].record()
                    cap.graph.replay()
                    ev[2].record()
                    kk = cap.boxes.shape[0]
                    cap.host_boxes[:kk].copy_(cap.boxes, non_blocking=True)
                    cap.host_scores[:kk].copy_(cap.scores, non_blocking=True)
                    ev[3].record()
                    ev[3].synchronize()
                up.append(ev[0].elapsed_time(ev[1]) / 1e3)
                rep.append(ev[1].elapsed_time(ev[2]) / 1e3)
                back.append(ev[2].elapsed_time(ev[3]) / 1e3)
                t1 = time.perf_counter()
                boxes, scores = runner._select(cap.host_boxes[:kk], cap.host_scores[:kk], det.conf, det.iou, 300)
                t2 = time.perf_counter()
                if det._ul_tracker is not None:
                    det._track(boxes, scores, 1080, 1920)
                t3 = time.perf_counter()
                sel.append(t2 - t1)
                trk.append(t3 - t2)
            med = lambda v: 1e3 * float(np.median(v))  # noqa: E731
            name = f"imgsz {imgsz}{' channels-last' if channels_last else ''}"
            print(f"{name:<28} {med(total):7.2f} {med(up):7.2f} {med(rep):7.2f} {med(back):8.2f} {med(sel):8.2f} "
                  f"{med(trk):6.2f}", flush=True)
            det.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
