"""Soak test: run a pipeline for N minutes at full rate and check it does not leak or slow down.

    python tools/soak.py --minutes 30                      # generated clip, as fast as possible, looping
    python tools/soak.py --minutes 5 --source clip.mp4 --csv soak.csv
    python tools/soak.py --minutes 0.75 --warmup 10 --max-fps 100   # the short CI variant

Starts `pipeline start --detach` on a video played with ``realtime=false`` in a loop (a small
clip is generated with OpenCV unless --source is given), samples `pipeline status` every
--interval seconds (RSS of every worker, published fps, restarts), stops the pipeline, and
fails (exit code 1) when, after --warmup seconds, a worker's RSS grew by more than
--rss-growth (default 5 %) or the published fps decayed by more than --fps-decay (10 %), or
when a worker restarted. RSS is judged on medians and fps on frame counts over the first and
the last --window seconds after the warm-up, so single noisy samples do not decide. Prints one JSON summary
line; --csv writes every sample (t_s, worker, pid, rss_mb, fps).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def make_clip(path: Path, frames: int = 90, size=(320, 240)) -> Path:
    import cv2
    import numpy as np

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, size)
    if not writer.isOpened():
        raise RuntimeError("OpenCV cannot write an MJPG clip here; pass --source with a video file")
    for i in range(frames):
        img = np.full((size[1], size[0], 3), 30, np.uint8)
        x = 10 + (i * 3) % (size[0] - 80)
        cv2.rectangle(img, (x, 40), (x + 60, size[1] - 20), (0, 180, 255), -1)
        writer.write(img)
    writer.release()
    return path


def _cli(*args, timeout=120) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=env)


def _median(values):
    return statistics.median(values) if values else float("nan")


def _rate(samples: list[dict]) -> float:
    """Published frames per second over a window (counts, not a median of noisy 1-s rates)."""
    if len(samples) < 2 or samples[-1]["t"] <= samples[0]["t"]:
        return float("nan")
    return (samples[-1]["published"] - samples[0]["published"]) / (samples[-1]["t"] - samples[0]["t"])


def judge(samples: list[dict], warmup_s: float, window_s: float, rss_growth: float, fps_decay: float) -> dict:
    """Verdict from samples [{t, workers: {name: (pid, rss_bytes)}, fps, restarts}]."""
    after = [s for s in samples if s["t"] >= warmup_s]
    if len(after) < 4:
        return {"ok": False, "problems": [f"only {len(after)} samples after the warm-up; run longer"]}
    t_end = after[-1]["t"]
    window_s = min(window_s, (t_end - warmup_s) / 2)
    first = [s for s in after if s["t"] <= warmup_s + window_s]
    last = [s for s in after if s["t"] >= t_end - window_s]
    problems, rss = [], {}
    for name in after[0]["workers"]:
        a = _median([s["workers"][name][1] for s in first if name in s["workers"]])
        b = _median([s["workers"][name][1] for s in last if name in s["workers"]])
        growth = b / a - 1 if a else float("nan")
        rss[name] = {"start_mb": round(a / 2**20, 1), "end_mb": round(b / 2**20, 1), "growth": round(growth, 4)}
        if growth > rss_growth:
            problems.append(f"{name}: RSS grew {growth:.1%} ({a / 2**20:.1f} -> {b / 2**20:.1f} MB)")
    fps_a, fps_b = _rate(first), _rate(last)
    decay = 1 - fps_b / fps_a if fps_a else float("nan")
    if not fps_a or decay > fps_decay:
        problems.append(f"published fps decayed {decay:.1%} ({fps_a:.1f} -> {fps_b:.1f})")
    restarts = after[-1]["restarts"] - after[0]["restarts"]
    if restarts:
        problems.append(f"{restarts} worker restart(s) during the soak")
    return {"ok": not problems, "problems": problems, "rss": rss, "fps_start": round(fps_a, 1),
            "fps_end": round(fps_b, 1), "fps_decay": round(decay, 4), "restarts": restarts,
            "samples": len(after), "window_s": round(window_s, 1)}


def soak(minutes: float, source: str | None, warmup_s: float, interval_s: float, window_s: float,
         rss_growth: float, fps_decay: float, max_fps: float, config: str | None, overrides: list[str],
         csv_path: str | None) -> dict:
    from pipeline.runtime import rundir
    from pipeline.runtime.control import ControlClient, ControlError

    tmp = tempfile.TemporaryDirectory(prefix="posepipe-soak-")
    if source is None:
        source = str(make_clip(Path(tmp.name) / "soak.avi"))
    args = ["start", "--detach", "--source", source, "source.at_end=loop", "source.options={realtime: false}",
            "source.every_frame=false"]  # newest frame wins: the source outruns every stage
    if config:
        args += ["--config", config]
    if max_fps:
        args.append(f"workers.capture.params.max_fps={max_fps}")
    started = _cli(*args, *overrides)
    if started.returncode != 0:
        tmp.cleanup()
        raise RuntimeError(f"pipeline start failed: {started.stderr.strip() or started.stdout.strip()}")
    samples: list[dict] = []
    rows = []
    try:
        _, endpoints = rundir.current_run()
        t0 = time.monotonic()
        last_pub = None
        total = 0
        with ControlClient.of(endpoints) as client:
            while (now := time.monotonic()) - t0 < minutes * 60:
                time.sleep(max(0.0, interval_s - (time.monotonic() - now)))
                try:
                    status = client.request("status", timeout_s=5.0)
                except ControlError as exc:
                    raise RuntimeError(f"the pipeline stopped answering during the soak: {exc}") from exc
                t = time.monotonic() - t0
                ws = {w["name"]: w for w in status["workers"]}
                pub = ws.get("publisher")
                published = (pub or {}).get("frames_out", 0)
                gen = (pub or {}).get("generation", 0)
                fps = 0.0
                if last_pub is not None:
                    # A restarted publisher counts from 0 again: add what the new generation published.
                    delta = published - last_pub[1] if last_pub[2] == gen else published
                    total += max(delta, 0)
                    fps = delta / (t - last_pub[0]) if t > last_pub[0] else 0.0
                first_sample = last_pub is None
                last_pub = (t, published, gen)
                if first_sample:
                    continue
                sample = {"t": round(t, 2), "fps": fps, "published": total,
                          "restarts": sum(w["restarts"] for w in ws.values()),
                          "workers": {n: (w["pid"], w["rss_bytes"]) for n, w in ws.items() if w["rss_bytes"]}}
                samples.append(sample)
                rows += [(sample["t"], n, pid, round(rss / 2**20, 2), round(fps, 2))
                         for n, (pid, rss) in sample["workers"].items()]
    finally:
        stopped = _cli("stop", timeout=60)
        tmp.cleanup()
    if csv_path:
        with open(csv_path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["t_s", "worker", "pid", "rss_mb", "fps"])
            w.writerows(rows)
    verdict = judge(samples, warmup_s, window_s, rss_growth, fps_decay)
    verdict["minutes"] = round(samples[-1]["t"] / 60, 2) if samples else 0.0
    if stopped.returncode != 0:
        verdict["ok"] = False
        verdict.setdefault("problems", []).append(f"pipeline stop failed: {stopped.stderr.strip()}")
    return verdict


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--source", help="video file (default: a generated 320x240 clip)")
    ap.add_argument("--config", help="pipeline YAML merged over the defaults")
    ap.add_argument("--warmup", type=float, default=30.0, help="seconds before the baseline is taken")
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    ap.add_argument("--window", type=float, default=60.0, help="seconds at start/end compared (medians)")
    ap.add_argument("--rss-growth", type=float, default=0.05)
    ap.add_argument("--fps-decay", type=float, default=0.10)
    ap.add_argument("--max-fps", type=float, default=0.0, help="cap capture (0 = full rate)")
    ap.add_argument("--csv", help="write every sample here")
    ap.add_argument("overrides", nargs="*", help="key.sub=value pipeline overrides")
    a = ap.parse_args(argv)
    if a.minutes <= 0 or a.interval <= 0 or a.warmup < 0:
        ap.error("--minutes and --interval must be > 0, --warmup >= 0")
    if a.warmup >= a.minutes * 60:
        ap.error(f"--warmup {a.warmup:g} s leaves nothing of a {a.minutes:g} min soak to judge")
    try:
        verdict = soak(a.minutes, a.source, a.warmup, a.interval, a.window, a.rss_growth, a.fps_decay,
                       a.max_fps, a.config, a.overrides, a.csv)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(verdict))
    for problem in verdict.get("problems", []):
        print(f"FAIL: {problem}", file=sys.stderr)
    return 0 if verdict["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
