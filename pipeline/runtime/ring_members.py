"""Who uses a ring and what they still need: the member table of a ring (architecture.md §2).

Progress guarantee. A stage slower than its producer must still finish the frames it has
started: a fast source must never overwrite the frame slot that detection is looking at, that
inference will crop, or that the publisher copies for an image sink. A ring therefore keeps a
small table of *members*, one entry per process that registered (the runner registers every
worker's input reader and the rings it reads by slot). An entry says:

``pid``/``start``  the owner; an entry whose process is gone (or whose pid was reused) counts
                   for nothing and is reused by the next registration, so a crashed or SIGKILLed
                   worker cannot hold anything for longer than it takes to notice (cached for
                   `LIVENESS_TTL_S`).
``claim``          the seq of the item being read or processed right now (one per entry).
``pins``           further items held on behalf of a downstream stage (see `worker.Output.hold`).
``taken``/``done`` the newest item read / fully processed (consumers only): what a producer
                   working on demand waits for, and when a hand-over can let go.
``want_ns``        when the consumer expects to want its next item (0: now); the producer
                   starts its next item just in time instead of as early as possible. An
                   on-demand consumer's runner sets it from its plan alone (`planned`).
``busy_ns``        how long the consumer takes per item: a producer slower than an idle
                   consumer makes items back to back instead of waiting for each take.
``need_fid``       lossless mode: the oldest frame id the member still needs.

Writers use it in two ways (`ring.RingWriter.begin`):

* live (newest frame wins): a slot whose item is claimed or pinned by a live member is passed
  over and the next slot is written instead; its write number is skipped (no item ever has
  that seq; `next` readers step over it without counting a loss);
* lossless (some member registered with `backpressure`): the writer waits until the oldest
  slot holds a frame every such member is done with (frame id below its ``need_fid``) and
  that nobody claims or pins.

Claim protocol (Dekker style, so neither side can miss the other): the member stores its claim,
issues a full fence, then checks that the slot still holds the item; the writer stores the odd
"writing" seq, issues a full fence, then checks for claims and pins, restoring the old seq and
moving on if it finds one. At least one of the two sees the other's store, so a claimed item is
never overwritten, and a claim that lost the race is withdrawn (the read counts as an overrun,
as before). The fence is a locked read-modify-write (an uncontended lock), a full barrier on
x86-64; aarch64 and other weaker architectures would need an explicit barrier instruction.
Registration takes an flock on the shared-memory file, the only lock anywhere on the data path,
and only while an entry is chosen.
"""
from __future__ import annotations

import fcntl
import logging
import os
import threading
import time

import numpy as np

log = logging.getLogger(__name__)

PINS = 14          # enough for HOLD_CAP holds on two outputs (poses, an A/B tee) and a working pin
MAX_MEMBERS = 32
CONSUMER = 1        # a reader that consumes items in order (demand, hand-over)
BACKPRESSURE = 2    # lossless: the writer must not overwrite what this member still needs
LIVENESS_TTL_S = 0.5
FAR_NS = 1 << 62    # a want that is not known yet: later than any real time

MEMBER_DTYPE = np.dtype([
    ("pid", "<i8"), ("start", "<u8"), ("generation", "<i8"), ("flags", "<u8"),
    ("taken", "<u8"), ("done", "<u8"), ("need_fid", "<i8"), ("want_ns", "<i8"),
    ("busy_ns", "<i8"), ("claim", "<u8"), ("pins", "<u8", (PINS,)),
])
assert MEMBER_DTYPE.itemsize == 192  # whole cache lines per member, never shared with another
TABLE_BYTES = MEMBER_DTYPE.itemsize * MAX_MEMBERS

_FENCE = threading.Lock()


def full_fence() -> None:
    """A full memory barrier: acquiring and releasing an uncontended lock executes locked
    read-modify-write instructions, which drain the store buffer on x86-64."""
    _FENCE.acquire()
    _FENCE.release()


class MemberTable:
    """The members of one ring, as seen from one process."""

    def __init__(self, ring_name: str, table: np.ndarray, lock_fd: int, seqs: np.ndarray, bump, alive):
        self.ring_name = ring_name
        self._t = table
        self._lock_fd = lock_fd
        self._seqs = seqs
        self.bump = bump            # wake writers waiting for space or demand
        self._alive = alive         # (pid, start) -> bool
        self._cache: dict[int, tuple[int, int, bool, float]] = {}
        self._me = os.getpid()

    def close(self) -> None:
        self._t = self._seqs = None

    # ---- liveness -------------------------------------------------------------------------------
    def live(self, refresh: bool = False) -> np.ndarray:
        """Mask of entries that belong to a running process."""
        pids = np.array(self._t["pid"])
        starts = np.array(self._t["start"])
        mask = np.zeros(len(pids), bool)
        now = time.monotonic()
        for i in np.flatnonzero(pids):
            pid, start = int(pids[i]), int(starts[i])
            cached = self._cache.get(i)
            if (not refresh and cached is not None and cached[:2] == (pid, start)
                    and now - cached[3] < LIVENESS_TTL_S):
                mask[i] = cached[2]
                continue
            alive = pid == self._me or self._alive(pid, start)
            self._cache[i] = (pid, start, alive, now)
            mask[i] = alive
        return mask

    # ---- what writers ask -------------------------------------------------------------------------
    def held(self, seq: int) -> bool:
        """True when a live member claims or pins the item `seq`."""
        if seq == 0 or seq & 1:
            return False
        hit = (self._t["claim"] == seq) | (self._t["pins"] == seq).any(axis=1)
        return bool(hit.any()) and bool((hit & self.live()).any())

    def need_floor(self) -> int | None:
        """The smallest frame id a live backpressure member still needs; None without such members."""
        bp = (self._t["flags"] & BACKPRESSURE) != 0
        if not bp.any():
            return None
        bp &= self.live()
        if not bp.any():
            return None
        return int(self._t["need_fid"][bp].min())

    def consumers(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(taken, done, want_ns) of the live consumers."""
        taken, done, want, _ = self.consumer_state()
        return taken, done, want

    def consumer_state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(taken, done, want_ns, busy_ns) of the live consumers."""
        mask = (self._t["flags"] & CONSUMER) != 0
        if mask.any():
            mask &= self.live()
        return tuple(np.array(self._t[k][mask]) for k in ("taken", "done", "want_ns", "busy_ns"))

    def describe(self) -> list[dict]:
        """Live members, for diagnostics and tests."""
        live = self.live()
        return [{"pid": int(self._t["pid"][i]), "generation": int(self._t["generation"][i]),
                 "flags": int(self._t["flags"][i]), "taken": int(self._t["taken"][i]),
                 "done": int(self._t["done"][i]), "need_fid": int(self._t["need_fid"][i]),
                 "claim": int(self._t["claim"][i]), "pins": [int(p) for p in self._t["pins"][i] if p]}
                for i in np.flatnonzero(live)]

    # ---- registration -----------------------------------------------------------------------------
    def register(self, *, consumer: bool, backpressure: bool, generation: int, taken: int,
                 need_fid: int) -> RingMember:
        from pipeline.runtime.ring import RingError, _proc_start_time

        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            pids = np.array(self._t["pid"])
            live = self.live(refresh=True)
            free = [i for i in range(len(pids)) if pids[i] == 0 or not live[i]]
            if not free:
                raise RingError(f"ring {self.ring_name}: all {len(pids)} member entries are used by running "
                                f"processes; stop the extra readers (tools, A/B tests) and try again")
            i = free[0]
            t = self._t
            t["pid"][i] = 0  # not in use while it is filled
            for key in ("claim", "want_ns", "busy_ns"):
                t[key][i] = 0
            t["pins"][i] = 0
            t["taken"][i] = t["done"][i] = taken
            t["need_fid"][i] = need_fid
            t["generation"][i] = generation
            t["flags"][i] = (CONSUMER if consumer else 0) | (BACKPRESSURE if backpressure else 0)
            t["start"][i] = _proc_start_time(self._me)
            t["pid"][i] = self._me  # last: the entry counts from here on
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        self._cache.pop(i, None)
        log.debug("ring %s: member %d registered (pid %d, consumer=%s, backpressure=%s)",
                  self.ring_name, i, self._me, consumer, backpressure)
        return RingMember(self, i)


class RingMember:
    """This process's entry in a ring's member table (only this process writes it)."""

    def __init__(self, table: MemberTable, index: int):
        self.table = table
        self.index = index
        self._pins = [0] * PINS     # our mirror of the entry's pins
        self.pin_overflows = 0
        t = table._t
        self._claim = t["claim"][index:index + 1]
        self._pin_view = t["pins"][index]
        self._taken = t["taken"][index:index + 1]
        self._done = t["done"][index:index + 1]
        self._need = t["need_fid"][index:index + 1]
        self._want = t["want_ns"][index:index + 1]
        self._busy = t["busy_ns"][index:index + 1]
        # An on-demand worker's reader: its runner plans when it reads next (`plan`), so a take or
        # a finished item says nothing about when the next one is wanted (a want there would make
        # a paced source render frames that the plan then replaces).
        self.planned = False
        self._pid = t["pid"][index:index + 1]
        self.closed = False

    @property
    def backpressure(self) -> bool:
        return bool(int(self.table._t["flags"][self.index]) & BACKPRESSURE)

    def claim(self, slot: int, seq: int) -> bool:
        """Claim item `seq` (in `slot`); False (and no claim) when the writer got there first."""
        self._claim[0] = seq
        full_fence()
        if int(self.table._seqs[slot]) == seq:
            return True
        self._claim[0] = 0
        return False

    def clear_claim(self) -> None:
        if int(self._claim[0]):
            self._claim[0] = 0
            self.table.bump()

    def pin(self, slot: int, seq: int) -> bool:
        """Hold item `seq` (in `slot`) until `unpin`; False when it is already gone (or no pin is free)."""
        i = self._free_pin()
        if i is None:
            return False
        self._pin_view[i] = self._pins[i] = seq
        full_fence()
        if int(self.table._seqs[slot]) == seq:
            return True
        self._pin_view[i] = self._pins[i] = 0
        return False

    def pin_claimed(self, seq: int) -> bool:
        """Add a pin on an item this member already claims or pins (no race: it cannot go meanwhile)."""
        i = self._free_pin()
        if i is None:
            return False
        self._pin_view[i] = self._pins[i] = seq
        return True

    def unpin(self, seq: int) -> None:
        for i, held in enumerate(self._pins):
            if held == seq:
                self._pin_view[i] = self._pins[i] = 0
                self.table.bump()
                return

    def pinned(self) -> list[int]:
        return [p for p in self._pins if p]

    def _free_pin(self) -> int | None:
        for i, held in enumerate(self._pins):
            if not held:
                return i
        self.pin_overflows += 1
        return None

    def took(self, seq: int, busy_ns: int = 0) -> None:
        """Item `seq` is taken and will take about `busy_ns` to process (0: unknown): the next one
        is wanted then. The want is stored first, so a producer that sees the take sees it too."""
        self._busy[0] = busy_ns
        if self.planned:
            self._want[0] = FAR_NS
        else:
            self._want[0] = time.monotonic_ns() + busy_ns if busy_ns else 0
        self._taken[0] = seq
        self.table.bump()

    def expect(self, want_ns: int) -> None:
        """When this consumer expects to want its next item (monotonic ns; 0 = now)."""
        self._want[0] = want_ns

    def plan(self, when_ns: int | None) -> None:
        """An on-demand consumer says when it will read next (None: not known yet); producers of
        paced sources make the item just in time. Producers are woken only when the plan moves."""
        want = FAR_NS if when_ns is None else when_ns
        if abs(want - int(self._want[0])) > 1_000_000:
            self._want[0] = want
            self.table.bump()

    def finished(self, seq: int, frame_id: int | None) -> None:
        """Item `seq` (frame `frame_id`) is fully processed: release its claim, want the next one."""
        self._done[0] = seq
        if frame_id is not None:
            self._need[0] = frame_id + 1
        self._want[0] = FAR_NS if self.planned else 0
        self._claim[0] = 0
        self.table.bump()

    def need(self, frame_id: int) -> None:
        """Lossless mode: frames below `frame_id` are no longer needed."""
        self._need[0] = frame_id
        self.table.bump()

    def close(self) -> None:
        """Give the entry back (clean exit); everything it held is released."""
        if self.closed or self.table._t is None:
            return
        self.closed = True
        self._pid[0] = 0
        self._claim[0] = 0
        self._pin_view[:] = 0
        self._pins = [0] * PINS
        self.table.bump()
