"""The supervisor (architecture.md §4): owns the rings and the control sockets, starts the workers in
data-flow order, watches them and restarts them by policy, and shuts everything down cleanly.

Used in-process by `pipeline start` (foreground) and as ``python -m pipeline.runtime.supervisor``
(``--detach``; the resolved config arrives as JSON on stdin).

Files, one job each: `core` (the Supervisor, its main loop and status), `lifecycle`,
`health` (restart policy), `commands` (the control plane), `swap`, `ab`, `state`.
May import: the rest of `pipeline.runtime` and `pipeline.config`; never models, backends,
sinks or the CLI (workers are separate processes, started by module name).
"""
from pipeline.runtime.supervisor.core import Supervisor, main
from pipeline.runtime.supervisor.state import EXIT_SETUP, StartError, WorkerState

__all__ = ["EXIT_SETUP", "StartError", "Supervisor", "WorkerState", "main"]
