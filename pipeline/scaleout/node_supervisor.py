"""`python -m pipeline.scaleout.node_supervisor`: the supervisor of one pipeline, started by its
Ray actor (`pipeline.scaleout.node`); the resolved config arrives as JSON on stdin, as for
`pipeline start --detach`.

The only addition to the detached supervisor: it follows its actor. Ray restarts a dead actor
as a new process, and that process starts a new pipeline; the old one must not run on beside
it holding rings and a CPU. So the death of the actor (SIGKILL included) reaches us as a
SIGTERM (PR_SET_PDEATHSIG, and a poll of the parent pid where that signal cannot be armed or
the parent thread is not the one that lives), and SIGTERM is the supervisor's orderly shutdown:
workers stopped, rings unlinked, run folder removed.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time

from pipeline.runtime.runner import set_parent_death_signal

log = logging.getLogger(__name__)

PARENT_POLL_S = 0.5


def _follow_parent(ppid: int) -> None:
    while os.getppid() == ppid:
        time.sleep(PARENT_POLL_S)
    log.warning("the Ray actor (pid %d) is gone; stopping this pipeline", ppid)
    os.kill(os.getpid(), signal.SIGTERM)


def run() -> int:
    ppid = os.getppid()
    set_parent_death_signal(signal.SIGTERM)
    if ppid == 1:  # the actor died before the signal was armed
        return 1
    threading.Thread(target=_follow_parent, args=(ppid,), name="follow-actor", daemon=True).start()
    from pipeline.runtime.supervisor import main

    return main()


if __name__ == "__main__":
    sys.exit(run())
