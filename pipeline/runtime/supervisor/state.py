"""What the supervisor knows about each worker process, and small shared helpers."""
from __future__ import annotations

import collections
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.config import WorkerConfig



EXIT_SETUP = 78


REPO_ROOT = Path(__file__).resolve().parents[3]


class StartError(RuntimeError):
    """The pipeline could not start; the message names the worker and the reason."""


@dataclass
class WorkerState:
    name: str
    cfg: WorkerConfig
    generation: int = 0
    state: str = "pending"
    proc: subprocess.Popen | None = None
    identity: bytes | None = None
    started_at: float = 0.0
    ready_at: float = 0.0
    last_seen: float = 0.0
    stats: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    restarts: collections.deque = field(default_factory=collections.deque)  # restart times
    total_restarts: int = 0
    next_restart_at: float = 0.0
    exit_code: int | None = None
    fatal: str = ""
    finished: str = ""
    log_path: Path | None = None
    last_hb_frames: tuple = (0.0, 0)
    progress: str = ""              # last `progress` event (model loading, warm-up)
    threads: int = 0                # its CPU budget (pipeline/runtime/cpu.py), set at spawn
    role: str = ""                  # "" | "swap" (candidate) | "ab-b" | "ab-compare"
    shared: dict | None = None      # pipeline-wide settings for this process (capture source swap)
    spec_extra: dict = field(default_factory=dict)  # spec overrides (side workers' rings)

    @property
    def pid(self):
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


_STAT_KEYS = {"frames_in", "frames_out", "drops", "overruns", "skipped", "p50_ms", "p99_ms", "cpu_percent", "rss_bytes", "fps"}


def _log_tail(path: Path | None, lines: int = 3) -> str:
    if path is None:
        return ""
    try:
        tail = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()][-lines:]
    except OSError:
        return ""
    return (" — last log lines: " + " | ".join(tail)) if tail else ""

