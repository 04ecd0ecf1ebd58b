"""The foreground `pipeline start` display: one live status line and a final summary."""
from __future__ import annotations

import sys
import time


def _publisher(status: dict) -> dict:
    for w in status.get("workers", []):
        if w["name"] == "publisher" or w["module"].endswith(".publisher"):
            return w
    return {}


def progress_line(status: dict) -> str:
    pub = _publisher(status)
    extras = pub.get("extras", {})
    states = " ".join(f"{w['name']}:{_short(w['state'])}" + (f"(r{w['restarts']})" if w.get("restarts") else "")
                      for w in status.get("workers", []))
    return (f"[{status.get('uptime_s', 0):6.1f}s] {pub.get('fps', 0.0):5.1f} fps | "
            f"capture→publish p50 {extras.get('latency_p50_ms', 0.0):6.1f} ms "
            f"p99 {extras.get('latency_p99_ms', 0.0):6.1f} ms | persons {extras.get('persons', 0)} | {states}")


def _short(state: str) -> str:
    return {"running": "ok", "starting": "start", "restarting": "RESTART", "failed": "FAILED"}.get(state, state)


class LiveLine:
    """Rewrites one terminal line; without a terminal prints a line every `every` seconds."""

    def __init__(self, stream=None, every: float = 2.0):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every = every
        self._last = 0.0
        self._width = 0

    def render(self, status: dict) -> str:
        return progress_line(status)

    def show(self, status: dict) -> None:
        line = self.render(status)
        if self.tty:
            pad = max(0, self._width - len(line))
            self.stream.write("\r" + line + " " * pad)
            self._width = len(line)
            self.stream.flush()
        elif time.monotonic() - self._last >= self.every:
            self._last = time.monotonic()
            self.stream.write(line + "\n")
            self.stream.flush()

    def message(self, text: str) -> None:
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self._width = 0
        self.stream.write(text + "\n")
        self.stream.flush()

    def end(self) -> None:
        if self.tty and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0


def summary(status: dict) -> str:
    pub = _publisher(status)
    extras = pub.get("extras", {})
    lines = [f"run {status.get('run_id')}: {status.get('uptime_s', 0):.1f} s, source {status.get('source')}",
             f"published {pub.get('frames_out', 0)} frames, {pub.get('fps', 0.0):.1f} fps at the end, "
             f"capture→publish latency p50 {extras.get('latency_p50_ms', 0.0):.1f} ms "
             f"p99 {extras.get('latency_p99_ms', 0.0):.1f} ms"]
    if status.get("every_frame"):
        lines += every_frame_summary(status)
    lines.append(status_table(status))
    return "\n".join(lines)


STAGES = ("capture", "detection", "inference", "publisher")


def every_frame_summary(status: dict) -> list[str]:
    """Lossless runs: frames read vs published, throughput, and each stage's mean time per frame."""
    rows = {w["name"]: w for w in status.get("workers", [])}
    pub = _publisher(status)
    read = rows.get("capture", {}).get("frames_out", 0)
    published = pub.get("frames_out", 0)
    span = float(pub.get("extras", {}).get("out_span_s") or 0.0)
    fps = (published - 1) / span if published > 1 and span > 0 else 0.0
    missing = f" — {read - published} NOT published" if read != published else ", none lost"
    per_stage = []
    for name in STAGES:
        w = rows.get(name)
        if not w:
            continue
        frames = w.get("frames_out" if name == "capture" else "frames_in", 0)
        busy = float(w.get("extras", {}).get("busy_s") or 0.0)
        per_stage.append(f"{name} {1000.0 * busy / frames:.1f} ms" if frames else f"{name} -")
    return [f"every frame: {read} read, {published} published{missing}; {fps:.2f} fps over {span:.1f} s",
            f"time per frame (mean): {', '.join(per_stage)}"]


def status_table(status: dict) -> str:
    cols = ("worker", "pid", "gen", "state", "fps", "p50 ms", "p99 ms", "in", "out", "skipped", "drops",
            "cpu %", "rss MB", "restarts", "thr", "info")
    rows = []
    # Side rows: a swap's new generation while it starts (with its progress), A/B processes.
    every = status.get("workers", []) + status.get("side_workers", [])
    for w in every:
        info = w.get("info") or {}
        note = info.get("description") or ", ".join(f"{k}={v}" for k, v in info.items()
                                                     if k in ("model", "backend", "source", "native_endpoint"))
        if info.get("untrained"):
            note = (note + "; UNTRAINED").strip("; ")
        warming = (w.get("extras") or {}).get("warming_batches")
        if warming:
            note = f"{note}; preparing batch sizes {warming}"
        detector_warming = (w.get("extras") or {}).get("detector_warming")
        if detector_warming:
            note = f"{note}; {detector_warming} (frames run the slower engine until then)"
        starting = _starting_note(w)
        if w.get("role"):
            note = f"[{w['role']}{': ' + starting if starting else ''}] {note}"
        elif starting:
            note = f"[{starting}] {note}"
        rows.append((w["name"], str(w.get("pid") or "-"), str(w["generation"]), w["state"],
                     f"{w['fps']:.1f}", f"{w['p50_ms']:.1f}", f"{w['p99_ms']:.1f}", str(w["frames_in"]),
                     str(w["frames_out"]), str(w.get("skipped", 0)), str(w["drops"]), f"{w['cpu_percent']:.0f}",
                     f"{w['rss_bytes'] / 2**20:.0f}", str(w.get("restarts", 0)), str(w.get("threads") or "-"),
                     note))
    gpu = [w.get("extras", {}).get("gpu_mem_bytes") for w in every]
    if any(isinstance(g, (int, float)) for g in gpu):  # workers on a GPU report gpu_mem_bytes in extras
        cols = cols[:13] + ("gpu MB",) + cols[13:]
        rows = [r[:13] + (f"{g / 2**20:.0f}" if isinstance(g, (int, float)) else "-",) + r[13:]
                for r, g in zip(rows, gpu)]
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)]
    fmt = "  ".join(f"{{:<{n}}}" for n in widths)
    table = "\n".join([fmt.format(*cols)] + [fmt.format(*r) for r in rows])
    streams = stream_table(status)
    return f"{table}\n{streams}" if streams else table


def stream_table(status: dict) -> str:
    """Several sources: one row per stream (published fps, capture->publish p50/p99) and the
    total, from the publisher's `streams` numbers; "" for a single source."""
    per = (_publisher(status).get("extras") or {}).get("streams")
    if not isinstance(per, dict) or not per:
        return ""
    cols = ("stream", "fps", "p50 ms", "p99 ms", "published")
    rows = [(str(name), f"{r.get('fps', 0.0):.1f}", f"{r.get('p50_ms', 0.0):.1f}", f"{r.get('p99_ms', 0.0):.1f}",
             str(r.get("published", 0))) for name, r in per.items() if isinstance(r, dict)]
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)]
    fmt = "  ".join(f"{{:<{n}}}" for n in widths)
    return "\n".join([fmt.format(*cols)] + [fmt.format(*r) for r in rows])


def _starting_note(w: dict) -> str:
    """What a worker that is not ready yet is doing (its last progress message: loading the
    model, warming up), and for how long; "" once it is running."""
    if w.get("state") != "starting":
        return ""
    since = f"{w['starting_s']:.0f} s" if isinstance(w.get("starting_s"), (int, float)) else ""
    return ", ".join(x for x in (w.get("progress") or "", since) if x)


def output_bar(status: dict, width: int = 20) -> str:
    """`out.mp4 [#####.....] 120/300` from the publisher's video stats ('' when unknown)."""
    for w in status.get("workers", []):
        extras = w.get("extras") or {}
        if "video_frames" in extras:
            done, total = int(extras["video_frames"]), extras.get("video_total")
            if not total:
                return f" | output {done} frames"
            filled = min(width, int(width * done / total))
            return f" | output [{'#' * filled}{'.' * (width - filled)}] {done}/{total}"
    return ""


class ProgressLine(LiveLine):
    """The foreground status line plus the `--output` progress bar."""

    def render(self, status: dict) -> str:
        return progress_line(status) + output_bar(status)
