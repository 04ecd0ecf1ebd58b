"""Measure live swaps: start a pipeline, swap a worker N times, print swap time and output gap.

    python tools/measure_swap.py --config configs/default.yaml --swaps 3 backend=compile
    python tools/measure_swap.py --swaps 2 --start-arg inference.device=cpu threads=1

Each swap alternates between the given settings (B) and the pipeline's own (A), so N swaps
are A->B, B->A, ... For each: command -> serving time (the `swap` reply), time to ready, and
the output gap around the hand-over measured on the native stream: frame ids skipped and
the wall-clock gap between the last frame of the old generation and the first of the new,
next to the median frame interval before the swap. Stops the pipeline at the end.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def cli(*args, timeout=600):
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"pipeline {' '.join(map(str, args))} failed: {proc.stderr.strip()}")
    return proc.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("settings", nargs="+", help="key=value settings of variant B (e.g. backend=compile)")
    ap.add_argument("--worker", default="inference")
    ap.add_argument("--config", help="pipeline YAML for `pipeline start`")
    ap.add_argument("--start-arg", action="append", default=[], help="extra `pipeline start` argument (repeatable)")
    ap.add_argument("--swaps", type=int, default=3)
    ap.add_argument("--settle", type=float, default=5.0, help="seconds of output between swaps")
    a = ap.parse_args()
    from pipeline.runtime import rundir
    from pipeline.client import NativeClient
    from pipeline.config import parse_override
    from pipeline.runtime.control import ControlClient

    def request(cmd, args=None, timeout_s=5.0):
        _, endpoints = rundir.current_run()
        with ControlClient(endpoints["router"]) as c:
            return c.request(cmd, args, timeout_s=timeout_s)

    start = ["start", "--detach", "--no-viewer", *(["--config", a.config] if a.config else []), *a.start_arg]
    print(cli(*start).strip())
    try:
        status = request("status")
        worker = next(w for w in status["workers"] if w["name"] == a.worker)
        publisher = next(w for w in status["workers"] if w["name"] == "publisher")
        endpoint = publisher["info"]["native_endpoint"]
        del worker
        b = {}
        for item in a.settings:  # dotted keys -> nested params, as `pipeline swap` sends them
            key, value = parse_override(item)
            *head, last = key.split(".")
            node = b
            for part in head:
                node = node.setdefault(part, {})
            node[last] = value
        frames, stop = [], threading.Event()

        def collect():
            with NativeClient(endpoint) as client:
                while not stop.is_set():
                    f = client.receive(timeout=0.2)
                    if f is not None:
                        frames.append((time.monotonic(), f.frame_id, f.generation))

        t = threading.Thread(target=collect, daemon=True)
        t.start()
        time.sleep(a.settle)
        for i in range(a.swaps):
            params = b if i % 2 == 0 else _defaults(a.worker, b, a.config)
            n0 = len(frames)
            t0 = time.monotonic()
            result = request("swap", {"worker": a.worker, "params": params}, timeout_s=900)
            wall = time.monotonic() - t0
            time.sleep(a.settle)
            seen = frames[max(0, n0 - 50):]
            old = [x for x in seen if x[2] == result["old_generation"]]
            new = [x for x in seen if x[2] == result["generation"]]
            before = [y[0] - x[0] for x, y in zip(old, old[1:])]
            if old and new:
                gap_s, skipped = new[0][0] - old[-1][0], new[0][1] - old[-1][1] - 1
                print(f"swap {i + 1} {params}: ready {result['ready_s']:.2f} s, serving {result['seconds']:.2f} s "
                      f"(client {wall:.2f} s); output gap {gap_s * 1000:.0f} ms, {skipped} frame id(s) skipped; "
                      f"median interval before {statistics.median(before) * 1000 if before else float('nan'):.0f} ms")
            else:
                print(f"swap {i + 1} {params}: serving {result['seconds']:.2f} s; not enough output to measure a gap")
        stop.set()
        t.join(2)
        ids = [x[1] for x in frames]
        print(f"{len(ids)} frames, duplicates: {len(ids) - len(set(ids))}, in order: {ids == sorted(ids)}")
    finally:
        print(cli("stop").strip())
    return 0


def _defaults(worker: str, b: dict, config) -> dict:
    """The pipeline's own values of the keys B changes (to swap back to A)."""
    from pipeline.config import load_config

    cfg = load_config(config)
    params = cfg.workers[worker].params_obj
    return {k: getattr(params, k) for k in b if hasattr(params, k)}


if __name__ == "__main__":
    os.environ.setdefault("YOLO_OFFLINE", "1")
    sys.exit(main())
