"""Per-frame stage stamps written as CSV while the pipeline runs, for `tools/plot_metrics.py run`.

Rows are streamed (not kept in memory) and flushed every `flush_every` frames and at close, so a long
run costs a file, not RAM. Stamps are monotonic nanoseconds; 0 means the stage was not reached.
"""
from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

from pipeline.pose.frame import PosesFrame
from pipeline.runtime.records import STAGES

log = logging.getLogger(__name__)

DUMP_COLUMNS = ("frame_id", "generation", "source_epoch", "persons", "backend", *[f"{s}_ns" for s in STAGES])


class FrameDump:
    def __init__(self, path: str | os.PathLike, flush_every: int = 100):
        path = Path(path)
        if not path.parent.is_dir():
            raise FileNotFoundError(
                f"cannot dump frames to {str(path)!r}: directory {str(path.parent)!r} does not exist")
        self.path = path
        self._fh = open(path, "w", newline="", encoding="utf-8")
        self._writer = csv.writer(self._fh, lineterminator="\n")
        self._writer.writerow(DUMP_COLUMNS)
        self._flush_every = max(1, int(flush_every))
        self._pending = 0
        self.rows = 0

    def write(self, frame: PosesFrame) -> None:
        self._writer.writerow([frame.frame_id, frame.generation, frame.source_epoch, len(frame.persons),
                               frame.backend, *[frame.stamps_ns.get(s, 0) for s in STAGES]])
        self.rows += 1
        self._pending += 1
        if self._pending >= self._flush_every:
            self._fh.flush()
            self._pending = 0

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            log.info("wrote %d per-frame stamp rows to %s", self.rows, self.path)
