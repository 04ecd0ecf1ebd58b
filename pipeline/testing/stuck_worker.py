"""A worker for tests of the supervisor's health checks (docs/architecture.md §4).

It does nothing but take time where it is told to, always in calls that release the GIL (as a
CUDA sync or a blocking decode does), so the runner's control thread keeps sending heartbeats:

* ``setup_s``: setup() takes this long (start_timeout, not health_timeout, applies);
* ``busy_s``: every process() takes this long (a slow but working stage);
* ``pipeline set <name> hang=SECONDS``: the next process() call blocks that long (a hung stage).

With ``input:`` set in the config it waits on that ring like any consumer.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from pipeline.runtime.worker import SettingError, Worker, Wrote


@dataclass
class Params:
    setup_s: float = 0.0
    busy_s: float = 0.01


class StuckWorker(Worker):
    input = None
    output = None
    Params = Params
    description = "test worker: takes time where it is told to"

    def setup(self) -> None:
        self.hang_s = 0.0
        time.sleep(self.params.setup_s)

    def process(self, item):
        hang, self.hang_s = self.hang_s, 0.0
        time.sleep(hang or self.params.busy_s)
        # Wrote(0), not None: a source's None means "waited, made nothing" and is not timed; this
        # call did a stage's work, and its time is what the health test reads as p50_ms.
        return Wrote(0)

    def on_set(self, key, value):
        if key != "hang" or isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise SettingError(f"{self.name}: the one setting is hang=SECONDS (>= 0), got {key}={value!r}")
        self.hang_s = float(value)
        return self.hang_s
