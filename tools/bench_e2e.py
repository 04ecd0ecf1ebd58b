"""End-to-end pipeline benchmark: throughput and capture->publish latency of the real pipeline.

    python tools/bench_e2e.py --out runs/e2e --backends torch,cudagraph,compile --persons 1,5 --seconds 20
    python tools/bench_e2e.py --detectors fixed,blazepose,yolo --backends cudagraph --persons 1,5

For each (detector, backend, persons) it starts the whole pipeline (`pipeline start --detach`)
on a generated 1080p video of N real people (tools/people_clip.py: cut-outs from the photos
that ship inside ultralytics) played as fast as possible (`realtime: false`, looping), POCO on
the chosen backend, the publisher and the metrics worker. Detectors (`--detectors`):
  fixed      exactly N boxes from the config (detection cost ~0; the person count is exact),
  blazepose  the offline multi-person default (BlazePose's detector: torch on the GPU when there is
             one, else LiteRT on the CPU); blazepose-cpu forces LiteRT on the CPU;
             blazepose-every5 refits boxes every 5th frame only, blazepose-norefine never,
             blazepose-norounds runs no masked round, blazepose-nosegment no person segmentation,
  mediapipe  the legacy one-person MediaPipe solution (CPU),
  yolo       ultralytics YOLO on --device: --yolo FILE, else yolo11n built from its yaml with
             random weights and the person logit raised so it reports boxes: its person count
             is cut to N by max_persons and its boxes are MEANINGLESS (speed only; flagged);
             yolo-cudagraph, yolo-compile, yolo-trt: that engine instead of the auto pick.
Once inference is ready, frames flow and the detector prepares nothing more (YOLO's compile
engine serves a new frame size with its cudagraph graph until Inductor is done) it reads the
`published` ring with policy `next` (every published frame, header fields only) for
--seconds and reports:

- published fps = frames published / elapsed seconds,
- capture->publish latency p50/p99 (monotonic stamps written by the stages themselves),
- per-stage p50 (capture wait, detection, queue before inference, inference, publish), detection
  p99, and detection time as a share of inference time (the CPU goal: <= 25 %),
- frames captured per second (the source's decode rate) and the workers' CPU %,

then stops the pipeline. Ratios are against the first row with the same persons measured in the
same run (eager `torch` fp32 where it ran, else the first detector, `fixed` by default). Results: <out>/e2e.json and <out>/e2e.md, both
rewritten after every configuration so a cut-short run keeps what it measured.
A detector named twice is measured twice (alternating rows on one host). `--stamps` keeps each
row's per-frame stage stamps. `--profile-dir DIR` additionally runs `pipeline profile` for the first configuration.
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


def make_video(path: Path, persons: int, codec="mp4v") -> Path:
    """1080p, N real people (tools/people_clip.py), 4 s looped."""
    sys.path.insert(0, str(REPO / "tools"))
    from people_clip import make_people_video
    return make_people_video(path, persons, codec=codec)


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


def detection_params(detector: str, persons: int, device: str, yolo: Path | None) -> dict:
    if detector == "fixed":
        return {"kind": "fixed", "boxes": BOXES[persons]}
    if detector in ("blazepose", "mediapipe"):
        return {"kind": detector}      # blazepose: torch on the GPU when there is one, else LiteRT
    if detector == "blazepose-cpu":
        return {"kind": "blazepose", "device": "cpu"}
    if detector == "blazepose-every5":      # the refit every 5th frame, as on the CPU
        return {"kind": "blazepose", "refine_every": 5}
    if detector == "blazepose-norefine":    # keypoint boxes only
        return {"kind": "blazepose", "refine": "none"}
    if detector == "blazepose-norounds":    # no masked round (the GPU default runs one every 5th frame)
        return {"kind": "blazepose", "rounds": 0}
    if detector == "blazepose-nosegment":   # no person segmentation proposals
        return {"kind": "blazepose", "segment": False}
    if detector == "yolo" or detector.startswith("yolo-"):
        params = {"kind": "yolo", "model": str(yolo), "device": device, "tracker": "bytetrack", "min_box_size": 0.0}
        if detector != "yolo":      # yolo-cudagraph, yolo-compile, yolo-trt: that engine, not auto's pick
            params["engine"] = detector.split("-", 1)[1]
        return params
    raise SystemExit(f"--detectors takes fixed, blazepose, blazepose-cpu, blazepose-every5, blazepose-norefine, "
                     f"blazepose-norounds, blazepose-nosegment, "
                     f"mediapipe, yolo, yolo-ENGINE (cudagraph, compile, trt); got {detector!r}")


def untrained_yolo(folder: Path) -> Path:
    """yolo11n from its yaml with random weights, the person logit raised so every frame has
    boxes for max_persons to cut to N: the detector's full cost, meaningless boxes."""
    from pipeline.detectors.yolo_model import build_untrained
    return build_untrained("yolo11n.yaml", folder / "yolo11n_UNTRAINED_person_bias.pt", person_bias=8.0)


def write_config(path: Path, video: Path, backend: str, persons: int, device: str, model: str,
                 data_dir: Path, port: int, realtime: bool = False, detector: str = "fixed",
                 yolo: Path | None = None, frame_slots: int = 8, lead: float | None = None) -> Path:
    import yaml
    precision = "fp32" if backend in ("torch", "onnx") or device == "cpu" else "fp16"  # onnx: fp32 only
    backend, options = backend_variant(backend)
    if backend == "torch-fp16":
        backend, precision = "torch", "fp16"
    detection = detection_params(detector, persons, device, yolo)
    if lead is not None:
        detection["lead"] = lead
    cfg = {
        # live mode (newest frame wins) also unpaced: tools/bench_progress.py measures lossless runs
        "source": {"spec": str(video), "options": {"realtime": realtime}, "at_end": "loop", "every_frame": False},
        "rings": {"frames": {"slots": frame_slots, "max_height": 1080, "max_width": 1920}, "max_persons": persons},
        "workers": {
            "detection": {"module": "workers.detection", "start_timeout": 900,
                          "params": detection},
            "inference": {"module": "workers.inference", "start_timeout": 900, "health_timeout": 30,
                          "params": {"model": model, "backend": backend, "device": device,
                                     "precision": precision, "smpl": "off",
                                     "backend_options": options}},
            "metrics": {"module": "workers.metrics", "params": {"prometheus": False}},
        },
        "sinks": {"native": {"endpoint": f"tcp://127.0.0.1:{port}"}},
        "data_dir": str(data_dir),
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


def stop(env) -> None:
    """`pipeline stop`, whatever state the run is in (a failed row still leaves nothing behind)."""
    cli("stop", env=env, check=False, timeout=120)


def write_json(path: Path, results: list, meta: dict) -> None:
    path.write_text(json.dumps({"meta": meta, "results": results}, indent=2))


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
        # a detector that still prepares a faster engine (YOLO's compile) serves its frames the
        # slower way until then: measure what it runs once it is done
        det = workers.get("detection", {})
        warming = (det.get("extras") or {}).get("detector_warming")
        # frames_out and extras come from one heartbeat: a detector that has written a frame has
        # said by then whether it compiles that frame's size
        if (inf.get("state") in ("ready", "running") and inf.get("frames_out", 0) > 0
                and det.get("frames_out", 0) > 0 and not warming):
            return st
        time.sleep(1.0)
    raise RuntimeError(f"pipeline not serving after {timeout:.0f} s")


def measure(run_id: str, seconds: float, settle: float = 3.0, stamps_to: Path | None = None) -> dict:
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
    if stamps_to is not None:  # every published frame's stage stamps (ms), columns named as STAGE_INDEX
        np.savez_compressed(stamps_to, stamps_ms=st, frame_ids=np.array([i for i, _ in ids]),
                            stages=np.array(sorted(s, key=s.get)))

    def span(a, b):
        d = st[:, s[b]] - st[:, s[a]]
        return d[(st[:, s[a]] > 0) & (st[:, s[b]] > 0)]

    e2e = span("capture", "publish")
    frame_ids = [i for i, _ in ids]
    return {
        "frames": len(rows), "seconds": elapsed, "fps": len(rows) / elapsed, "lost_by_reader": int(lost),
        "captured_fps": (frame_ids[-1] - frame_ids[0] + 1) / elapsed if len(frame_ids) > 1 else 0.0,
        "persons_mean": float(np.mean([c for _, c in ids])),
        "e2e_p50_ms": float(np.percentile(e2e, 50)), "e2e_p90_ms": float(np.percentile(e2e, 90)),
        "e2e_p99_ms": float(np.percentile(e2e, 99)),
        "stage_p50_ms": {
            "capture_write": float(np.median(span("capture", "frame_written"))),
            "queue_detect": float(np.median(span("frame_written", "detect_start"))),
            "detect": float(np.median(span("detect_start", "detect_end"))),
            "detect_p99": float(np.percentile(span("detect_start", "detect_end"), 99)),
            "queue_infer": float(np.median(span("detect_end", "infer_start"))),
            "infer": float(np.median(span("infer_start", "infer_end"))),
            "publish": float(np.median(span("infer_end", "publish"))),
        },
        "infer_p99_ms": float(np.percentile(span("infer_start", "infer_end"), 99)),
    }


def run_one(args, backend, persons, video, env, port, profile_dir=None, detector="fixed") -> dict:
    name = backend if detector == "fixed" else f"{detector}_{backend}"
    cfg = write_config(args.out / f"cfg_{name}_{persons}p.yaml", video, backend, persons, args.device,
                       args.model, args.data_dir, port, realtime=args.realtime, detector=detector,
                       yolo=args.yolo, frame_slots=args.frame_slots, lead=args.lead)
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
        stamps_to = None
        if args.stamps:
            stamps_to = args.out / f"stamps_{name}_{persons}p_{len(list(args.out.glob(f'stamps_{name}_{persons}p_*')))}.npz"
        result = measure(st["run_id"], args.seconds, stamps_to=stamps_to)
        workers = {w["name"]: w for w in status(env).get("workers", [])}
        result["cpu_percent"] = {n: w.get("cpu_percent") for n, w in workers.items()}
        result["worker_p50_ms"] = {n: w.get("p50_ms") for n, w in workers.items()}
        result["inference_info"] = {k: v for k, v in (workers.get("inference", {}).get("info") or {}).items()
                                    if isinstance(v, (str, int, float, bool, type(None)))}
        result["detection_info"] = (workers.get("detection", {}).get("info") or {}).get("description")
        if prof is not None:
            out, _ = prof.communicate(timeout=args.seconds + 120)
            (profile_dir / "profile_stdout.txt").write_text(out)
            result["profile_summary"] = out[-3000:]
        result.update(backend=backend, persons=persons, ready_s=ready_s, detector=detector)
        return result
    finally:
        stop(env)


def write_report(out: Path, results: list, meta: dict) -> None:
    write_json(out / "e2e.json", results, meta)
    base = {}
    for r in results:  # eager fp32 ("torch") with fixed boxes is the reference where it ran, else the first row
        if (r["backend"] == "torch" and r.get("detector", "fixed") == "fixed") or r["persons"] not in base:
            base[r["persons"]] = r
    lines = [f"# End-to-end pipeline on {meta['device_name']}", "",
             f"{meta['video']}; model {meta['model']}; source decode alone: {meta['decode_fps']:.0f} fps; "
             f"measured {meta['seconds']:.0f} s per row after warm-up; × vs the first row with the same persons, "
             f"same run. `fixed` = N boxes from the config (detection cost ~0). {meta.get('yolo_note', '')}", "",
             "| detector | backend | persons | seen | published fps | × | capture→publish p50 ms | p99 ms | "
             "detect p50 ms | detect p99 ms | infer p50 ms | detect/infer | queue→infer p50 ms | capture fps | ready s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        b = base[r["persons"]]
        st = r["stage_p50_ms"]
        lines.append(f"| {r.get('detector', 'fixed')} | {r['backend']} | {r['persons']} | {r['persons_mean']:.2f} | "
                     f"{r['fps']:.1f} | {r['fps'] / b['fps']:.2f}× | {r['e2e_p50_ms']:.2f} | {r['e2e_p99_ms']:.2f} | "
                     f"{st['detect']:.2f} | {st.get('detect_p99', float('nan')):.2f} | {st['infer']:.2f} | "
                     f"{st['detect'] / max(st['infer'], 1e-9):.0%} | {st['queue_infer']:.2f} | "
                     f"{r['captured_fps']:.0f} | {r['ready_s']:.0f} |")
    details = [f"- {r.get('detector', 'fixed')}/{r['backend']}/{r['persons']}p: {r.get('detection_info')}"
               for r in results if r.get("detection_info")]
    (out / "e2e.md").write_text("\n".join(lines + [""] + details) + "\n")
    print("\n".join(lines + [""] + details), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/e2e"))
    ap.add_argument("--backends", default="torch,cudagraph,compile")
    ap.add_argument("--detectors", default="fixed",
                    help="comma list of fixed, blazepose, blazepose-cpu, mediapipe, yolo")
    ap.add_argument("--yolo", type=Path, help="YOLO weights for the yolo rows (default: untrained yolo11n, speed only)")
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
    ap.add_argument("--frame-slots", type=int, default=8,
                    help="frames ring slots; on a slow CPU a detector slower than slots/fps seconds only ever "
                         "sees overwritten frames, so give it more (e.g. 64)")
    ap.add_argument("--lead", type=float, default=None,
                    help="detection.lead for every row: how early (x detection's p50) a frame starts before "
                         "inference wants it (default 1.5 x + 5 ms)")
    ap.add_argument("--stamps", action="store_true",
                    help="also save each row's per-frame stage stamps to <out>/stamps_<row>_<k>.npz "
                         "(where a row's latency goes, frame by frame)")
    ap.add_argument("--profile-dir", type=Path, help="also run `pipeline profile` on the first configuration")
    ap.add_argument("--profile-backend", help="profile the first configuration of this backend instead")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    args.data_dir.mkdir(parents=True, exist_ok=True)
    persons = [int(p) for p in args.persons.split(",")]
    for p in persons:
        if p not in BOXES:
            raise SystemExit(f"--persons takes {sorted(BOXES)}, got {p}")
    detectors = args.detectors.split(",")
    for d in detectors:
        detection_params(d, persons[0], args.device, None)   # an unknown name fails here, not mid-run
    yolo_note = ""
    if any(d == "yolo" or d.startswith("yolo-") for d in detectors) and args.yolo is None:
        args.yolo = untrained_yolo(args.data_dir)
        yolo_note = (f"yolo rows: {args.yolo.name} is UNTRAINED (random weights, person logit raised): its "
                     f"speed is real, its boxes and person counts are meaningless.")
    ext = "avi" if args.codec == "MJPG" else "mp4"
    videos = {p: args.video or make_video(args.out.parent / f"bench_1080p_{p}people_{args.codec}.{ext}", p,
                                          codec=args.codec) for p in persons}
    video = videos[persons[0]]
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
            "decode_fps": decode_rate(video), "seconds": args.seconds, "yolo_note": yolo_note}
    print(f"decode alone: {meta['decode_fps']:.0f} fps", flush=True)
    results = []
    backends = args.backends.split(",")
    if args.profile_backend and args.profile_backend not in backends:
        raise SystemExit(f"--profile-backend {args.profile_backend!r} is not in --backends {args.backends!r}")
    to_profile = args.profile_backend or backends[0]
    profiled = False
    for p in persons:
        for detector in detectors:
            for backend in backends:
                print(f"== {detector} detector, {backend}, {p} person(s)", flush=True)
                profile = args.profile_dir if args.profile_dir and not profiled and backend == to_profile else None
                try:
                    r = run_one(args, backend, p, videos[p], env, free_port(), profile, detector=detector)
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
