"""Where a running pipeline keeps its private files (docs/architecture.md §12).

The *parent* folder is ``$POSEPIPE_RUNTIME_DIR``, else ``$XDG_RUNTIME_DIR``, else the system
temp folder. posepipe never changes, chmods or removes anything of the parent: all its files
live in one dedicated folder inside it, which `base_dir()` creates and checks::

    <parent>/posepipe            (posepipe-<uid> in the shared temp folder)
        mode 0700, owned by this user, never a symbolic link (opened with O_NOFOLLOW, fstat)
        current -> <run_id>      symlink to the run that `pipeline stop/status` talk to
        detached.log             output of a detached supervisor before it has a run dir
        <run_id>/                mode 0700, removed by the supervisor on a clean stop
            .posepipe-run        the marker: only folders carrying it are ever removed
            supervisor.pid       pid of the supervisor process
            control.json         control endpoints and the control token (mode 0600)
            *.sock               ipc socket files (mode 0600)
            *.log                worker logs

A run whose supervisor pid is dead is stale: `cleanup_stale()` removes its directory and the
shared-memory rings it left in /dev/shm (a supervisor killed with -9 cannot clean up itself).
A folder without the marker is never touched, whatever its name or age: the dedicated folder
may be shared with nothing else, but a user who points POSEPIPE_RUNTIME_DIR at a busy folder,
or another local user who plants a link where the folder should be, must not cost anybody a
file (issue 21).
"""
from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

PID_FILE = "supervisor.pid"
CONTROL_FILE = "control.json"
CURRENT = "current"
MARKER = ".posepipe-run"
PRIVATE_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW


class NotRunning(RuntimeError):
    """No live pipeline was found; the message says where we looked."""


class RuntimeDirError(RuntimeError):
    """The runtime folder is unsafe to use (a link, another user's, readable by others)."""


def parent_dir() -> tuple[Path, str]:
    """The parent folder and the name of posepipe's own folder inside it."""
    override = os.environ.get("POSEPIPE_RUNTIME_DIR")
    if override:
        return Path(override), "posepipe"
    if os.environ.get("XDG_RUNTIME_DIR"):
        return Path(os.environ["XDG_RUNTIME_DIR"]), "posepipe"
    # The temp folder is shared by every user: the uid keeps one user's folder from blocking another's.
    return Path(tempfile.gettempdir()), f"posepipe-{os.getuid()}"


def base_dir() -> Path:
    """posepipe's own folder (created 0700 when missing); RuntimeDirError when it is unsafe."""
    parent, name = parent_dir()
    try:
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # an existing parent is left as it is
        os.mkdir(parent / name, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise RuntimeDirError(f"cannot create the runtime folder {parent / name} ({exc.strerror or exc}); "
                              f"set POSEPIPE_RUNTIME_DIR to a folder you can write") from exc
    path = parent / name
    check_private_dir(path, "the runtime folder")
    return path


def check_private_dir(path: Path, what: str) -> os.stat_result:
    """`path` must be a real directory (not a link), owned by this user, closed to others."""
    try:
        if stat.S_ISLNK(os.lstat(path).st_mode):
            raise OSError(errno.ELOOP, "symbolic link")
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RuntimeDirError(f"{what} {path} is a symbolic link; posepipe does not follow it (another "
                                  f"user may have planted it). Remove the link, or set POSEPIPE_RUNTIME_DIR "
                                  f"to a folder of your own") from exc
        if exc.errno == errno.ENOTDIR:
            raise RuntimeDirError(f"{what} {path} is not a folder; remove it or set POSEPIPE_RUNTIME_DIR "
                                  f"to a folder of your own") from exc
        raise RuntimeDirError(f"cannot open {what} {path} ({exc.strerror or exc}); set "
                              f"POSEPIPE_RUNTIME_DIR to a folder of your own") from exc
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if st.st_uid != os.getuid():
        raise RuntimeDirError(f"{what} {path} belongs to user {st.st_uid}, not to you ({os.getuid()}); "
                              f"posepipe will not use it. Set POSEPIPE_RUNTIME_DIR to a folder of your own")
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise RuntimeDirError(f"{what} {path} has mode {stat.S_IMODE(st.st_mode):04o}; it holds the control "
                              f"sockets and token, so it must be 0700: run `chmod 700 {path}` or remove it")
    return st


def new_run_id() -> str:
    # Only [A-Za-z0-9_.]: the run id is part of every ring's /dev/shm name. An optional tag
    # (POSEPIPE_RUN_TAG, used by tests) lets a caller recognise its own runs' rings.
    tag = "".join(c for c in os.environ.get("POSEPIPE_RUN_TAG", "") if c.isalnum())[:16]
    return f"{tag}{time.strftime('%Y%m%dT%H%M%S')}_{os.getpid()}"


def write_private(path: Path, text: str) -> None:
    """Create `path` with mode 0600 from the start (never a window where others could read it)."""
    fd = os.open(path, PRIVATE_FILE_FLAGS, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def replace_private(path: Path, text: str) -> None:
    """Replace `path` at once with a new 0600 file holding `text`: a reader sees the old file or
    the new one, never a half-written one (a temp file beside it, named by this process)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    write_private(tmp, text)
    tmp.replace(path)


@dataclass
class RunDir:
    run_id: str
    path: Path

    @classmethod
    def create(cls, run_id: str | None = None) -> "RunDir":
        run_id = run_id or new_run_id()
        path = base_dir() / run_id
        path.mkdir(mode=0o700)
        write_private(path / MARKER, _marker_text(run_id))
        return cls(run_id, path)

    def socket_path(self, name: str) -> Path:
        return self.path / f"{name}.sock"

    def write_pid(self, pid: int | None = None) -> None:
        (self.path / PID_FILE).write_text(str(pid or os.getpid()))

    def write_control(self, endpoints: dict) -> None:
        replace_private(self.path / CONTROL_FILE, json.dumps(endpoints))

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
        if is_run_dir(self.path):
            shutil.rmtree(self.path, ignore_errors=True)


def _marker_text(run_id: str) -> str:
    return f"posepipe run {run_id}\n"


def is_run_dir(path: Path) -> bool:
    """A directory posepipe made for a run: a real folder of ours carrying the marker for its name."""
    try:
        st = os.lstat(path)
        marker = os.lstat(path / MARKER)
    except OSError:
        return False
    if not stat.S_ISDIR(st.st_mode) or not stat.S_ISREG(marker.st_mode):
        return False
    if st.st_uid != os.getuid() or marker.st_uid != os.getuid() or marker.st_size > 256:
        return False
    try:
        fd = os.open(path / MARKER, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd) as fh:
            return fh.read() == _marker_text(path.name)
    except (OSError, UnicodeDecodeError):
        return False


def run_dirs(base: Path | None = None) -> list[Path]:
    """Every run directory in the runtime folder (marked ones only)."""
    base = base or base_dir()
    return sorted(p for p in base.iterdir() if not p.name.startswith(".") and is_run_dir(p))


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
    if not is_run_dir(path):
        raise NotRunning(f"no pipeline is running ({link} points to {run_id!r}, which is not a posepipe run)")
    pid = supervisor_pid(path)
    if not is_alive(pid):
        raise NotRunning(f"no pipeline is running (run {run_id} is stale: supervisor pid {pid} is gone)")
    try:
        endpoints = json.loads((path / CONTROL_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise NotRunning(f"pipeline run {run_id} is still starting or broken ({exc})") from exc
    if not isinstance(endpoints, dict) or not all(isinstance(endpoints.get(k), str) and endpoints[k]
                                                  for k in ("router", "events", "token")):
        raise NotRunning(f"pipeline run {run_id} has an incomplete {path / CONTROL_FILE} (router, events and "
                         f"token are needed); stop it with `kill {pid}` and start again")
    return RunDir(run_id, path), endpoints


def cleanup_stale() -> list[str]:
    """Remove every run directory whose supervisor is dead, plus its rings. Returns their ids.
    Only marked run directories are candidates (`is_run_dir`); anything else is left alone."""
    base = base_dir()
    removed = []
    for path in run_dirs(base):
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
    if link.is_symlink() and not is_run_dir(base / os.readlink(link)):
        link.unlink(missing_ok=True)
    return removed


def _remove_rings(run_id: str) -> None:
    from pipeline.runtime.ring import Ring  # the ring module owns the /dev/shm naming scheme

    try:
        Ring.cleanup_stale(run_id=run_id)
    except Exception as exc:  # cleanup must never stop a new run from starting
        log.warning("could not remove rings of stale run %s: %s", run_id, exc)
