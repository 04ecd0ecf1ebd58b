"""The runtime folder (docs/architecture.md §12, issue 21 item 1): posepipe removes only what it
made. Runs live in a dedicated folder that is checked before use (no link, ours, 0700), and only
folders carrying posepipe's marker are ever removed -- never a user's folder that happens to sit
in POSEPIPE_RUNTIME_DIR, however old, and never anything behind a planted link."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

import pytest

from pipeline.runtime import rundir


def _dead_pid() -> int:
    out = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(out.stdout)


def _age(path, seconds):
    t = time.time() - seconds
    os.utime(path, (t, t))


@pytest.fixture
def parent(tmp_path, monkeypatch):
    """POSEPIPE_RUNTIME_DIR pointing at an existing, busy folder of the user's (mode 0755)."""
    path = tmp_path / "busy"
    path.mkdir()
    os.chmod(path, 0o755)
    monkeypatch.setenv("POSEPIPE_RUNTIME_DIR", str(path))
    return path


def test_cleanup_never_removes_a_users_folder_in_the_runtime_dir(parent):
    precious = parent / "precious_project"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    _age(precious, 3600)                       # an hour old, no supervisor.pid: what used to be "stale"
    looks_like_run = parent / "20240101T000000_1"
    looks_like_run.mkdir()
    (looks_like_run / "supervisor.pid").write_text(str(_dead_pid()))
    _age(looks_like_run, 3600)

    removed = rundir.cleanup_stale()
    run = rundir.RunDir.create()
    run.write_pid()
    removed += rundir.cleanup_stale()

    assert removed == []
    assert (precious / "thesis.tex").read_text() == "years of work"
    assert (looks_like_run / "supervisor.pid").is_file()
    assert stat.S_IMODE(parent.stat().st_mode) == 0o755, "the user's folder must not be chmodded"
    assert run.path.parent == parent / "posepipe"
    assert stat.S_IMODE(run.path.parent.stat().st_mode) == 0o700
    run.remove()
    assert (precious / "thesis.tex").is_file()


def test_only_marked_stale_runs_are_removed(parent):
    base = rundir.base_dir()
    stale = rundir.RunDir.create(run_id=f"stale_{_dead_pid()}")
    stale.write_pid(_dead_pid())
    unmarked = base / f"unmarked_{_dead_pid()}"        # a run-like folder without the marker
    unmarked.mkdir()
    (unmarked / "supervisor.pid").write_text(str(_dead_pid()))
    _age(unmarked, 3600)
    forged = base / "forged_1"                          # a marker copied from another run
    forged.mkdir()
    (forged / rundir.MARKER).write_text((stale.path / rundir.MARKER).read_text())
    _age(forged, 3600)
    live = rundir.RunDir.create(run_id="live_1")
    live.write_pid()

    assert rundir.cleanup_stale() == [stale.run_id]
    assert not stale.path.exists()
    assert unmarked.is_dir() and forged.is_dir() and live.path.is_dir()
    assert rundir.run_dirs() == [live.path]
    live.remove()


def test_a_planted_link_instead_of_the_runtime_folder_is_refused(tmp_path, monkeypatch):
    # No POSEPIPE_RUNTIME_DIR/XDG_RUNTIME_DIR: the folder sits in the shared temp folder, where
    # another user can create its name first, e.g. as a link to the victim's project.
    monkeypatch.delenv("POSEPIPE_RUNTIME_DIR", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr(rundir.tempfile, "gettempdir", lambda: str(tmp_path))
    victim = tmp_path / "victim"
    (victim / "old_project").mkdir(parents=True)
    _age(victim / "old_project", 3600)
    os.chmod(victim, 0o755)
    (tmp_path / f"posepipe-{os.getuid()}").symlink_to(victim)

    for call in (rundir.base_dir, rundir.cleanup_stale, rundir.RunDir.create, rundir.current_run):
        with pytest.raises(rundir.RuntimeDirError, match="symbolic link"):
            call()
    assert (victim / "old_project").is_dir()
    assert stat.S_IMODE(victim.stat().st_mode) == 0o755


@pytest.mark.skipif(os.getuid() != 0, reason="chown to another user needs root")
def test_a_runtime_folder_of_another_user_is_refused(parent):
    os.mkdir(parent / "posepipe", 0o700)
    os.chown(parent / "posepipe", 65534, 65534)
    with pytest.raises(rundir.RuntimeDirError, match="belongs to user 65534"):
        rundir.base_dir()


def test_a_runtime_folder_open_to_others_is_refused_not_chmodded(parent):
    os.mkdir(parent / "posepipe")
    os.chmod(parent / "posepipe", 0o755)
    with pytest.raises(rundir.RuntimeDirError, match="chmod 700"):
        rundir.base_dir()
    assert stat.S_IMODE((parent / "posepipe").stat().st_mode) == 0o755


def test_run_files_are_private_from_the_start(parent):
    run = rundir.RunDir.create()
    run.write_control({"router": "ipc:///x", "events": "ipc:///y", "token": "t"})
    assert stat.S_IMODE((run.path / rundir.CONTROL_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE((run.path / rundir.MARKER).stat().st_mode) == 0o600
    assert stat.S_IMODE(run.path.stat().st_mode) == 0o700
    run.remove()
    assert not run.path.exists()
