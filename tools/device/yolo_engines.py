#!/usr/bin/env python
"""GPU time of one YOLO frame's device steps (letterbox + network + decode) per way of running
them, standalone: the `cudagraph` engine (eager kernels captured in a CUDA graph) against the
same steps compiled by Inductor first and then captured the same way. yolo11n from its yaml
(random weights): speed only. Times are CUDA-event medians of single replays, and the mean of
a burst of back-to-back replays (the GPU's own time, no host gaps). The last column compares
scores only, which these random weights saturate: it is no accuracy check (the GPU test
`test_compile_engine_serves_at_once_then_its_compiled_graph_takes_over` compares boxes).

    python tools/device/yolo_engines.py --frames 200 --modes eager,default,max-autotune-no-cudagraphs
"""
from __future__ import annotations

import argparse
import os
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
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--modes", default="eager,default,max-autotune-no-cudagraphs")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="yolo-engines-"))
    prepare_offline_env(tmp / "cfg")
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(tmp / "inductor"))
    import torch

    from pipeline.backends.graphs import capture_graph
    from pipeline.detectors import make_detector
    from pipeline.detectors.yolo_model import build_untrained
    weights = build_untrained("yolo11n.yaml", tmp / "yolo11n_untrained.pt", person_bias=8.0)
    h, w = 1080, 1920
    print(f"{torch.__version__} {torch.cuda.get_device_name(0)}; yolo11n UNTRAINED; {w}x{h} frames, imgsz {args.imgsz};"
          f" ms", flush=True)
    print(f"{'mode':<30} {'build s':>8} {'replay p50':>10} {'replay p90':>10} {'burst mean':>10} {'max |d score|':>16}",
          flush=True)
    det = make_detector("yolo", model=str(weights), device="cuda", imgsz=args.imgsz, engine="cudagraph", max_persons=8)
    det.setup()
    runner = det._runner
    frame = torch.randint(0, 255, (h, w, 3), dtype=torch.uint8, device="cuda")
    reference = None
    for mode in args.modes.split(","):
        canvas = runner._buffers(h, w).canvas     # the letterbox canvas, grey; no graph captured for it

        def steps(frame, canvas):
            return runner._device_steps(frame, h, w, canvas)
        t0 = time.perf_counter()
        try:
            with torch.inference_mode():
                fn = steps if mode == "eager" else torch.compile(steps, mode=mode, dynamic=False)
                for _ in range(3):
                    fn(frame, canvas)
                torch.cuda.synchronize()
                graph, (boxes, scores) = capture_graph(lambda: fn(frame, canvas), torch.device("cuda:0"))
        except Exception as exc:   # noqa: BLE001 - a probe: report and go on
            print(f"{mode:<30} failed: {type(exc).__name__}: {str(exc)[:300]}", flush=True)
            continue
        build = time.perf_counter() - t0
        graph.replay()
        torch.cuda.synchronize()
        if reference is None:
            reference = boxes.clone(), scores.clone()
        diff = float((scores - reference[1]).abs().max())
        times = []
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        for _ in range(args.frames):
            a.record()
            graph.replay()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b))
        burst = 50
        a.record()
        for _ in range(burst):
            graph.replay()
        b.record()
        b.synchronize()
        print(f"{mode:<30} {build:8.1f} {np.median(times):10.3f} {np.percentile(times, 90):10.3f} "
              f"{a.elapsed_time(b) / burst:10.3f} {diff:16.2e}", flush=True)
        del graph
    det.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
