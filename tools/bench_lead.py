#!/usr/bin/env python
"""What `detection.lead` trades where detection and inference take turns on one device.

Two processes on one GPU without MPS take turns on it (time slices); two busy processes on one
core do the same. This tool plays that on one CPU core, so it runs anywhere: the whole pipeline
pinned to one core (`taskset`-like affinity), detection and inference each computing for
`--stage-ms` per frame (their `min_process_ms` knob with POSEPIPE_STRETCH_SPIN=1, on top of a
centre-box detector and the landmarks-ik model on tiny frames), the source a tiny clip played at
`--fps` (faster than the pipeline, so it is always behind). For each lead it prints published FPS,
capture->publish p50/p90 and the median wait between detection's end and inference's start.

    python tools/bench_lead.py --leads default,1,0.5,0 --seconds 10

The same comparison on a GPU: tools/bench_e2e.py --lead F (tools/device/run_lead.sh).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

import bench_e2e  # noqa: E402


def tiny_clip(path: Path, fps: int) -> Path:
    import cv2
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (160, 96))
    for k in range(2 * fps):
        writer.write(np.full((96, 160, 3), (40 + 3 * k) % 255, np.uint8))
    writer.release()
    return path


def run(lead: str, args, clip: Path, folder: Path, env: dict) -> dict:
    import yaml
    cfg = bench_e2e.write_config(folder / "cfg.yaml", clip, "torch", 1, "cpu", "landmarks-ik", folder / "data",
                                 bench_e2e.free_port(), realtime=True)
    c = yaml.safe_load(cfg.read_text())
    c["rings"]["frames"].update(max_height=96, max_width=160)
    c["workers"]["detection"]["params"] = {"kind": "center", "min_process_ms": args.stage_ms}
    if lead != "default":
        c["workers"]["detection"]["params"]["lead"] = float(lead)
    c["workers"]["inference"]["params"].update(min_process_ms=args.stage_ms, threads=1)
    cfg.write_text(yaml.safe_dump(c))
    bench_e2e.cli("start", "--detach", "--config", cfg, "--no-viewer", env=env)
    try:
        st = bench_e2e.wait_ready(env, 300)
        return bench_e2e.measure(st["run_id"], args.seconds, stamps_to=folder / f"stamps_{lead}.npz")
    finally:
        bench_e2e.stop(env)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--leads", default="default,1,0.5,0", help="comma list: 'default' or a multiple of detection's p50")
    ap.add_argument("--stage-ms", type=float, default=15.0, help="compute per frame in detection and in inference")
    ap.add_argument("--fps", type=int, default=120, help="the source's rate (keep it above the pipeline's)")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--core", type=int, default=None, help="the core to pin to (default: the last one we may use)")
    args = ap.parse_args()
    leads = args.leads.split(",")
    for lead in leads:
        if lead != "default":
            float(lead)  # a bad value fails here, not after the first run
    core = args.core if args.core is not None else max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})  # the pipeline's processes inherit it
    folder = Path(tempfile.mkdtemp(prefix="bench-lead-"))
    clip = tiny_clip(folder / "tiny.mp4", args.fps)
    env = dict(os.environ, POSEPIPE_VIEWER="0", POSEPIPE_STRETCH_SPIN="1", PYTHONPATH=os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    env.setdefault("XDG_RUNTIME_DIR", "/tmp")
    print(f"one core ({core}); detection and inference compute {args.stage_ms:g} ms per frame each; "
          f"source {args.fps} fps; {args.seconds:g} s per row")
    print(f"{'lead':>8} {'fps':>6} {'p50 ms':>7} {'p90 ms':>7} {'detect end -> infer start p50 ms':>34}")
    base = None
    for lead in leads:
        r = run(lead, args, clip, folder, env)
        base = base or r
        print(f"{lead:>8} {r['fps']:6.1f} {r['e2e_p50_ms']:7.1f} {r['e2e_p90_ms']:7.1f} "
              f"{r['stage_p50_ms']['queue_infer']:34.1f}   fps x{r['fps'] / base['fps']:.2f}, "
              f"p50 x{r['e2e_p50_ms'] / base['e2e_p50_ms']:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
