"""Reading several rings as one input: the frames rings of several streams (issue 20).

`MultiReader` gives a worker (detection) the items of several rings, fairly: it serves the
streams in rounds, at most one item per stream per round, in turn starting after the stream
served last, each the newest (policy `latest`) or next item of that ring. A stalled stream is
simply passed over (it has nothing new: the round does not wait for it), and a fast one gets
one item per round like the others, so it cannot starve them. An on-demand worker asks for
demand once per round (`round_start`): one demand from its consumer is answered with one
record per stream that has a new frame, which the consumer can then batch.

Waiting for any of several rings uses FUTEX_WAITV (Linux 5.16+, syscall 449 on x86-64) on the
rings' wake words; where the kernel lacks it the wait polls every millisecond.
"""
from __future__ import annotations

import ctypes
import logging
import platform
import time

log = logging.getLogger(__name__)

_SYS_FUTEX_WAITV = {"x86_64": 449, "amd64": 449}.get(platform.machine().lower())
_FUTEX_32 = 2                 # FUTEX2_SIZE_U32: the flag of each entry (shared futex: no PRIVATE flag)
_CLOCK_MONOTONIC = 1
POLL_S = 0.001                # the fallback wait's poll period
WAIT_SLICE_S = 0.1            # waits are sliced to stay responsive to signals


class _Waiter(ctypes.Structure):
    _fields_ = [("val", ctypes.c_uint64), ("uaddr", ctypes.c_uint64), ("flags", ctypes.c_uint32),
                ("reserved", ctypes.c_uint32)]


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


_waitv_ok: bool | None = None   # None: not tried yet


def wait_any(rings, words, timeout_s: float) -> None:
    """Sleep until the wake word of one of `rings` differs from `words` (sampled before the caller
    looked for items, so no wake-up is lost) or `timeout_s` passes. No spinning."""
    global _waitv_ok
    if timeout_s <= 0:
        return
    timeout_s = min(timeout_s, WAIT_SLICE_S)
    if _waitv_ok is not False and _SYS_FUTEX_WAITV is not None:
        from pipeline.runtime.ring import _syscall

        waiters = (_Waiter * len(rings))()
        for w, ring, word in zip(waiters, rings, words):
            w.val, w.uaddr, w.flags = int(word), int(ring._wake_addr), _FUTEX_32
        now = time.clock_gettime(time.CLOCK_MONOTONIC) + timeout_s
        ts = _Timespec(int(now), int((now % 1.0) * 1e9))  # FUTEX_WAITV takes an absolute deadline
        rc = _syscall()(ctypes.c_long(_SYS_FUTEX_WAITV), ctypes.byref(waiters), ctypes.c_uint(len(rings)),
                        ctypes.c_uint(0), ctypes.byref(ts), ctypes.c_int(_CLOCK_MONOTONIC))
        if rc >= 0:
            _waitv_ok = True
            return
        errno = ctypes.get_errno()
        if errno in (38, 22) and _waitv_ok is None:  # ENOSYS / EINVAL: no futex_waitv on this kernel
            _waitv_ok = False
            log.info("FUTEX_WAITV unavailable (errno %d): waiting on several rings polls every %g ms",
                     errno, POLL_S * 1e3)
        else:
            _waitv_ok = True  # EAGAIN (a word changed), ETIMEDOUT, EINTR: look again
            return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(int(r._f["wake"][0]) != w for r, w in zip(rings, words)):
            return
        time.sleep(POLL_S)


class _Fanout:
    """The readers' members seen as one, for what the runner tells its upstream (`plan`)."""

    def __init__(self, members):
        self.members = [m for m in members if m is not None]

    def plan(self, t_ns) -> None:
        for m in self.members:
            m.plan(t_ns)


class MultiReader:
    """One input over several `RingReader`s (one per stream). Items come back with `.stream`
    (the reader's index) set; `done`/`valid`/`member_for` dispatch on it."""

    def __init__(self, readers: list, streams: list[int] | None = None):
        if not readers:
            raise ValueError("MultiReader needs at least one reader")
        self.readers = list(readers)
        self.streams = list(streams) if streams is not None else list(range(len(readers)))
        self.policy = self.readers[0].policy
        self.member = _Fanout([r.member for r in self.readers])
        self._next = 0                    # reader to try first
        self._served: set[int] = set()    # readers served this round
        self.rounds = 0
        self.served = [0] * len(self.readers)

    # ---- what the runner uses ------------------------------------------------------------------
    @property
    def overruns(self) -> int:
        return sum(r.overruns for r in self.readers)

    @property
    def expect_ns(self) -> int:
        return self.readers[0].expect_ns

    @expect_ns.setter
    def expect_ns(self, value: int) -> None:
        for r in self.readers:
            r.expect_ns = value

    def round_start(self) -> bool:
        """True when the next read starts a new round (an on-demand worker waits for demand then)."""
        return not self._served

    def read(self, timeout: float | None = 0.5, copy: bool = True):
        """The next stream's item in this round; None when no stream has a new one within `timeout`
        (which also ends the round: a stalled stream never holds the others up)."""
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        n = len(self.readers)
        while True:
            words = [int(r._wake[0]) for r in self.readers]
            for k in range(n):
                i = (self._next + k) % n
                if i in self._served:
                    continue
                item = self.readers[i]._try_read(copy)
                if item is not None:
                    item.stream = self.streams[i]
                    item.reader_index = i
                    self._served.add(i)
                    self.served[i] += 1
                    self._next = (i + 1) % n
                    if len(self._served) == n:
                        self._end_round()
                    return item
            if self._served:
                # The rest of this round has nothing new: the round ends here (an on-demand
                # worker waits for demand again before the next one).
                self._end_round()
                return None
            left = WAIT_SLICE_S if deadline is None else deadline - time.monotonic()
            if left <= 0:
                return None
            wait_any([r.ring for r in self.readers], words, min(left, WAIT_SLICE_S))

    def _end_round(self) -> None:
        self._served.clear()
        self.rounds += 1

    def done(self, item, frame_id: int | None = None) -> None:
        self.readers[item.reader_index].done(item, frame_id)

    def valid(self, item) -> bool:
        return self.readers[item.reader_index].valid(item)

    def member_for(self, item):
        return self.readers[item.reader_index].member

    def close(self) -> None:
        for r in self.readers:
            r.close()
