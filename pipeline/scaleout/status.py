"""The head's per-node status: one row per pipeline (node, actor, restarts, FPS), shown by the
running head and by `pipeline status --ray` from the file the head rewrites every second
(`<posepipe runtime folder>/ray-head.json`, mode 0600)."""
from __future__ import annotations

import json
import logging

log = logging.getLogger(__name__)


class NoHead(RuntimeError):
    """No live head on this machine."""


def read_head_status() -> dict:
    from pipeline.runtime import rundir
    from pipeline.scaleout.head import STATUS_FILE

    path = rundir.base_dir() / STATUS_FILE
    try:
        status = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise NoHead(f"no `pipeline start --ray` head is running on this machine (no {path})") from exc
    except (OSError, ValueError) as exc:
        raise NoHead(f"the head status {path} is unreadable ({exc})") from exc
    if not isinstance(status, dict) or not rundir.is_alive(status.get("head_pid")):
        raise NoHead(f"no `pipeline start --ray` head is running (the head of {path} is gone)")
    return status


def table(status: dict) -> str:
    head = (f"Ray cluster {status.get('cluster')} ({'local head, ' if status.get('local') else ''}auth "
            f"{status.get('auth')}), up {status.get('uptime_s', 0):.0f} s; merged stream "
            f"{status.get('merged_endpoint')} at {status.get('merged_fps', 0):.1f} fps, {status.get('sent', 0)} sent")
    cols = ("pipeline", "node", "state", "actor", "ray restarts", "worker restarts", "node fps", "merged fps",
            "frames", "latency p50 (node)", "sources")
    rows = [cols]
    for r in status.get("pipelines", []):
        lat = r.get("node_latency_p50_ms")
        rows.append((r["pipeline"], str(r.get("node") or "-"), str(r.get("state")), str(r.get("actor_pid") or "-"),
                     str(r.get("ray_restarts", 0)), str(r.get("worker_restarts", 0)),
                     f"{r.get('node_fps', 0):.1f}", f"{r.get('merged_fps', 0):.1f}", str(r.get("frames", 0)),
                     "-" if lat is None else f"{lat:.1f} ms", ",".join(r.get("sources") or [])))
    widths = [max(len(row[i]) for row in rows) for i in range(len(cols))]
    lines = [head] + ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    errors = [f"  {r['pipeline']}: {r['error']}" for r in status.get("pipelines", []) if r.get("error")]
    return "\n".join(lines + errors)


def line(status: dict) -> str:
    parts = [f"{r['pipeline']}@{r.get('node') or '?'} {r.get('state')} {r.get('merged_fps', 0):.1f} fps"
             + (f" (ray restarts {r['ray_restarts']})" if r.get("ray_restarts") else "")
             for r in status.get("pipelines", [])]
    return f"[{status.get('uptime_s', 0):.0f} s] merged {status.get('merged_fps', 0):.1f} fps | " + " | ".join(parts)
