"""Connect the head to a Ray cluster, or start a local one that only loopback can reach.

`--ray ADDRESS` is handed to `ray.init(address=...)` as it is (`auto`, `ray://host:10001`,
`host:6379`): the cluster, its nodes, its authentication and its bind addresses are the
operator's, set up with `ray start` (docs/scale-out.md). `--ray local` starts a head on this
machine for tests and demos, and there posepipe decides:

* Bind: loopback only. Ray on Linux turns `127.0.0.1` into the host's interface address and
  its gRPC servers then listen on every interface; `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` is
  Ray's own switch for a single-machine cluster, under which every Ray process of this
  cluster listens on 127.0.0.1 only.
* Auth: Ray's token authentication stays on. Unless the user set `RAY_AUTH_MODE`, the head
  writes a fresh random token to a 0600 file inside the cluster's private temp folder and
  points `RAY_AUTH_TOKEN_PATH` at it, so nothing is written to ~/.ray and the token dies
  with the cluster.
* Temp folder: a private one (0700) of our own, removed when the head shuts down.
"""
from __future__ import annotations

import logging
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pipeline.scaleout import RayUnavailable, check_ray, require_ray

log = logging.getLogger(__name__)

NAMESPACE = "posepipe"
LOCAL = "local"


@dataclass
class Cluster:
    address: str             # what the head connected to (the GCS address for a local head)
    local: bool              # started by us: shut down and removed by `close`
    temp_dir: Path | None    # the local head's temp folder (ours to remove)
    auth: str                # "token", "disabled" or "cluster" (the operator's setting)

    def close(self) -> None:
        ray = require_ray()
        if ray.is_initialized():
            ray.shutdown()
        if self.local and self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)


def connect(address: str, num_cpus: int | None = None, num_gpus: int | None = None,
            temp_dir: str | Path | None = None) -> Cluster:
    """Connect to `address`, or start a loopback-only local head when it is `local`."""
    check_ray()
    if not isinstance(address, str) or not address.strip():
        raise RayUnavailable("--ray needs a cluster address (auto, HOST:PORT, ray://HOST:PORT) or 'local'")
    address = address.strip()
    if address == LOCAL:
        return _start_local(num_cpus, num_gpus, temp_dir)
    ray = require_ray()
    if num_cpus is not None or num_gpus is not None:
        log.warning("num_cpus/num_gpus only size a local head; %s keeps its own resources", address)
    try:
        ctx = ray.init(address=address, namespace=NAMESPACE, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise RayUnavailable(f"cannot connect to the Ray cluster at {address!r}: {exc}") from exc
    return Cluster(address=ctx.address_info.get("gcs_address", address), local=False, temp_dir=None,
                   auth=os.environ.get("RAY_AUTH_MODE", "cluster"))


def _start_local(num_cpus, num_gpus, temp_dir) -> Cluster:
    if temp_dir is None:
        from pipeline.runtime import rundir

        temp = Path(tempfile.mkdtemp(prefix="ray-", dir=rundir.base_dir()))
    else:
        temp = Path(temp_dir)
        temp.mkdir(mode=0o700, parents=True, exist_ok=True)
    # The environment, not ray.init arguments: the GCS, raylet and every worker Ray starts inherit it.
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    auth = os.environ.get("RAY_AUTH_MODE", "").lower()
    if not auth:
        token = temp / "auth_token"
        fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
        os.environ["RAY_AUTH_MODE"] = "token"
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(token)
        auth = "token"
    ray = require_ray()
    _reload_ray_config()
    try:
        ctx = ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, namespace=NAMESPACE,
                       log_to_driver=False, _node_ip_address="127.0.0.1", _temp_dir=str(temp / "r"))
    except Exception as exc:
        shutil.rmtree(temp, ignore_errors=True)
        raise RayUnavailable(f"cannot start a local Ray head: {type(exc).__name__}: {exc}") from exc
    address = ctx.address_info.get("gcs_address", "")
    log.info("local Ray head on %s (auth %s, temp %s)", address, auth, temp)
    return Cluster(address=address, local=True, temp_dir=temp, auth=auth)


def _reload_ray_config() -> None:
    """Ray reads RAY_AUTH_MODE into its config when it is first imported; a process that imported
    it before we set the variable must read it again, as Ray's own token set-up does."""
    try:
        from ray._raylet import Config
    except ImportError:
        return
    Config.initialize("")
