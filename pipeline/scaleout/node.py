"""The Ray actor of one pipeline: the normal supervisor and workers, on the node Ray put it on.

The actor is a thin owner. Its constructor starts `pipeline.scaleout.node_supervisor` (the
detached supervisor, which follows the actor's death) and returns at once, so a restart by
Ray (`max_restarts`) brings the pipeline back with nothing but Ray's own machinery: Ray runs
the constructor again, in a new process, with the same arguments. Rings, control sockets and
worker processes stay on this node; what leaves it is the native pose stream, bound on the
node's cluster address (Ray's node IP: 127.0.0.1 under a local head) on a port the OS picks,
which `status()` reports to the head.

Each actor keeps its runs in its own runtime folder (`POSEPIPE_RUNTIME_DIR` =
`<posepipe runtime folder>/ray-<pipeline>`), so two pipelines on one node never meet, and the
run a killed incarnation left behind is found and removed by the next one.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

# Variables a head may hand its actors: ours only, never Ray's or the shell's.
ENV_PREFIX = "POSEPIPE_"
STATUS_TIMEOUT_S = 1.0
EXIT_GRACE_S = 3.0     # > the head's status period: it sees "exited" and the error before Ray restarts us


class NodePipeline:
    def __init__(self, name: str, config: dict, env: dict | None = None):
        import ray

        self.name = name
        self.started = time.monotonic()
        for key, value in (env or {}).items():
            if key.startswith(ENV_PREFIX) and isinstance(value, str):
                os.environ[key] = value
        ctx = ray.get_runtime_context()
        self.node_id = ctx.get_node_id()
        self.node_ip = ray.util.get_node_ip_address()
        self.reconstructed = bool(ctx.was_current_actor_reconstructed)
        self.runtime = _runtime_dir(name)
        os.environ["POSEPIPE_RUNTIME_DIR"] = str(self.runtime)
        from pipeline.runtime import rundir

        rundir.cleanup_stale()  # what a killed incarnation of this pipeline left on this node
        cfg = copy.deepcopy(config)
        host = f"[{self.node_ip}]" if ":" in self.node_ip else self.node_ip
        cfg.setdefault("sinks", {}).setdefault("native", {})["endpoint"] = f"tcp://{host}:*"
        self.log_path = self.runtime / "supervisor.log"
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen([sys.executable, "-m", "pipeline.scaleout.node_supervisor"],
                                         stdin=subprocess.PIPE, stdout=logf, stderr=subprocess.STDOUT,
                                         close_fds=True)
        self.proc.stdin.write(json.dumps(cfg).encode())
        self.proc.stdin.close()
        self._stopping = False
        threading.Thread(target=self._follow_supervisor, name="follow-supervisor", daemon=True).start()
        log.info("pipeline %s: supervisor pid %d on node %s", name, self.proc.pid, self.node_ip)

    def _follow_supervisor(self) -> None:
        """A supervisor that ends without being asked (it could not start, every worker gave up, the
        OOM killer took it) takes its actor with it, so that Ray restarts the pipeline by its own
        rule (`max_restarts`) and reports it dead when they are used up. The head gets a few status
        polls first, to show the supervisor's last error."""
        code = self.proc.wait()
        if self._stopping:
            return
        log.error("pipeline %s: supervisor exited with code %s: %s", self.name, code, _tail(self.log_path))
        time.sleep(EXIT_GRACE_S)
        if self._stopping:
            return
        from pipeline.runtime import rundir

        rundir.cleanup_stale()  # the next incarnation may land on another node: leave nothing here
        shutil.rmtree(self.runtime, ignore_errors=True)
        os._exit(1)  # a crash in Ray's eyes: the actor is restarted (an orderly exit would not be)

    def status(self) -> dict:
        """This pipeline as the head shows it; never waits more than about a second."""
        row = {"name": self.name, "node_ip": self.node_ip, "node_id": self.node_id, "actor_pid": os.getpid(),
               "supervisor_pid": self.proc.pid, "reconstructed": self.reconstructed,
               "uptime_s": round(time.monotonic() - self.started, 1), "state": "starting", "run_id": None,
               "endpoint": None, "fps": 0.0, "frames_out": 0, "worker_restarts": 0, "error": ""}
        code = self.proc.poll()
        if code is not None:
            row.update(state="exited", error=f"supervisor exited with code {code}: {_tail(self.log_path)}")
            return row
        from pipeline.runtime import rundir
        from pipeline.runtime.control import ControlError, request_current

        try:
            status = request_current("status", timeout_s=STATUS_TIMEOUT_S)
        except (rundir.NotRunning, ControlError, OSError):
            return row
        workers = {w["name"]: w for w in status.get("workers", [])}
        publisher = workers.get("publisher") or {}
        row.update(state=status.get("state", "?"), run_id=status.get("run_id"),
                   endpoint=(publisher.get("info") or {}).get("native_endpoint"),
                   fps=float(publisher.get("fps", 0.0)), frames_out=int(publisher.get("frames_out", 0)),
                   worker_restarts=sum(int(w.get("restarts", 0)) for w in workers.values()),
                   source=status.get("source"))
        return row

    def stop(self, timeout_s: float = 20.0) -> dict:
        """Stop the pipeline in order (control `stop`, then SIGTERM, then SIGKILL) and remove what
        it left on this node; {"exit_code", "clean"}."""
        from pipeline.runtime import rundir
        from pipeline.runtime.control import ControlError, request_current

        self._stopping = True
        if self.proc.poll() is None:
            try:
                request_current("stop", timeout_s=2.0)
            except (rundir.NotRunning, ControlError, OSError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        code = self.proc.returncode
        rundir.cleanup_stale()
        leftovers = rundir.run_dirs()
        if code == 0 and not leftovers:
            shutil.rmtree(self.runtime, ignore_errors=True)
        return {"name": self.name, "exit_code": code, "clean": code == 0 and not leftovers}


def _runtime_dir(name: str) -> Path:
    from pipeline.runtime import rundir

    path = rundir.base_dir() / f"ray-{name}"
    path.mkdir(mode=0o700, exist_ok=True)
    rundir.check_private_dir(path, "the pipeline's runtime folder")
    return path


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    errors = [ln for ln in text if ln.startswith("error:")]
    return " | ".join(errors[-1:] or text[-lines:])
