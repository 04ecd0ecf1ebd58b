"""Several streams in one pipeline (issue 20): per-stream FPS and capture->publish latency for N streams.

    python tools/bench_streams.py --streams 1,2 --size 320x240 --device cpu --backend onnx
    python tools/bench_streams.py --streams 1,4,8 --backend cudagraph --device cuda --detectors fixed,auto

For each N (`--streams`) and detector (`--detectors`: `fixed` = one fixed box per frame, whose
cost is ~0; `center`; `auto` = the real default detector, BlazePose or YOLO when its weights
exist) it starts one pipeline (`pipeline start --detach`) with N generated sources (the built-in
`sample`: real people from the photos that ship inside ultralytics, rendered at `--size`, paced
at `--fps`, 1080p30 by default), waits until every stream publishes, then reads the `published`
ring with policy `next` for `--seconds` and reports, per stream and in total:

- published FPS (records of that stream / elapsed seconds),
- capture->publish latency p50/p99 (the stages' own monotonic stamps),
- the inference worker's batches that held persons of several streams (cross-stream batching),
- CPU share (the workers' CPU % summed, over the machine's cores) and the GPU's utilisation
  (NVML, where the inference worker is on a GPU).

Ratios (each row's per-stream FPS against the 1-stream row of the same detector, measured in
the same run) are printed at the end; results go to <out>/streams.json and <out>/streams.md,
rewritten after every row so a cut-short run keeps what it measured.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402


def _bench_e2e():
    """tools/bench_e2e.py, loaded by path (this folder is kept off sys.path: see above)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_e2e", Path(__file__).with_name("bench_e2e.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# One way to drive `pipeline` for both benches: a free port, the CLI, its status.
free_port, cli, status, stop, write_json = (getattr(_bench_e2e(), name)
                                            for name in ("free_port", "cli", "status", "stop", "write_json"))

FIXED_BOX = [[0.38, 0.15, 0.62, 0.95]]


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--size takes WIDTHxHEIGHT, e.g. 1920x1080; got {text!r}") from None
    if not (16 <= w <= 7680 and 16 <= h <= 4320):
        raise SystemExit(f"--size {text}: width and height must be within 16x16..7680x4320")
    return w, h


def detection_params(detector: str) -> dict:
    if detector == "fixed":
        return {"kind": "fixed", "boxes": FIXED_BOX}
    if detector in ("center", "auto", "blazepose", "yolo", "mediapipe"):
        return {"kind": detector}
    raise SystemExit(f"--detectors takes fixed, center, auto, blazepose, yolo, mediapipe; got {detector!r}")


def write_config(path: Path, args, n: int, detector: str, port: int) -> Path:
    import yaml

    w, h = args.size
    sources = [{"name": f"cam{i}", "spec": "sample", "options": {"width": w, "height": h, "fps": args.fps}}
               for i in range(n)]
    inference = {"model": args.model, "backend": args.backend, "device": args.device, "smpl": "off"}
    if args.backend in ("torch", "onnx") or args.device == "cpu":
        inference["precision"] = "fp32"
    if args.model.startswith("poco") and args.random_weights_fast:
        inference["backend_options"] = {"calibrate_bn": False, "seed": 0}
    cfg = {
        "source": {"spec": "sample", "options": {"width": w, "height": h, "fps": args.fps}},
        "rings": {"frames": {"slots": args.frame_slots, "max_height": h, "max_width": w},
                  "detections": {"slots": max(16, 4 * n)}, "poses": {"slots": max(16, 4 * n)},
                  "published": {"slots": max(64, 16 * n)}, "max_persons": args.persons},
        "workers": {
            "detection": {"module": "workers.detection", "start_timeout": 900, "params": detection_params(detector)},
            "inference": {"module": "workers.inference", "start_timeout": 900, "health_timeout": 30,
                          "params": inference},
            "metrics": {"module": "workers.metrics", "params": {"prometheus": False}},
        },
        "sinks": {"native": {"endpoint": f"tcp://127.0.0.1:{port}"}},
        "data_dir": str(args.data_dir),
    }
    if n > 1:
        cfg["sources"] = sources
    path.write_text(yaml.safe_dump(cfg))
    return path


def wait_serving(env, timeout: float) -> dict:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            st = status(env)
        except (RuntimeError, ValueError, subprocess.TimeoutExpired):  # the supervisor is still starting
            time.sleep(1.0)
            continue
        pub = {w["name"]: w for w in st.get("workers", [])}.get("publisher", {})
        per = (pub.get("extras") or {}).get("streams")
        names = st.get("streams") or ["main"]
        if pub.get("frames_out", 0) > 0 and (len(names) == 1 or (
                isinstance(per, dict) and all((per.get(n) or {}).get("published", 0) > 0 for n in names))):
            return st
        time.sleep(1.0)
    raise RuntimeError(f"not every stream published within {timeout:.0f} s")


def measure(run_id: str, names: list[str], seconds: float, settle: float) -> dict:
    """Per stream: fps and capture->publish p50/p99 over `seconds` of the published ring."""
    from pipeline.runtime.records import STAGE_INDEX
    from pipeline.runtime.ring import Ring

    ring = Ring.attach(f"posepipe-{run_id}-published")
    cap, pub = STAGE_INDEX["capture"], STAGE_INDEX["publish"]
    try:
        reader = ring.reader(policy="next")
        end = time.monotonic() + settle
        while time.monotonic() < end:
            reader.read(timeout=0.2)
        lat = {i: [] for i in range(len(names))}
        persons = {i: [] for i in range(len(names))}
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            item = reader.read(timeout=0.5)
            if item is None:
                continue
            rec = item.record
            s = int(rec["stream"])
            stamps = rec["stamps_ns"]
            if s in lat and stamps[cap] > 0 and stamps[pub] > 0:
                lat[s].append((int(stamps[pub]) - int(stamps[cap])) / 1e6)
                persons[s].append(int(rec["count"]))
        elapsed = time.monotonic() - t0
        lost = reader.skipped + reader.overruns
    finally:
        ring.close()
    out = {"seconds": elapsed, "lost_by_reader": int(lost), "streams": {}}
    every = []
    for i, name in enumerate(names):
        x = np.asarray(lat[i], np.float64)
        every += lat[i]
        out["streams"][name] = {"frames": int(x.size), "fps": x.size / elapsed,
                                "p50_ms": float(np.percentile(x, 50)) if x.size else float("nan"),
                                "p99_ms": float(np.percentile(x, 99)) if x.size else float("nan"),
                                "persons_mean": float(np.mean(persons[i])) if persons[i] else 0.0}
    x = np.asarray(every, np.float64)
    out["total"] = {"frames": int(x.size), "fps": x.size / elapsed,
                    "p50_ms": float(np.percentile(x, 50)) if x.size else float("nan"),
                    "p99_ms": float(np.percentile(x, 99)) if x.size else float("nan")}
    return out


def run_one(args, n: int, detector: str, env) -> dict:
    cfg = write_config(args.out / f"cfg_{detector}_{n}streams.yaml", args, n, detector, free_port())
    t0 = time.monotonic()
    cli("start", "--detach", "--config", cfg, "--no-viewer", env=env)
    try:
        st = wait_serving(env, args.ready_timeout)
        ready_s = time.monotonic() - t0
        names = st.get("streams") or ["main"]
        before = {w["name"]: w for w in st["workers"]}
        result = measure(st["run_id"], names, args.seconds, args.settle)
        after = {w["name"]: w for w in status(env)["workers"]}
        cores = os.cpu_count() or 1
        cpu = {n_: w.get("cpu_percent") or 0.0 for n_, w in after.items()}
        inf = after.get("inference", {}).get("extras", {})
        inf0 = before.get("inference", {}).get("extras", {})
        result.update(
            n=n, detector=detector, ready_s=ready_s, cpu_percent=cpu,
            cpu_share=sum(cpu.values()) / (100.0 * cores),
            gpu_util_percent=inf.get("gpu_util_percent"), gpu_proc_util_percent=inf.get("gpu_proc_util_percent"),
            multi_stream_calls=inf.get("multi_stream_calls", 0) - inf0.get("multi_stream_calls", 0),
            batches=inf.get("batches_submitted", 0) - inf0.get("batches_submitted", 0),
            inference_info={k: v for k, v in (after.get("inference", {}).get("info") or {}).items()
                            if isinstance(v, (str, int, float, bool, type(None)))})
        return result
    finally:
        stop(env)


def report(out: Path, results: list, meta: dict) -> str:
    write_json(out / "streams.json", results, meta)
    base = {}
    for r in results:
        base.setdefault(r["detector"], r)  # the first row of a detector (1 stream when asked) is the reference
    intro = (f"N `sample` sources at {meta['size']} {meta['fps']:g} FPS each, one pipeline; model {meta['model']} "
             f"{meta['backend']}/{meta['device_arg']}; {meta['seconds']:g} s measured per row after warm-up. "
             f"Per-stream FPS × is against the first row of the same detector, same run.")
    header = ("| detector | streams | stream | FPS | × per stream | capture→publish p50 ms | p99 ms | persons | "
              "cross-stream batches | CPU share | GPU util % |")
    lines = [f"# Streams on {meta['device']} ({meta['cores']} cores)", "", intro, "", header,
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        b = base[r["detector"]]
        b_fps = np.mean([s["fps"] for s in b["streams"].values()]) or float("nan")
        gpu = r.get("gpu_util_percent")
        for name, s in list(r["streams"].items()) + [("total", r["total"])]:
            ratio = f"{s['fps'] / b_fps:.2f}×" if name != "total" else ""
            lines.append(f"| {r['detector']} | {r['n']} | {name} | {s['fps']:.1f} | {ratio} | {s['p50_ms']:.1f} | "
                         f"{s['p99_ms']:.1f} | {s.get('persons_mean', float('nan')):.2f} | "
                         f"{r['multi_stream_calls']}/{r['batches']} | {r['cpu_share']:.0%} | "
                         f"{'' if gpu is None else f'{gpu:.0f}'} |")
    text = "\n".join(lines) + "\n"
    (out / "streams.md").write_text(text)
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/streams"))
    ap.add_argument("--streams", default="1,2", help="comma list of stream counts (max 16)")
    ap.add_argument("--size", type=parse_size, default=(1920, 1080), help="WIDTHxHEIGHT of every stream")
    ap.add_argument("--fps", type=float, default=30.0, help="frame rate of every stream")
    ap.add_argument("--detectors", default="fixed,auto",
                    help="comma list: fixed (one fixed box, ~0 cost), center, auto (the real default), blazepose, yolo")
    ap.add_argument("--model", default="poco-cliff", help="poco-cliff, poco-pare, landmarks-ik, auto")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--persons", type=int, default=4, help="rings.max_persons")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--settle", type=float, default=3.0, help="seconds read and thrown away before measuring")
    ap.add_argument("--frame-slots", type=int, default=8)
    ap.add_argument("--ready-timeout", type=float, default=900.0)
    ap.add_argument("--data-dir", type=Path, default=Path("/tmp/posepipe-bench-data"))
    ap.add_argument("--random-weights-fast", action=argparse.BooleanOptionalAction, default=True,
                    help="POCO without a checkpoint: skip the BatchNorm calibration (speed is the same)")
    args = ap.parse_args()
    counts = [int(x) for x in args.streams.split(",")]
    if any(not 1 <= c <= 16 for c in counts):
        raise SystemExit("--streams: each count must be in 1..16")
    detectors = args.detectors.split(",")
    for d in detectors:
        detection_params(d)
    args.out.mkdir(parents=True, exist_ok=True)
    args.data_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, POSEPIPE_VIEWER="0", PYTHONPATH=os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    env.setdefault("XDG_RUNTIME_DIR", "/tmp")
    device = "cpu"
    try:
        import torch
        if args.device != "cpu" and torch.cuda.is_available():
            device = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    meta = {"device": device, "cores": os.cpu_count(), "size": f"{args.size[0]}x{args.size[1]}", "fps": args.fps,
            "model": args.model, "backend": args.backend, "device_arg": args.device, "seconds": args.seconds,
            "load_average": os.getloadavg()}
    results = []
    for detector in detectors:
        for n in counts:
            print(f"== {detector} detector, {n} stream(s)", flush=True)
            try:
                r = run_one(args, n, detector, env)
            except (RuntimeError, OSError, KeyError, subprocess.TimeoutExpired) as exc:  # one bad row keeps the rest
                print(f"   failed: {exc}", flush=True)
                continue
            results.append(r)
            print(json.dumps({k: v for k, v in r.items() if k != "inference_info"}), flush=True)
            report(args.out, results, meta)
    if results:
        print(report(args.out, results, meta), flush=True)
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
