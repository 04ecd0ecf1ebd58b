"""Per-crop latency of POCO-CLIFF and POCO-PARE at several batch sizes on one device.

    python tools/bench_model.py [--device cpu|cuda] [--precision fp32|fp16] [--iters 5]
                                [--batches 1,2,4,8] [--models cliff,pare] [--channels-last] [--backend torch]

Random weights (BN calibrated) unless --checkpoint-dir holds poco_<model>.pt. Prints, per
model and batch size, the median latency per batch and per crop and the per-crop ratio
against batch 1 (< 1 means batching pays).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _sync(device):
    import torch
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench(model_name: str, device: str, precision: str, batches: list[int], iters: int, warmup: int,
          channels_last: bool, checkpoint: str | None, backend: str = "torch") -> list[dict]:
    import numpy as np

    from pipeline.backends import get_backend
    from pipeline.backends.base import BackendConfig
    from pipeline.models.init import synthetic_images
    from pipeline.models.preprocess import normalise

    be = get_backend(backend)(BackendConfig(model=model_name, checkpoint=checkpoint, device=device,
                                            precision=precision, max_batch=max(batches),
                                            channels_last=channels_last, options={"seed": 0}))
    be.load()
    rows = []
    pool = normalise(synthetic_images(max(batches), seed=0))
    for b in batches:
        img, info = pool[:b], np.zeros((b, 3), np.float32)
        for _ in range(warmup):
            be.infer(img, info)
        times = []
        for _ in range(iters):
            _sync(device)
            t0 = time.perf_counter()
            be.infer(img, info)
            _sync(device)
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        rows.append({"model": model_name, "batch": b, "batch_ms": med * 1e3, "crop_ms": med * 1e3 / b,
                     "min_ms": min(times) * 1e3})
    info = be.info()
    be.close()
    for r in rows:
        r["params"] = info["params"]
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "fp16"])
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batches", default="1,2,4,8")
    ap.add_argument("--models", default="cliff,pare")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--backend", default="torch", help="inference backend (torch, onnx, compile, cudagraph, trt)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--checkpoint-dir", default=None, help="directory with poco_cliff.pt / poco_pare.pt")
    args = ap.parse_args(argv)
    if args.iters < 1:
        ap.error("--iters must be >= 1")
    try:
        batches = sorted({int(x) for x in args.batches.split(",") if x.strip()})
    except ValueError:
        ap.error(f"--batches must be comma-separated integers, got {args.batches!r}")
    if not batches or batches[0] < 1:
        ap.error("--batches must be positive")
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("CUDA is not available on this machine; use --device cpu", file=sys.stderr)
        return 2
    dev_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else \
        f"CPU ({torch.get_num_threads()} torch threads)"
    print(f"device: {args.device} {dev_name}; precision {args.precision}; torch {torch.__version__}; "
          f"iters {args.iters}")
    print(f"{'model':6} {'batch':>5} {'ms/batch':>10} {'ms/crop':>9} {'min ms/batch':>13} {'crop vs b1':>10}")
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        ckpt = None
        if args.checkpoint_dir:
            cand = Path(args.checkpoint_dir) / f"poco_{name}.pt"
            ckpt = str(cand) if cand.is_file() else None
        rows = bench(name, args.device, args.precision, batches, args.iters, args.warmup, args.channels_last, ckpt,
                     backend=args.backend)
        base = rows[0]["crop_ms"]
        for r in rows:
            print(f"{r['model']:6} {r['batch']:>5} {r['batch_ms']:>10.1f} {r['crop_ms']:>9.1f} "
                  f"{r['min_ms']:>13.1f} {r['crop_ms'] / base:>10.2f}")
        print(f"{name}: {rows[0]['params'] / 1e6:.2f} M parameters ({'checkpoint' if ckpt else 'random weights'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
