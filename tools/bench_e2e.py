"""End-to-end pipeline benchmark: throughput and capture->publish latency of the real pipeline.

    python tools/bench_e2e.py --out runs/e2e --backends torch,cudagraph,compile --persons 1,5 --seconds 20

For each (backend, persons) it starts the whole pipeline (`pipeline start --detach`) on a
generated 1080p video played as fast as possible (`realtime: false`, looping), with the
`fixed` detector placing exactly N person boxes (so the person count is controlled; the
detector's own cost is then ~0, which the table states), POCO on the chosen backend, the
publisher and the metrics worker. Once inference is ready and frames flow it reads the
`published` ring with policy `next` (every published frame, header fields only) for
--seconds and reports:

- published fps = frames published / elapsed seconds,
- capture->publish latency p50/p99 (monotonic stamps written by the stages themselves),
- per-stage p50 (capture wait, detection, queue before inference, inference, publish),
- frames captured per second (the source's decode rate) and the workers' CPU %,

then stops the pipeline. Ratios are against the first backend in --backends measured in the
same run (eager `torch` fp32 where it ran). Results: <out>/e2e.json and <out>/e2e.md, both
rewritten after every configuration so a cut-short run keeps what it measured.
`--profile-dir DIR` additionally runs `pipeline profile` for the first configuration.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

# Box layouts (fractions of the frame) for 1..5 people standing side by side.
BOXES = {
    1: [[0.38, 0.15, 0.62, 0.95]],
    5: [[0.02, 0.20, 0.18, 0.90], [0.21, 0.15, 0.39, 0.95], [0.42, 0.10, 0.58, 0.95],
        [0.61, 0.15, 0.79, 0.95], [0.82, 0.20, 0.98, 0.90]],
}


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_video(path: Path, width=1920, height=1080, frames=120, fps=30.0, codec="mp4v") -> Path:
    """A moving synthetic scene (figures over a gradient) so the decoder does real work."""
    import cv2
    if path.exists():
        return path
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, (width, height))
    if not writer.isOpened():
        raise SystemExit(f"cannot write {path} with codec {codec}")
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([(xx * 255 // width), (yy * 255 // height), ((xx + yy) * 127 // (width + height))], -1)
    base = base.astype(np.uint8)
    for i in range(frames):
        img = base.copy()
        for k in range(5):
            cx = int((0.1 + 0.2 * k) * width + 40 * np.sin(i / 7 + k))
            cv2.ellipse(img, (cx, int(0.3 * height)), (50, 60), 0, 0, 360, (200, 180, 160), -1)
            cv2.rectangle(img, (cx - 90, int(0.38 * height)), (cx + 90, int(0.9 * height)), (40 + 40 * k, 90, 160), -1)
        writer.write(img)
    writer.release()
    return path


def decode_rate(path: Path, seconds=2.0) -> float:
    import cv2
    cap = cv2.VideoCapture(str(path))
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        ok, _ = cap.read()
        if not ok:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            continue
        n += 1
    cap.release()
    return n / (time.perf_counter() - t0)


def backend_variant(name: str) -> tuple[str, dict]:
    """A benchmark row name -> (inference backend, its options); tools/bench.py uses it too.
    compile-fused: conv+ReLU(+add) as single cuDNN kernels; compile-frozen: Inductor freezing;
    cudagraph-sN: cudagraph with N streams; cudagraph-nofuse: without the cuDNN fusion. Other
    names are backends as they are (torch-fp16 is the torch backend in fp16: see write_config)."""
    named = {"compile-fused": ("compile", {"cudnn_fusion": True}),
             "compile-frozen": ("compile", {"freezing": True}),
             "cudagraph-nofuse": ("cudagraph", {"cudnn_fusion": False})}
    if name in named:
        backend, options = named[name]
        return backend, dict(options)
    streams = re.fullmatch(r"cudagraph-s(\d+)", name)
    if streams:
        return "cudagraph", {"streams": int(streams.group(1))}
    return name, {}


def write_config(path: Path, video: Path, backend: str, persons: int, device: str, model: str,
                 data_dir: Path, port: int, realtime: bool = False) -> Path:
    import yaml
    precision = "fp32" if backend == "torch" else "fp16"
    backend, options = backend_variant(backend)
    if backend == "torch-fp16":
        backend, precision = "torch", "fp16"
    cfg = {
        # live mode (newest frame wins) also unpaced: tools/bench_progress.py measures lossless runs
        "source": {"spec": str(video), "options": {"realtime": realtime}, "at_end": "loop", "every_frame": False},
        "rings": {"frames": {"slots": 8, "max_height": 1080, "max_width": 1920}, "max_persons": persons},
        "workers": {
            "detection": {"module": "workers.detection", "params": {"kind": "fixed", "boxes": BOXES[persons]}},
            "inference": {"module": "workers.inference", "start_timeout": 900, "health_timeout": 30,
                          "params": {"model": model, "backend": backend, "device": device,
                                     "precision": precision, "smpl": "off", "data_dir": str(data_dir),
                                     "backend_options": options}},
            "metrics": {"module": "workers.metrics", "params": {"prometheus": False}},
        },
        "sinks": {"native": {"endpoint": f"tcp://127.0.0.1:{port}"}},
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def cli(*args, env=None, timeout=900, check=True):
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=REPO)
    if check and proc.returncode != 0:
        raise RuntimeError(f"pipeline {' '.join(map(str, args))} failed ({proc.returncode}): "
                           f"{proc.stderr.strip()[-2000:]}")
    return proc


def status(env) -> dict:
    return json.loads(cli("status", "--json", env=env).stdout)


def wait_ready(env, timeout: float) -> dict:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            st = status(env)
        except Exception:  # noqa: BLE001 - supervisor still starting
            time.sleep(1.0)
            continue
        workers = {w["name"]: w for w in st.get("workers", [])}
        inf = workers.get("inference", {})
        if inf.get("state") in ("ready", "running") and inf.get("frames_out", 0) > 0:
            return st
        time.sleep(1.0)
    raise RuntimeError(f"pipeline not serving after {timeout:.0f} s")


def measure(run_id: str, seconds: float, settle: float = 3.0) -> dict:
    from pipeline.runtime.records import STAGE_INDEX
    from pipeline.runtime.ring import Ring

    ring = Ring.attach(f"posepipe-{run_id}-published")
    try:
        reader = ring.reader(policy="next")
        t_end_settle = time.monotonic() + settle
        while time.monotonic() < t_end_settle:
            reader.read(timeout=0.2)
        rows, ids = [], []
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            item = reader.read(timeout=0.5)
            if item is None:
                continue
            rec = item.record
            rows.append(np.array(rec["stamps_ns"], dtype=np.int64))
            ids.append((int(rec["frame_id"]), int(rec["count"])))
        elapsed = time.monotonic() - t0
        lost = reader.skipped + reader.overruns
    finally:
        ring.close()
    if not rows:
        raise RuntimeError("no frame was published during the measurement")
    st = np.stack(rows).astype(np.float64) / 1e6
    s = STAGE_INDEX

    def span(a, b):
        d = st[:, s[b]] - st[:, s[a]]
        return d[(st[:, s[a]] > 0) & (st[:, s[b]] > 0)]

    e2e = span("capture", "publish")
    frame_ids = [i for i, _ in ids]
    return {
        "frames": len(rows), "seconds": elapsed, "fps": len(rows) / elapsed, "lost_by_reader": int(lost),
        "captured_fps": (frame_ids[-1] - frame_ids[0] + 1) / elapsed if len(frame_ids) > 1 else 0.0,
        "persons_mean": float(np.mean([c for _, c in ids])),
        "e2e_p50_ms": float(np.percentile(e2e, 50)), "e2e_p99_ms": float(np.percentile(e2e, 99)),
        "stage_p50_ms": {
            "capture_write": float(np.median(span("capture", "frame_written"))),
            "queue_detect": float(np.median(span("frame_written", "detect_start"))),
            "detect": float(np.median(span("detect_start", "detect_end"))),
            "queue_infer": float(np.median(span("detect_end", "infer_start"))),
            "infer": float(np.median(span("infer_start", "infer_end"))),
            "publish": float(np.median(span("infer_end", "publish"))),
        },
        "infer_p99_ms": float(np.percentile(span("infer_start", "infer_end"), 99)),
    }


def run_one(args, backend, persons, video, env, port, profile_dir=None) -> dict:
    cfg = write_config(args.out / f"cfg_{backend}_{persons}p.yaml", video, backend, persons, args.device,
                       args.model, args.data_dir, port, realtime=args.realtime)
    t0 = time.monotonic()
    cli("start", "--detach", "--config", cfg, "--no-viewer", env=env)
    try:
        st = wait_ready(env, args.ready_timeout)
        ready_s = time.monotonic() - t0
        prof = None
        if profile_dir is not None:
            prof = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "profile", "--seconds",
                                     str(int(args.seconds)), "--out", str(profile_dir)], env=env, cwd=REPO,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        result = measure(st["run_id"], args.seconds)
        workers = {w["name"]: w for w in status(env).get("workers", [])}
        result["cpu_percent"] = {n: w.get("cpu_percent") for n, w in workers.items()}
        result["worker_p50_ms"] = {n: w.get("p50_ms") for n, w in workers.items()}
        result["inference_info"] = {k: v for k, v in (workers.get("inference", {}).get("info") or {}).items()
                                    if isinstance(v, (str, int, float, bool, type(None)))}
        if prof is not None:
            out, _ = prof.communicate(timeout=args.seconds + 120)
            (profile_dir / "profile_stdout.txt").write_text(out)
            result["profile_summary"] = out[-3000:]
        result.update(backend=backend, persons=persons, ready_s=ready_s)
        return result
    finally:
        cli("stop", env=env, check=False, timeout=120)


def write_report(out: Path, results: list, meta: dict) -> None:
    (out / "e2e.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    base = {}
    for r in results:  # eager fp32 ("torch") is the reference where it ran, else the first row
        if r["backend"] == "torch" or r["persons"] not in base:
            base[r["persons"]] = r
    lines = [f"# End-to-end pipeline on {meta['device_name']}", "",
             f"{meta['video']}; fixed detector (N boxes, detection cost ~0); model {meta['model']}; "
             f"source decode alone: {meta['decode_fps']:.0f} fps; measured {meta['seconds']:.0f} s per row "
             f"after warm-up; ratios vs the first backend with the same persons, same run.", "",
             "| backend | persons | published fps | × | capture→publish p50 ms | p99 ms | infer p50 ms | "
             "queue→infer p50 ms | capture fps | ready s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        b = base[r["persons"]]
        lines.append(f"| {r['backend']} | {r['persons']} | {r['fps']:.1f} | {r['fps'] / b['fps']:.1f}× | "
                     f"{r['e2e_p50_ms']:.2f} | {r['e2e_p99_ms']:.2f} | {r['stage_p50_ms']['infer']:.2f} | "
                     f"{r['stage_p50_ms']['queue_infer']:.2f} | {r['captured_fps']:.0f} | {r['ready_s']:.0f} |")
    (out / "e2e.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/e2e"))
    ap.add_argument("--backends", default="torch,cudagraph,compile")
    ap.add_argument("--persons", default="1,5")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--model", default="poco-cliff")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--video", type=Path, help="1080p video (default: generated)")
    ap.add_argument("--codec", default="mp4v", help="fourcc of the generated video")
    ap.add_argument("--realtime", action="store_true",
                    help="play the video at its native 30 fps instead of as fast as possible (on a small "
                         "CPU-only machine an unpaced decoder takes the cores the model needs)")
    ap.add_argument("--data-dir", type=Path, default=Path("/tmp/posepipe-bench-data"),
                    help="data dir of the inference worker (compile cache under <data-dir>/engines)")
    ap.add_argument("--ready-timeout", type=float, default=900.0)
    ap.add_argument("--profile-dir", type=Path, help="also run `pipeline profile` on the first configuration")
    ap.add_argument("--profile-backend", help="profile the first configuration of this backend instead")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    args.data_dir.mkdir(parents=True, exist_ok=True)
    persons = [int(p) for p in args.persons.split(",")]
    for p in persons:
        if p not in BOXES:
            raise SystemExit(f"--persons takes {sorted(BOXES)}, got {p}")
    video = args.video or make_video(args.out.parent / f"bench_1080p_{args.codec}.avi" if args.codec == "MJPG"
                                     else args.out.parent / f"bench_1080p_{args.codec}.mp4", codec=args.codec)
    env = dict(os.environ, POSEPIPE_VIEWER="0", PYTHONPATH=os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    env.setdefault("XDG_RUNTIME_DIR", "/tmp")
    device_name = "cpu"
    try:
        import torch
        if args.device.startswith("cuda") and torch.cuda.is_available():
            device_name = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    meta = {"device_name": device_name, "video": f"{video.name} (1920x1080)", "model": args.model,
            "decode_fps": decode_rate(video), "seconds": args.seconds}
    print(f"decode alone: {meta['decode_fps']:.0f} fps", flush=True)
    results = []
    backends = args.backends.split(",")
    if args.profile_backend and args.profile_backend not in backends:
        raise SystemExit(f"--profile-backend {args.profile_backend!r} is not in --backends {args.backends!r}")
    to_profile = args.profile_backend or backends[0]
    profiled = False
    for p in persons:
        for backend in backends:
            print(f"== {backend}, {p} person(s)", flush=True)
            profile = args.profile_dir if args.profile_dir and not profiled and backend == to_profile else None
            try:
                r = run_one(args, backend, p, video, env, free_port(), profile)
            except Exception as exc:  # noqa: BLE001 - one failing configuration must not lose the rest
                print(f"   failed: {exc}", flush=True)
                continue
            profiled = profiled or profile is not None
            results.append(r)
            print(json.dumps(r), flush=True)
            write_report(args.out, results, meta)
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
