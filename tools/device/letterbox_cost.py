#!/usr/bin/env python
"""What an exact letterbox would cost the blazepose torch runtime on a GPU: OpenCV's INTER_AREA
as two matrix products (LiteRT's input to a grey level; tried in session 11 and not kept: the
sample clip's numbers moved within their noise) against the antialiased bilinear interpolate it
runs, for the views of one frame size, median of CUDA-event timings (eager, not in the graph)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> int:
    import numpy as np
    import torch

    from pipeline.detectors.blazepose import INPUT_SIZE, letterbox_geometry, letterbox_views, view_squares

    def area_weights(n_out: int, n_in: int) -> np.ndarray:
        """(n_out, n_in): output pixel i averages the input over [i*s, (i+1)*s), s = n_in / n_out,
        each input pixel weighted by how much of it lies inside (INTER_AREA, either way)."""
        scale = n_in / n_out
        lo = (np.arange(n_out, dtype=np.float64) * scale)[:, None]
        j = np.arange(n_in, dtype=np.float64)[None, :]
        return (np.clip(np.minimum(lo + scale, j + 1.0) - np.maximum(lo, j), 0.0, None) / scale).astype(np.float32)
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    dev = torch.device("cuda")
    frame = torch.randint(0, 256, (h, w, 3), dtype=torch.uint8, device=dev)
    views = view_squares(h, w, "both")
    weights = {}

    def mats(nh, nw, vh, vw):
        key = (nh, nw, vh, vw)
        if key not in weights:
            weights[key] = (torch.from_numpy(area_weights(nh, vh)).to(dev), torch.from_numpy(area_weights(nw, vw)).to(dev))
        return weights[key]

    def area():
        batch = torch.full((len(views), 3, INPUT_SIZE, INPUT_SIZE), -1.0, device=dev)
        for v, (x0, y0, vw, vh) in enumerate(views):
            _, px, py, nw, nh = letterbox_geometry(vh, vw)
            rows, cols = mats(nh, nw, vh, vw)
            crop = frame[y0:y0 + vh, x0:x0 + vw].permute(2, 0, 1).float()
            batch[v, :, py:py + nh, px:px + nw] = torch.round(rows @ crop @ cols.T) * (1 / 127.5) - 1
        return batch

    def bilinear():     # what the torch runtime runs
        return letterbox_views(frame, views)

    print(f"{torch.cuda.get_device_name(0)}, {w}x{h}, {len(views)} views, median of {args.runs}")
    for name, fn in (("exact area (matrix products)", area), ("antialiased bilinear (runs)", bilinear)) * 2:
        for _ in range(20):
            fn()
        times = []
        for _ in range(args.runs):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            torch.cuda.synchronize()
            times.append(a.elapsed_time(b))
        print(f"  {name:<32} {np.median(times):.3f} ms  p90 {np.percentile(times, 90):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
