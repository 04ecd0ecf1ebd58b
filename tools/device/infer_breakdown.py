"""Where the inference worker's time per frame goes on a GPU (issue 11): crop upload paths,
the model call, post-processing; each timed alone over many iterations on a 1080p frame in a
real frames ring. Prints a table of medians (ms)."""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402


def timeit(fn, n=200, warm=20):
    import torch
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append((time.perf_counter() - t) * 1000)
    return statistics.median(ts), float(np.percentile(ts, 99))


def main():

    from pipeline.backends import BackendConfig, get_backend
    from pipeline.backends.gpu_preprocess import GpuCropper
    from pipeline.models.postprocess import to_smpl_params
    from pipeline.models.preprocess import bbox_info, square_boxes
    from pipeline.runtime.records import frames_dtype
    from pipeline.runtime.ring import Ring

    ring = Ring.create("frames", frames_dtype(1080, 1920), 8, "bd%d" % int(time.time()))
    try:
        rec = ring.slot_record(0)
        rec["pixels"] = np.random.default_rng(0).integers(0, 255, (1080, 1920, 3), dtype=np.uint8)
        rec["height"], rec["width"] = 1080, 1920
        boxes = np.array([[0.38 * 1920, 0.15 * 1080, 0.62 * 1920, 0.95 * 1080]], np.float32)
        centres, sides = square_boxes(boxes)
        rows = {}
        staged = GpuCropper("cuda", 1080, 1920)
        rows["crop, pinned staging copy"] = timeit(lambda: staged.crops(rec["pixels"][:1080], centres, sides))
        direct = GpuCropper("cuda", 1080, 1920)
        ok = direct.register_host(*ring.host_region())
        rows[f"crop, DMA from registered ring ({ok})"] = timeit(lambda: direct.crops(rec["pixels"][:1080], centres, sides))
        img = direct.crops(rec["pixels"][:1080], centres, sides)
        info = bbox_info(centres, sides, (1920, 1080))
        be = get_backend("compile")(BackendConfig(model="cliff", device="cuda", precision="fp16", max_batch=1,
                                                  cache_dir="/tmp/posepipe-bench-data/engines", options={"batch_sizes": "1"}))
        t = time.perf_counter(); be.load(); be.warmup(); print(f"compile load+warmup {time.perf_counter() - t:.0f} s", flush=True)
        rows["backend.infer (compile, b=1, incl. D2H)"] = timeit(lambda: be.infer(img, info))
        out = be.infer(img, info)
        rows["to_smpl_params"] = timeit(lambda: to_smpl_params(out, centres, sides, (1920, 1080)))
        rows["bbox_info + square_boxes"] = timeit(lambda: (square_boxes(boxes), bbox_info(centres, sides, (1920, 1080))))
        direct.unregister_host()
        print("| step | p50 ms | p99 ms |\n|---|---|---|")
        for k, (p50, p99) in rows.items():
            print(f"| {k} | {p50:.3f} | {p99:.3f} |")
    finally:
        ring.close()
        ring.unlink()


if __name__ == "__main__":
    main()
