"""Per-backend POCO benchmark: per-crop latency and agreement with eager fp32, in one run.

    python tools/bench.py --variant cliff --out runs/bench --backends torch,torch-fp16,compile,trt,onnx \
        --batches 1,2,4,8

Every backend runs on the same calibrated random checkpoint (pipeline.testing.make_checkpoint)
and the same synthetic image-like crops. Latency is the wall time of one `infer()` call
(which ends with the device->host copy of all outputs, so it is synchronised), median of
--iters calls after warm-up. Agreement is the max abs difference against eager fp32 (TF32
off) on rotation matrices (pred_pose), betas (pred_shape), camera and var_pose.
Results go to <out>/bench_<variant>.json (rewritten after every backend, so a run cut short
keeps what it measured) and <out>/bench_<variant>.md.

Backends: torch (eager fp32), torch-fp16 (eager, fp16 backbone + channels-last, CUDA only),
compile, compile-fused (cudnn_fusion), cudagraph (cudagraph-sN: with N streams), trt, onnx. A backend that cannot run here is recorded with its error message.
--e2e then runs the whole pipeline in the same command (tools/bench_e2e.py: a generated 1080p
video as fast as it decodes, `fixed` detector boxes for exactly 1 and 5 persons, published fps
and capture->publish latency percentiles per --e2e-backends) and adds its table to the same
markdown and JSON.
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

# Run as a script, this file's folder is sys.path[0]; the tools import `pipeline` from the repo
# root, and keeping tools/ off the path means no tool's name can ever shadow a stdlib module.
_TOOLS = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _TOOLS]
sys.path.insert(0, str(_TOOLS.parent))

log = logging.getLogger("bench")

ALL_BACKENDS = ("torch", "torch-fp16", "compile", "compile-fused", "compile-frozen",
                "cudagraph", "cudagraph-s1", "cudagraph-s4", "cudagraph-nofuse", "trt", "onnx")


class EagerRunner:
    """Eager PyTorch with the same infer() contract as a backend (the bench's reference)."""

    def __init__(self, variant, checkpoint, device, precision, max_batch):
        self.variant, self.checkpoint, self.device = variant, checkpoint, device
        self.precision, self.max_batch = precision, max_batch
        self._info = {"name": "torch" if precision == "fp32" else "torch-fp16", "precision": precision}

    def load(self):
        import torch
        from pipeline.backends import network as net
        from pipeline.models import load_poco
        if self.precision == "fp16" and not str(self.device).startswith("cuda"):
            raise RuntimeError("torch-fp16 is measured on CUDA only (fp16 convolutions on CPU are slow)")
        t0 = time.perf_counter()
        model = load_poco(self.variant, self.checkpoint, self.device)
        if self.precision == "fp16":
            prepared = net.prepare_network(model, "fp16", channels_last=True, fold_bn=False)
            model, self._info["precision_detail"] = prepared.module, prepared.precision_detail
        self.module = net.FlatNetwork(model, channels_last=self.precision == "fp16").eval()
        self.dev = torch.device(self.device)
        self.host = net.HostOutputs(self.dev, self.max_batch)
        self._info["load_s"] = round(time.perf_counter() - t0, 3)

    def warmup(self):
        pass

    def infer(self, img, bbox):
        import torch
        from pipeline.backends import network as net
        with torch.inference_mode():
            img = net.as_input(img, self.dev)
            bbox = net.as_input(bbox, self.dev)
            return self.host.fetch(self.module(img, bbox))

    def info(self):
        return dict(self._info)

    def close(self):
        self.module = None


def make_backend(name, args, checkpoint, device, max_batch):
    from pipeline.backends.base import BackendConfig
    if name in ("torch", "torch-fp16"):
        return EagerRunner(args.variant, checkpoint, device, "fp16" if name == "torch-fp16" else "fp32",
                           max_batch)
    cfg = BackendConfig(model=args.variant, checkpoint=str(checkpoint), device=device,
                        precision="fp32" if name == "onnx" else "fp16", max_batch=max_batch,
                        cache_dir=str(cache_root(args)), options={})
    backend, variant_options = backend_variant(name)
    if backend == "compile":
        from pipeline.backends.compile import CompileBackend
        cfg.options.update(batch_sizes=args.compile_sizes, allow_cpu=args.compile_cpu, **variant_options)
        if args.compile_dynamic != "auto":
            cfg.options["dynamic"] = args.compile_dynamic == "true"
        return CompileBackend(cfg)
    if backend == "cudagraph":
        from pipeline.backends.cudagraph import CudaGraphBackend
        cfg.options.update(batch_sizes=args.compile_sizes, **variant_options)
        return CudaGraphBackend(cfg)
    if name == "trt":
        from pipeline.backends.trt import TrtBackend
        return TrtBackend(cfg)
    if name == "onnx":
        from pipeline.backends.onnx import OnnxBackend
        return OnnxBackend(cfg)
    raise ValueError(f"unknown backend {name!r}; choose from {', '.join(ALL_BACKENDS)}")


def backend_variant(name: str) -> tuple[str, dict]:
    """Row name -> (backend, options), as tools/bench_e2e.py names its rows (one mapping for both
    benchmarks; loaded by path because tools/ is not a package and must not be on sys.path)."""
    return _bench_e2e().backend_variant(name)


@functools.lru_cache(maxsize=1)
def _bench_e2e():
    import importlib.util
    spec = importlib.util.spec_from_file_location("bench_e2e", _TOOLS / "bench_e2e.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cache_root(args) -> Path:
    return Path(args.cache or os.environ.get("POSEPIPE_CACHE_DIR") or Path(args.out) / "cache")


def make_inputs(batch, seed, device):
    import numpy as np
    import torch
    from pipeline.models.preprocess import normalise
    from pipeline.testing.checkpoints import synthetic_images
    img = torch.from_numpy(normalise(synthetic_images(batch, seed=seed)))
    rng = np.random.default_rng(seed)
    bbox = torch.from_numpy((rng.standard_normal((batch, 3)) * 0.3).astype(np.float32))
    return img.to(device), bbox.to(device)


def time_calls(backend, img, bbox, iters, warmup):
    for _ in range(warmup):
        backend.infer(img, bbox)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        backend.infer(img, bbox)  # ends in a synchronous D2H copy
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return {"median_ms": statistics.median(times), "p90_ms": times[int(0.9 * (len(times) - 1))],
            "min_ms": times[0], "iters": iters}


def agreement(out, ref):
    import numpy as np
    res = {}
    for k, name in (("pred_pose", "rotmat"), ("pred_shape", "betas"), ("pred_cam", "cam"),
                    ("var_pose", "var_pose")):
        d = np.abs(out[k].astype(np.float64) - ref[k].astype(np.float64))
        res[f"max_abs_{name}"] = float(d.max()) if np.isfinite(d).all() else float("nan")
    return res


def environment(device):
    import torch
    env = {"python": platform.python_version(), "torch": torch.__version__, "machine": platform.node(),
           "cpu_count": os.cpu_count(), "device": device}
    if device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(0)
        env["cuda"] = torch.version.cuda
    for mod in ("onnxruntime", "tensorrt", "torch_tensorrt"):
        try:
            env[mod] = __import__(mod).__version__
        except Exception as exc:
            env[mod] = f"unavailable: {type(exc).__name__}: {exc}"
    return env


def write_reports(out_dir, variant, result):
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"bench_{variant}.json").write_text(json.dumps(result, indent=2))
    (out_dir / f"bench_{variant}.md").write_text(markdown(result))


def markdown(result):
    env = result["environment"]
    where = env.get("gpu", f"CPU ({env['cpu_count']} cores)")
    lines = [f"# POCO-{result['variant'].upper()} per-crop benchmark on {where}", "",
             f"torch {env['torch']}, checkpoint: calibrated random ({result['checkpoint']}); "
             f"latency = one infer() call incl. output copy to host, median of "
             f"{result['iters']} calls.", "",
             "| backend | batch | ms/call (median) | ms/crop | speed-up vs eager fp32 | "
             "max abs rotmat | max abs betas | build+warm-up s |",
             "|---|---|---|---|---|---|---|---|"]
    base = {r["batch"]: r["median_ms"] for r in result["backends"].get("torch", {}).get("timings", [])}
    for name, b in result["backends"].items():
        if "error" in b:
            lines.append(f"| {name} | – | unavailable: {b['error'].splitlines()[0][:160]} | | | | | |")
            continue
        agr = b.get("agreement", {})
        for r in b["timings"]:
            ratio = f"{base[r['batch']] / r['median_ms']:.1f}×" if r["batch"] in base else "–"
            lines.append(f"| {name} | {r['batch']} | {r['median_ms']:.2f} | {r['median_ms'] / r['batch']:.2f} "
                         f"| {ratio} | {agr.get('max_abs_rotmat', float('nan')):.2e} "
                         f"| {agr.get('max_abs_betas', float('nan')):.2e} | {b.get('setup_s', 0):.1f} |")
    return "\n".join(lines) + "\n"


def run(args):
    import torch
    out_dir = Path(args.out)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    # The reference is real fp32: no TF32 in convolutions or matmuls.
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    if args.threads:
        torch.set_num_threads(args.threads)
    batches = sorted({int(b) for b in args.batches.split(",")})
    max_batch = max(batches)
    names = [n.strip() for n in args.backends.split(",") if n.strip()]
    unknown = [n for n in names if n not in ALL_BACKENDS and backend_variant(n)[0] == n]
    if unknown:
        raise SystemExit(f"unknown backends {unknown}; choose from {', '.join(ALL_BACKENDS)}")
    if "torch" not in names:
        names.insert(0, "torch")  # ratios and agreement need eager fp32 from the same run

    from pipeline.testing import make_checkpoint
    ckpt = cache_root(args) / f"poco_{args.variant}_random_calibrated.pt"
    if not ckpt.exists():
        t0 = time.perf_counter()
        make_checkpoint(args.variant, ckpt, calibrate_bn=True, seed=args.seed)
        log.info("calibrated random checkpoint written in %.1f s", time.perf_counter() - t0)
    inputs = {b: make_inputs(b, args.seed + b, device) for b in batches}
    agree_batch = max_batch
    result = {"variant": args.variant, "checkpoint": ckpt.name, "iters": args.iters,
              "batches": batches, "environment": environment(device), "backends": {}}
    reference = None
    for name in names:
        entry = {}
        result["backends"][name] = entry
        t0 = time.perf_counter()
        backend = None
        try:
            backend = make_backend(name, args, ckpt, device, max_batch)
            backend.load()
            backend.warmup()
            entry["setup_s"] = round(time.perf_counter() - t0, 2)
            entry["info"] = _jsonable(backend.info())
            out = backend.infer(*inputs[agree_batch])
            if name == "torch":
                reference = out
            entry["agreement"] = agreement(out, reference) if reference is not None else {}
            entry["timings"] = []
            for b in batches:
                t = time_calls(backend, *inputs[b], iters=args.iters, warmup=args.warmup)
                t["batch"] = b
                entry["timings"].append(t)
                log.info("%-10s batch %d: %.2f ms/call (%.2f ms/crop)", name, b, t["median_ms"],
                         t["median_ms"] / b)
        except Exception as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"
            entry["traceback"] = traceback.format_exc(limit=6)
            log.warning("%s: %s", name, entry["error"])
        finally:
            if backend is not None:
                backend.close()
        write_reports(out_dir, args.variant, result)
    print(markdown(result))
    return result


def _jsonable(d):
    return json.loads(json.dumps(d, default=str))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", choices=("cliff", "pare"), default="cliff")
    p.add_argument("--out", default="runs/bench")
    p.add_argument("--backends", default="torch,torch-fp16,cudagraph,compile,trt,onnx",
                   help=f"comma list of {', '.join(ALL_BACKENDS)}")
    p.add_argument("--batches", default="1,2,4,8")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", default=None,
                   help="checkpoint/compile/engine cache (default $POSEPIPE_CACHE_DIR or OUT/cache)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--compile-sizes", default="all", help="compile and cudagraph: all | pow2 | 1,2,4,8")
    p.add_argument("--compile-dynamic", choices=("auto", "true", "false"), default="auto")
    p.add_argument("--compile-cpu", action="store_true", help="allow the compile backend on CPU")
    p.add_argument("--e2e", action="store_true",
                   help="end-to-end pipeline throughput/latency on a generated 1080p video")
    p.add_argument("--e2e-backends", default="torch,cudagraph,compile",
                   help="backends for --e2e (torch, torch-fp16, compile, compile-fused, cudagraph, cudagraph-sN, trt, onnx)")
    p.add_argument("--e2e-persons", default="1,5")
    p.add_argument("--e2e-seconds", type=float, default=15.0, help="measured seconds per --e2e row")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    result = run(args)
    if args.e2e:
        run_e2e(args, result)


def run_e2e(args, result) -> None:
    """The whole pipeline per backend (tools/bench_e2e.py, its own processes), appended to this
    run's JSON and markdown."""
    import subprocess
    out_dir = Path(args.out)
    e2e_dir = out_dir / "e2e"
    device = "cuda" if args.device == "auto" and result["environment"].get("gpu") else args.device
    device = "cpu" if device == "auto" else device
    cmd = [sys.executable, str(_TOOLS / "bench_e2e.py"), "--out", str(e2e_dir), "--backends", args.e2e_backends,
           "--persons", args.e2e_persons, "--seconds", str(args.e2e_seconds), "--device", device,
           "--model", f"poco-{args.variant}"]
    cache = cache_root(args)
    if cache.name == "engines":  # the workers keep compile caches in <data-dir>/engines: share them
        cmd += ["--data-dir", str(cache.parent)]
    if device == "cpu":
        cmd.append("--realtime")  # an unpaced decoder would take the cores the model needs
    log.info("end-to-end: %s", " ".join(cmd))
    proc = subprocess.run(cmd)
    e2e_json = e2e_dir / "e2e.json"
    if proc.returncode != 0 or not e2e_json.exists():
        result["e2e"] = {"error": f"bench_e2e exited {proc.returncode}; see its output above"}
    else:
        result["e2e"] = json.loads(e2e_json.read_text())
    write_reports(out_dir, args.variant, result)
    md = out_dir / f"bench_{args.variant}.md"
    if (e2e_dir / "e2e.md").exists():
        md.write_text(md.read_text() + "\n" + (e2e_dir / "e2e.md").read_text())
    print(md.read_text())


if __name__ == "__main__":
    main()
