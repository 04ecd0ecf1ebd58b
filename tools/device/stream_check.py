"""Do parallel streams change any result? For each model variant, the cudagraph backend with
8 streams against 1 stream (same kernels: must match to rounding) and against eager with the
same fp16 backbone (tools/device, issue 11). Prints max abs differences per output."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main(variants=("cliff", "pare")) -> int:
    import numpy as np
    import torch

    from pipeline.backends.base import BackendConfig
    from pipeline.backends.cudagraph import CudaGraphBackend
    from pipeline.backends.torch import TorchBackend
    from pipeline.models.preprocess import normalise
    from pipeline.testing import make_checkpoint
    from pipeline.testing.checkpoints import synthetic_images

    img = normalise(synthetic_images(4, seed=3))
    bbox = (np.random.default_rng(3).standard_normal((4, 3)) * 0.3).astype(np.float32)
    worst = 0.0
    for variant in variants:
        ckpt = Path(f"/tmp/posepipe-data/engines/poco_{variant}_random_calibrated.pt")
        if not ckpt.exists():
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            make_checkpoint(variant, ckpt, calibrate_bn=True, seed=0)
        outs = {}
        for label, cls, opts, prec in (("cudagraph-s8", CudaGraphBackend, {"streams": 8}, "fp16"),
                                       ("cudagraph-s1", CudaGraphBackend, {"streams": 1}, "fp16"),
                                       ("torch-fp16", TorchBackend, {}, "fp16"),
                                       ("torch-fp32", TorchBackend, {}, "fp32")):
            be = cls(BackendConfig(model=variant, checkpoint=str(ckpt), device="cuda", precision=prec,
                                   max_batch=4, channels_last=True, options=opts))
            be.load()
            be.warmup()
            outs[label] = [be.infer(img, bbox) for _ in range(3)]
            be.close()
            torch.cuda.empty_cache()
        for a, b in (("cudagraph-s8", "cudagraph-s1"), ("cudagraph-s8", "torch-fp16"),
                     ("torch-fp16", "torch-fp32"), ("cudagraph-s8", "torch-fp32")):
            diffs = {k: float(np.abs(outs[a][0][k] - outs[b][0][k]).max()) for k in outs[a][0]}
            print(f"{variant}: {a} vs {b}: " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()), flush=True)
            if (a, b) == ("cudagraph-s8", "cudagraph-s1"):
                worst = max(worst, max(diffs.values()))
        repeat = max(float(np.abs(o["pred_pose"] - outs["cudagraph-s8"][0]["pred_pose"]).max())
                     for o in outs["cudagraph-s8"][1:])
        print(f"{variant}: cudagraph-s8 repeat calls: pred_pose {repeat:.2e}", flush=True)
        worst = max(worst, repeat)
    print(f"streams vs serial, worst: {worst:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
