"""Scale-out on Ray (issue 20 item 2, docs/scale-out.md): one pipeline per GPU (or per N CPUs) of a
Ray cluster, each a Ray actor running the normal supervisor and workers on its node, and the
published poses merged back into one native stream at the head.

Files, one job each: `cluster` (connect to a cluster, or start a loopback head), `plan` (how
many pipelines, which sources each), `node` (the actor: one pipeline on its node),
`node_supervisor` (the supervisor process an actor starts), `merge` (subscribe to every
pipeline, republish one stream), `head` (the driver loop tying them together), `status`
(the per-node table and the head's status file).

Ray is an optional dependency (`pip install 'posepipe[ray]'`); nothing here imports it at
module level except `node`, which only the head and Ray's workers import.
"""
from __future__ import annotations

INSTALL_HINT = "pipeline start --ray needs Ray: pip install 'posepipe[ray]'"


class RayUnavailable(RuntimeError):
    """Ray is not installed, or the cluster cannot be reached; the message says what to do."""


def check_ray() -> None:
    """RayUnavailable with the install hint when Ray is not installed. Found without importing
    it: a local head must set Ray's environment (auth, bind) before Ray reads it at import."""
    import importlib.util

    try:
        found = importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise RayUnavailable(f"{INSTALL_HINT} (no module named 'ray')")


def require_ray():
    """The `ray` module, or RayUnavailable with the install hint."""
    check_ray()
    try:
        import ray
    except ImportError as exc:
        raise RayUnavailable(f"{INSTALL_HINT} ({exc})") from exc
    return ray
