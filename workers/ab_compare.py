"""A/B compare worker (architecture.md §4): reads variant A (`poses`) and variant B (`poses_b`) with
policy `next`, pairs their records by frame_id and keeps the comparison of `pipeline.metrics.ab`
(B runs on the detections A consumed, through the tee ring; see runtime/supervisor/ab.py).

Started and stopped by the supervisor with `pipeline ab start|stop`; it is not part of a
config. The comparison travels in every heartbeat (`extras["ab"]`), where `pipeline ab
status` reads it; `pipeline ab record --csv PATH` arrives as `set record={csv: PATH, cost:
{A: {...}, B: {...}}}` (the supervisor adds each variant's process cost) and appends one row
per variant. `set reset=true` starts the tallies afresh.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from pipeline.metrics.ab import AbComparer, csv_rows, write_csv
from pipeline.pose.frame import from_record
from pipeline.runtime.worker import SettingError, Worker, WorkerError

EXTRAS_EVERY_S = 0.25


@dataclass
class Params:
    worker: str = "inference"     # the worker being compared (for the CSV)
    changes: dict = field(default_factory=dict)   # B's settings (for the CSV)
    a_ring: str = "poses"
    b_ring: str = "poses_b"


class AbCompare(Worker):
    input = None    # two inputs: read both rings in process()
    output = None
    reads = ("poses", "poses_b")
    Params = Params
    description = "A/B comparison of two pose variants"

    def setup(self) -> None:
        p = self.params
        missing = [r for r in (p.a_ring, p.b_ring) if r not in self.rings]
        if missing:
            raise WorkerError(f"A/B compare needs rings {missing}, which are not attached")
        self.readers = {"A": self.rings[p.a_ring].reader("next"), "B": self.rings[p.b_ring].reader("next")}
        self.comparer = AbComparer()
        self.missed = {"A": 0, "B": 0}
        self._last_extras = 0.0

    def process(self, _item):
        got = 0
        # Block briefly on A (it always runs); drain whatever B has meanwhile.
        item = self.readers["A"].read(timeout=0.05)
        if item is not None:
            got += self._feed("A", item)
        for variant in ("A", "B"):
            while True:
                item = self.readers[variant].read(timeout=0)
                if item is None:
                    break
                got += self._feed(variant, item)
        now = time.monotonic()
        if now - self._last_extras >= EXTRAS_EVERY_S:
            self._last_extras = now
            self.extras["ab"] = {**self.comparer.summary(), "missed": dict(self.missed)}
        return None

    def _feed(self, variant: str, item) -> int:
        self.missed[variant] += item.overwritten_before
        self.comparer.feed(variant, from_record(item.record[()]))
        return 1

    def on_set(self, key, value):
        if key == "reset":
            self.comparer.reset()
            self.missed = {"A": 0, "B": 0}
            return True
        if key != "record":
            raise SettingError(f"{self.name} settings: record={{csv: PATH}} or reset=true (got {key!r})")
        if (not isinstance(value, dict) or set(value) - {"csv", "cost"} or not isinstance(value.get("csv"), str)
                or not isinstance(value.get("cost", {}), dict)):
            raise SettingError("record needs {csv: PATH} (and optionally cost: {A: {...}, B: {...}})")
        target = self.ctx.output_path(value["csv"], "ab record: csv", suffix=".csv")
        rows = csv_rows(self.comparer.summary(), self.params.worker, self.params.changes, value.get("cost"))
        try:
            path = write_csv(str(target), rows)
        except (ValueError, OSError) as exc:
            raise SettingError(str(exc)) from exc
        return {"csv": path, "rows": rows}

    def info(self) -> dict:
        return {"description": self.description, "worker": self.params.worker}
