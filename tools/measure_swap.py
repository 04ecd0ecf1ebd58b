"""Restart and swap as users feel them: start a pipeline, kill -9 a worker and swap it, print
the times and output gaps on the native stream, and the issue-18 goals they are held to.

    python tools/measure_swap.py backend=torch                      # CPU: POCO-CLIFF, default backend (onnx) <-> torch
    python tools/measure_swap.py --kills 3 --swaps 2 backend=torch --start-arg=--seconds=600
    python tools/measure_swap.py --start-arg=--backend=torch --start-arg=--device=cuda backend=cudagraph  # GPU

1. kill -9: `--kills` times, the `--worker` process (default inference) is killed with SIGKILL
   while frames flow; reported: seconds from the kill to the next frame published by the new
   generation (what a viewer sees), to its `ready`, and the restart policy's delay.
2. swap: `--swaps` times, alternating between the given settings (B) and the pipeline's own (A),
   `pipeline swap` through the control socket; reported: seconds until the command returned
   (the new generation serving), until it was ready, and the output gap at the hand-over: the
   wall-clock time between the last frame of the old generation and the first of the new one
   against one frame interval (the median interval of the slower of the two generations, as
   seen in the seconds before and after), plus the frame ids skipped.
3. Goals (docs/architecture.md §4; issue 18), from the inference device: kill -9 -> next frame
   <= 6 s on a CPU (warm engine cache) and <= 25 s on a GPU; swap command <= 15 s on a CPU;
   output gap <= 1 frame interval. Each line says PASS or MISS.

The pipeline is started with `--detach --no-viewer --model poco-<--model>` plus `--config` and
`--start-arg`s, and stopped at the end. Settings are `key=value` params of the worker, as
`pipeline swap` takes them.
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

GOALS = {"cpu": {"kill_s": 6.0, "swap_s": 15.0}, "gpu": {"kill_s": 25.0, "swap_s": None}}


def cli(*args, timeout=900):
    """`pipeline ARGS` from the repository root (so its data/ and code); exits on failure."""
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"pipeline {' '.join(map(str, args))} failed: {proc.stderr.strip()}")
    return proc.stdout


def request(cmd, args=None, timeout_s=5.0):
    """A control request to the running pipeline."""
    from pipeline.runtime.control import request_current

    return request_current(cmd, args, timeout_s=timeout_s)


class Stream:
    """Every frame on the native stream: (arrival monotonic time, frame_id, generation)."""

    def __init__(self, endpoint: str):
        from pipeline.client import NativeClient

        self.frames: list[tuple[float, int, int]] = []
        self._stop = threading.Event()
        self._client = NativeClient(endpoint)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            f = self._client.receive(timeout=0.2)
            if f is not None:
                self.frames.append((time.monotonic(), f.frame_id, f.generation))

    def first_after(self, t: float, generation_above: int, timeout: float):
        """The first frame that arrived after `t` from a generation above `generation_above`."""
        deadline = time.monotonic() + timeout
        start = 0
        while time.monotonic() < deadline:
            frames = self.frames[start:]
            match = next((x for x in frames if x[0] >= t and x[2] > generation_above), None)
            if match is not None:
                return match
            start += len(frames)
            time.sleep(0.02)
        return None

    def close(self):
        self._stop.set()
        self._thread.join(2)
        self._client.close()


def median_interval(frames) -> float:
    gaps = [b[0] - a[0] for a, b in zip(frames, frames[1:])]
    return statistics.median(gaps) if gaps else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("settings", nargs="*", help="key=value params of variant B for the swaps (e.g. backend=torch)")
    ap.add_argument("--worker", default="inference")
    ap.add_argument("--config", help="pipeline YAML for `pipeline start`")
    ap.add_argument("--start-arg", action="append", default=[], help="extra `pipeline start` argument (repeatable)")
    ap.add_argument("--kills", type=int, default=2, help="kill -9 cycles (0: none)")
    ap.add_argument("--swaps", type=int, default=2, help="swaps, alternating B and A (0: none; needs settings)")
    ap.add_argument("--settle", type=float, default=8.0, help="seconds of output between measurements")
    ap.add_argument("--model", default="cliff", choices=("cliff", "pare"),
                    help="POCO variant (without weights the default model would be landmarks-ik)")
    a = ap.parse_args()
    if a.swaps and not a.settings:
        ap.error("swaps need the settings of variant B (e.g. backend=torch), or --swaps 0")
    from pipeline.config import parse_override

    def worker_row():
        return next(w for w in request("status")["workers"] if w["name"] == a.worker)

    start = ["start", "--detach", "--no-viewer", f"--model=poco-{a.model}", *(["--config", a.config] if a.config else []),
             *a.start_arg]
    t0 = time.monotonic()
    print(cli(*start).strip(), f"({time.monotonic() - t0:.1f} s)")
    stream = None
    kills, swaps = [], []
    try:
        status = request("status")
        publisher = next(w for w in status["workers"] if w["name"] == "publisher")
        stream = Stream(publisher["info"]["native_endpoint"])
        row = worker_row()
        device = "gpu" if str(row["info"].get("device", "cpu")).startswith("cuda") else "cpu"
        print(f"{a.worker}: {row['info'].get('backend')} on {row['info'].get('device')}, "
              f"{row.get('threads')} threads; load average {os.getloadavg()[0]:.1f}")
        time.sleep(a.settle)
        for i in range(a.kills):
            row = worker_row()
            t_kill = time.monotonic()
            os.kill(row["pid"], signal.SIGKILL)
            nxt = stream.first_after(t_kill, row["generation"], timeout=120)
            ready = None
            for _ in range(50):
                now = worker_row()
                if now["generation"] > row["generation"] and now["state"] == "running":
                    ready = now
                    break
                time.sleep(0.1)
            took = nxt[0] - t_kill if nxt else float("nan")
            kills.append(took)
            extras = (ready or {}).get("extras", {})
            print(f"kill -9 {a.worker} #{i + 1} (pid {row['pid']}): next published frame after {took:.2f} s "
                  f"(generation {nxt[2] if nxt else '-'}; its load {extras.get('load_s')} s, "
                  f"warm-up {extras.get('warmup_s')} s)")
            time.sleep(a.settle)
        b = {}
        for item in a.settings:  # dotted keys -> nested params, as `pipeline swap` sends them
            key, value = parse_override(item)
            *head, last = key.split(".")
            node = b
            for part in head:
                node = node.setdefault(part, {})
            node[last] = value
        for i in range(a.swaps):
            params = b if i % 2 == 0 else _defaults(a.worker, b, a.config)
            old = worker_row()
            t_cmd = time.monotonic()
            result = request("swap", {"worker": a.worker, "params": params}, timeout_s=900)
            wall = time.monotonic() - t_cmd
            time.sleep(a.settle)
            seen = [x for x in stream.frames if x[0] >= t_cmd - a.settle]
            before = [x for x in seen if x[2] == result["old_generation"]]
            after = [x for x in seen if x[2] == result["generation"]]
            if not (before and after):
                print(f"swap {i + 1} {params}: returned after {wall:.2f} s; not enough output to measure a gap")
                swaps.append((wall, float("nan")))
                continue
            gap = after[0][0] - before[-1][0]
            skipped = after[0][1] - before[-1][1] - 1
            interval = max(median_interval(before), median_interval(after))
            swaps.append((wall, gap / interval))
            print(f"swap {i + 1} {old['info'].get('backend')} -> {params}: returned after {wall:.2f} s (ready "
                  f"{result['ready_s']:.2f} s, hand-over {result['handoff_s']:.2f} s); output gap "
                  f"{gap * 1000:.0f} ms = {gap / interval:.2f} frame intervals ({interval * 1000:.0f} ms), "
                  f"{skipped} frame id(s) skipped")
        ids = [x[1] for x in stream.frames]
        print(f"{len(ids)} frames received, duplicates: {len(ids) - len(set(ids))}, in order: {ids == sorted(ids)}")
        _print_goals(device, kills, swaps)
    finally:
        if stream is not None:
            stream.close()
        print(cli("stop").strip())
    return 0


def _print_goals(device: str, kills: list, swaps: list) -> None:
    goal = GOALS[device]

    def verdict(values, bound):
        return "PASS" if values and all(v <= bound for v in values) else "MISS"

    print(f"goals ({device}, issue 18):")
    if kills:
        print(f"  kill -9 -> next published frame <= {goal['kill_s']:g} s: "
              f"{', '.join(f'{k:.2f}' for k in kills)} s  {verdict(kills, goal['kill_s'])}")
    if swaps:
        if goal["swap_s"] is not None:
            walls = [w for w, _ in swaps]
            print(f"  swap command returns <= {goal['swap_s']:g} s: {', '.join(f'{w:.2f}' for w in walls)} s  "
                  f"{verdict(walls, goal['swap_s'])}")
        gaps = [g for _, g in swaps]
        print(f"  swap output gap <= 1 frame interval: {', '.join(f'{g:.2f}' for g in gaps)}  {verdict(gaps, 1.0)}")


def _defaults(worker: str, b: dict, config) -> dict:
    """The pipeline's own values of the keys B changes (to swap back to A)."""
    from pipeline.config import load_config

    cfg = load_config(config)
    params = cfg.workers[worker].params_obj
    return {k: getattr(params, k) for k in b if hasattr(params, k)}


if __name__ == "__main__":
    os.environ.setdefault("YOLO_OFFLINE", "1")
    sys.exit(main())
