"""Per-crop latency of POCO on one device: eager torch against onnxruntime and its variants, in one run.

    python tools/bench_model.py                       # CPU: every variant, POCO-CLIFF, batches 1 and 4
    python tools/bench_model.py --variants torch,onnx --batches 1,2,4,8 --models cliff,pare
    python tools/bench_model.py --device cuda --precision fp16 --variants torch

Variants (rows), all on the same crops cut from the photos the `sample` source shows:
  torch              eager PyTorch (the reference: errors are measured against it)
  onnx-disable       the exported graph, onnxruntime with every graph optimisation off
  onnx-basic         ... ORT_ENABLE_BASIC (constant folding, redundant nodes removed)
  onnx-extended      ... ORT_ENABLE_EXTENDED (+ fused Conv+activation and other fusions)
  onnx               ... ORT_ENABLE_ALL (+ layout changes, NCHWc blocked convolutions): the
                     `onnx` backend as the pipeline runs it
  onnx-fp16          weights and activations fp16 (inputs/outputs fp32), ORT_ENABLE_ALL
  onnx-int8-dynamic  int8 weights, activations quantised on the fly (ConvInteger)
  onnx-int8          static QDQ int8 convolutions, ranges calibrated on other photo crops
                     (the onnx backend's `precision: int8`)

Threads: the inference worker's CPU budget on this machine (pipeline/runtime/cpu.py) unless
--threads. Random weights (BN calibrated) unless --checkpoint-dir holds poco_<model>.pt. For
each model and batch: median ms per batch and per crop, speed against eager torch, the max abs
error of rotation-matrix entries against eager torch fp32 and whether it is within 3e-2, and
the seconds it took to build the variant. The last lines name the fastest variant within the
bound and the bare-model rate (crops per second at batch 1) the pipeline should reach.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ONNX_LEVELS = {"onnx-disable": "disable", "onnx-basic": "basic", "onnx-extended": "extended", "onnx": "all"}
ONNX_BUILT = {"onnx-fp16": "fp16", "onnx-int8-dynamic": "int8-dynamic", "onnx-int8": "int8"}
CPU_VARIANTS = ("torch", *ONNX_LEVELS, *ONNX_BUILT)
WHY = """why: onnxruntime's CPU execution provider runs the convolutions in a blocked NCHWc layout with
  fused Conv+BN+ReLU (ORT_ENABLE_ALL), so every conv is one pass over memory; eager torch runs conv,
  add and relu as separate oneDNN calls with layout reorders between them. fp16 loses on an x86 CPU
  without native fp16 arithmetic (casts around every op); dynamic int8 runs ConvInteger, which has
  no fused fast kernel, and requantises activations per call; static int8 (QDQ -> QLinearConv)
  uses u8s8 integer GEMM kernels and moves a quarter of the bytes, so it wins wherever its
  rotation error stays within the bound (measured above on held-out crops)."""


def _sync(device):
    import torch
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time(fn, iters: int, warmup: int, device: str = "cpu") -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def _row(model, variant, batch, times, err=None, build_s=None) -> dict:
    med = statistics.median(times)
    return {"model": model, "variant": variant, "batch": batch, "batch_ms": med * 1e3,
            "crop_ms": med * 1e3 / batch, "min_ms": min(times) * 1e3, "rot_err": err, "build_s": build_s}


def bench_torch(model_name, device, precision, batches, iters, warmup, channels_last, checkpoint, crops):
    """Eager torch rows and its flat outputs per batch (the reference)."""
    import numpy as np

    from pipeline.backends.base import BackendConfig
    from pipeline.backends.layout import OUTPUT_NAMES
    from pipeline.backends.torch import TorchBackend

    be = TorchBackend(BackendConfig(model=model_name, checkpoint=checkpoint, device=device, precision=precision,
                                    max_batch=max(batches), channels_last=channels_last, options={"seed": 0}))
    t0 = time.perf_counter()
    be.load()
    build_s = time.perf_counter() - t0
    img_all, info_all = crops
    rows, refs = [], {}
    for b in batches:
        img, info = img_all[:b], info_all[:b]
        rows.append(_row(model_name, "torch", b, _time(lambda: be.infer(img, info), iters, warmup, device),
                         0.0, build_s))
        out = be.infer(img, info)
        refs[b] = np.concatenate([out[k].reshape(b, -1) for k in OUTPUT_NAMES], axis=1)
    params = be.info()["params"]
    be.close()
    return rows, refs, params


def bench_onnx(model_name, variants, batches, iters, warmup, checkpoint, crops, refs, threads, cache_dir, work):
    """Rows of the onnx variants; a variant that cannot be built or run gives a row with its error."""
    from pipeline.backends import onnx_variants
    from pipeline.backends.base import BackendConfig
    from pipeline.backends.onnx import OnnxBackend

    # max_batch 8 (the default max_persons) or more: the pipeline's own cached export is reused
    be = OnnxBackend(BackendConfig(model=model_name, checkpoint=checkpoint, device="cpu", precision="fp32",
                                   max_batch=max(8, *batches), cache_dir=cache_dir, options={"seed": 0}))
    t0 = time.perf_counter()
    be.load()   # exports once per checkpoint (cached), like the pipeline's first start
    export_s = time.perf_counter() - t0
    fp32 = Path(be.info()["engine"])
    be.close()
    img_all, info_all = crops
    rows = []
    for variant in variants:
        path, level, build_s = fp32, ONNX_LEVELS.get(variant, "all"), export_s
        try:
            if variant in ONNX_BUILT:
                path = Path(work) / f"{model_name}-{variant}.onnx"
                t0 = time.perf_counter()
                onnx_variants.BUILDERS[ONNX_BUILT[variant]](fp32, path)
                build_s = time.perf_counter() - t0
            sess = onnx_variants.session(path, level, threads)
            for b in batches:
                img, info = img_all[:b], info_all[:b]

                def call():
                    return onnx_variants.run_batch(sess, img, info)

                err = onnx_variants.max_rotation_error(call(), refs[b])
                rows.append(_row(model_name, variant, b, _time(call, iters, warmup), err, build_s))
        except Exception as exc:  # a variant this onnxruntime cannot build/run is reported, not fatal
            rows.append({"model": model_name, "variant": variant, "error": f"{type(exc).__name__}: {exc}"[:160]})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "fp16"], help="eager torch precision")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batches", default="1,4")
    ap.add_argument("--models", default="cliff")
    ap.add_argument("--variants", default=None,
                    help=f"comma list of {', '.join(CPU_VARIANTS)} (default: all on cpu, torch on cuda)")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--threads", type=int, default=0,
                    help="CPU threads for torch and onnxruntime (0 = the inference worker's CPU budget)")
    ap.add_argument("--checkpoint-dir", default=None, help="directory with poco_cliff.pt / poco_pare.pt")
    ap.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[1] / "data"),
                    help="data dir whose engine cache the export goes to (the inference worker's: data/)")
    args = ap.parse_args(argv)
    if args.iters < 1:
        ap.error("--iters must be >= 1")
    try:
        batches = sorted({int(x) for x in args.batches.split(",") if x.strip()})
    except ValueError:
        ap.error(f"--batches must be comma-separated integers, got {args.batches!r}")
    if not batches or batches[0] < 1:
        ap.error("--batches must be positive")
    cuda = args.device.startswith("cuda")
    variants = [v.strip() for v in (args.variants or ("torch" if cuda else ",".join(CPU_VARIANTS))).split(",")
                if v.strip()]
    unknown = [v for v in variants if v not in CPU_VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; allowed: {', '.join(CPU_VARIANTS)}")
    if cuda and variants != ["torch"]:
        ap.error("the onnx variants are measured on the CPU; use --device cpu (or --variants torch)")
    from pipeline.runtime import cpu
    threads = args.threads or cpu.threads_for("model", cpu.machine_cores())
    import torch
    torch.set_num_threads(threads)
    if cuda and not torch.cuda.is_available():
        print("CUDA is not available on this machine; use --device cpu", file=sys.stderr)
        return 2
    from pipeline.backends.onnx_variants import ROTATION_TOLERANCE, calibration_crops
    dev_name = torch.cuda.get_device_name() if cuda else f"CPU, {cpu.machine_cores()} cores, {threads} threads"
    import os
    print(f"device: {args.device} ({dev_name}); torch {torch.__version__}; iters {args.iters}; "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'model':6} {'variant':18} {'batch':>5} {'ms/batch':>9} {'ms/crop':>8} {'x torch':>7} "
          f"{'rot err':>9} {'<=3e-2':>6} {'build s':>7}")
    crops = calibration_crops(max(batches), seed=2)
    best = []
    with tempfile.TemporaryDirectory(prefix="bench-model-") as work:
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            ckpt = None
            if args.checkpoint_dir:
                cand = Path(args.checkpoint_dir) / f"poco_{name}.pt"
                ckpt = str(cand) if cand.is_file() else None
            rows, refs, params = bench_torch(name, args.device, args.precision, batches, args.iters, args.warmup,
                                             args.channels_last, ckpt, crops)
            onnx_wanted = [v for v in variants if v != "torch"]
            if onnx_wanted:
                rows += bench_onnx(name, onnx_wanted, batches, args.iters, args.warmup, ckpt, crops, refs,
                                   threads, str(Path(args.data_dir) / "engines"), work)
            if "torch" not in variants:
                rows = [r for r in rows if r.get("variant") != "torch"]
            torch_crop = {r["batch"]: r["crop_ms"] for r in rows if r.get("variant") == "torch"}
            for r in rows:
                if "error" in r:
                    print(f"{name:6} {r['variant']:18} failed: {r['error']}")
                    continue
                ok = r["rot_err"] is not None and r["rot_err"] <= ROTATION_TOLERANCE
                ratio = torch_crop.get(r["batch"], float("nan")) / r["crop_ms"]
                print(f"{name:6} {r['variant']:18} {r['batch']:>5} {r['batch_ms']:>9.1f} {r['crop_ms']:>8.1f} "
                      f"{ratio:>6.2f}x {r['rot_err']:>9.1e} {'yes' if ok else 'NO':>6} {r['build_s']:>7.1f}")
            good = [r for r in rows if "error" not in r and r["batch"] == batches[0]
                    and r["rot_err"] <= ROTATION_TOLERANCE]
            if good:
                win = min(good, key=lambda r: r["crop_ms"])
                best.append(f"{name}: fastest within {ROTATION_TOLERANCE:g} at batch {batches[0]}: {win['variant']} "
                            f"{win['crop_ms']:.1f} ms/crop = {1000 / win['crop_ms']:.2f} crops/s "
                            f"({torch_crop.get(batches[0], float('nan')) / win['crop_ms']:.2f}x eager torch)")
            print(f"{name}: {params / 1e6:.2f} M parameters ({'checkpoint' if ckpt else 'random weights'})")
    for line in best:
        print(line)
    if not cuda and len(variants) > 1:
        print(WHY)
    return 0


if __name__ == "__main__":
    sys.exit(main())
