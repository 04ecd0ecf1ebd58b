"""Where a running pipeline keeps its private files (architecture.md §3, §12).

Layout, under a per-user base directory (``$POSEPIPE_RUNTIME_DIR``, else
``$XDG_RUNTIME_DIR/posepipe``, else ``/tmp/posepipe-<uid>``)::

    <base>/                      mode 0700
        current -> <run_id>      symlink to the run that `pipeline stop/status` talk to
        <run_id>/                mode 0700, removed by the supervisor on a clean stop
            supervisor.pid       pid of the supervisor process
            control.json         control endpoints (ROUTER for commands, PUB for events)
            *.sock               ipc socket files (mode 0600)
            supervisor.log       log of a detached supervisor

A run whose supervisor pid is dead is stale: `cleanup_stale()` removes its directory and the
shared-memory rings it left in /dev/shm (a supervisor killed with -9 cannot clean up itself).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

PID_FILE = "supervisor.pid"
CONTROL_FILE = "control.json"
CURRENT = "current"


class NotRunning(RuntimeError):
    """No live pipeline was found; the message says where we looked."""


def base_dir() -> Path:
    override = os.environ.get("POSEPIPE_RUNTIME_DIR")
    if override:
        base = Path(override)
    elif os.environ.get("XDG_RUNTIME_DIR"):
        base = Path(os.environ["XDG_RUNTIME_DIR"]) / "posepipe"
    else:
        base = Path(f"/tmp/posepipe-{os.getuid()}")
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = base.stat()
    if st.st_uid != os.getuid():
        raise PermissionError(f"runtime directory {base} belongs to another user; set POSEPIPE_RUNTIME_DIR")
    os.chmod(base, 0o700)
    return base


def new_run_id() -> str:
    # Only [A-Za-z0-9_.]: the run id is part of every ring's /dev/shm name. An optional tag
    # (POSEPIPE_RUN_TAG, used by tests) lets a caller recognise its own runs' rings.
    tag = "".join(c for c in os.environ.get("POSEPIPE_RUN_TAG", "") if c.isalnum())[:16]
    return f"{tag}{time.strftime('%Y%m%dT%H%M%S')}_{os.getpid()}"


@dataclass
class RunDir:
    run_id: str
    path: Path

    @classmethod
    def create(cls, run_id: str | None = None) -> "RunDir":
        run_id = run_id or new_run_id()
        path = base_dir() / run_id
        path.mkdir(mode=0o700)
        return cls(run_id, path)

    def socket_path(self, name: str) -> Path:
        return self.path / f"{name}.sock"

    def write_pid(self, pid: int | None = None) -> None:
        (self.path / PID_FILE).write_text(str(pid or os.getpid()))

    def write_control(self, endpoints: dict) -> None:
        tmp = self.path / (CONTROL_FILE + ".tmp")
        tmp.write_text(json.dumps(endpoints))
        os.chmod(tmp, 0o600)
        tmp.replace(self.path / CONTROL_FILE)

    def make_current(self) -> None:
        link = self.path.parent / CURRENT
        tmp = self.path.parent / f".{CURRENT}.{os.getpid()}"
        if tmp.is_symlink():
            tmp.unlink()
        tmp.symlink_to(self.run_id)
        tmp.replace(link)

    def remove(self) -> None:
        link = self.path.parent / CURRENT
        try:
            if link.is_symlink() and os.readlink(link) == self.run_id:
                link.unlink()
        except FileNotFoundError:
            pass
        shutil.rmtree(self.path, ignore_errors=True)


def supervisor_pid(path: Path) -> int | None:
    try:
        return int((path / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def is_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def current_run() -> tuple[RunDir, dict]:
    """The live run that `current` points to and its control endpoints, or NotRunning."""
    base = base_dir()
    link = base / CURRENT
    if not link.is_symlink():
        raise NotRunning(f"no pipeline is running (nothing in {base}); start one with `pipeline start`")
    run_id = os.readlink(link)
    path = base / run_id
    pid = supervisor_pid(path)
    if not is_alive(pid):
        raise NotRunning(f"no pipeline is running (run {run_id} is stale: supervisor pid {pid} is gone)")
    try:
        endpoints = json.loads((path / CONTROL_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise NotRunning(f"pipeline run {run_id} is still starting or broken ({exc})") from exc
    return RunDir(run_id, path), endpoints


def cleanup_stale() -> list[str]:
    """Remove every run directory whose supervisor is dead, plus its rings. Returns their ids."""
    base = base_dir()
    removed = []
    for path in sorted(base.iterdir()):
        if path.name == CURRENT or path.name.startswith(".") or not path.is_dir() or path.is_symlink():
            continue
        pid = supervisor_pid(path)
        if pid is None:
            # A run being created right now has no pid file for a moment; only old ones are stale.
            try:
                if time.time() - path.stat().st_mtime < 10:
                    continue
            except FileNotFoundError:
                continue
        elif is_alive(pid):
            continue
        _remove_rings(path.name)
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path.name)
        log.info("removed stale run %s (supervisor pid %s is gone)", path.name, pid)
    link = base / CURRENT
    if link.is_symlink() and not (base / os.readlink(link)).exists():
        link.unlink(missing_ok=True)
    return removed


def _remove_rings(run_id: str) -> None:
    from pipeline.runtime.ring import Ring  # the ring module owns the /dev/shm naming scheme

    try:
        Ring.cleanup_stale(run_id=run_id)
    except Exception as exc:  # cleanup must never stop a new run from starting
        log.warning("could not remove rings of stale run %s: %s", run_id, exc)
