"""Single-writer, multi-reader shared-memory ring of fixed-size records (architecture.md §2).

Layout of the one `multiprocessing.shared_memory` block::

    [header page(s)] fixed fields (magic, version, geometry, owner/writer generation,
                     last_frame_id, newest_seq, creator pid, futex wake word) followed by
                     the record dtype as JSON (numpy's .npy descr), padded to a page
    [seq lines]      one uint64 seqlock counter per slot, each alone in 128 bytes so a
                     reader polling one slot never shares a cache line (or the adjacent-line
                     prefetch pair) with the writer's payload stores
    [payload]        `slots` records of the structured dtype, each slot padded to 64 bytes
                     (to a page when a record is larger than a page)

Sequence scheme. Writes are numbered n = 0, 1, 2, ...; write n goes to slot n % slots.
While it is in progress the slot's counter is 2n+1 (odd); when committed it is 2n+2 (even),
and 2n+2 is the item's `seq`. So `slot = (seq // 2 - 1) % slots`, seq 0 means "never
written", and the header's `newest_seq` is the seq of the newest committed item.
The counters are uint64 written with single aligned stores (numpy element assignment).

Seqlock read. A reader copies a record only when the slot counter equals the seq it
expects (hence even) both before and after the copy; otherwise the read is dropped and
counted as an overrun. Torn data is never returned. The ordering this relies on (stores
not reordered with stores, loads not reordered with loads, every numpy call an opaque
function for the compiler) holds on x86-64 (TSO). ARM (aarch64: Jetson, GH200) reorders both,
and Python has no acquire/release fences to put between the counter and the payload, so
readers there could return torn records: `create`/`attach` refuse any machine but x86-64
(`check_architecture`) until real fences (a small compiled helper) and a stress test on that
hardware exist (docs/architecture.md §2).

Wake-up. After every commit the writer increments a 32-bit wake word in the header and
issues FUTEX_WAKE on it; blocked readers sleep in FUTEX_WAIT on the same word (a shared,
non-private futex works across processes that map the same file). A reader samples the
word *before* checking for new items, so a commit that lands between the check and the
wait changes the word and the wait returns at once: no lost wake-ups, no spinning. The
word lives in the ring itself, so a restarted or replaced writer needs no set-up and the
supervisor is not on the data path. Waits are sliced (at most `WAIT_SLICE_S`) only to stay
responsive to Python signals. Linux x86-64 only (see the seqlock above).

Ownership (make-before-break swaps, architecture.md §4). The header holds `owner_generation`
(set by the supervisor with `ring.set_owner(gen)`; -1 = unset, any writer may write) and
`writer_generation` (the generation writing now; -1 = released) plus its pid.
`RingWriter.may_write()`:
  * owner set and != my generation: if I hold the ring, release it (-1); return False;
  * else claim the ring when writer_generation is -1, mine, or held by a dead pid;
    return True iff I hold it.
`begin()`/`write()` call `may_write()` and return None when not allowed. So a swap is:
start the new generation (it writes nothing yet), `set_owner(new)`, the old writer's next
`may_write()` releases, the new writer's next `may_write()` claims. At most one writer
holds the ring when the owner is set; with the owner unset the caller guarantees there is
a single writer.

Members and progress (architecture.md §2; `ring_members.py`). Processes that read a ring register
an entry in its member table: what they claim or pin, what they have taken and done, and in
lossless mode which frames they still need. A writer in live mode passes over slots whose item a
live member holds (its write number is skipped, so no item has that seq); in lossless mode it
waits until the oldest slot is free. Each slot's seq line also holds the item's commit number
(1, 2, 3, ... over the ring's life), so readers count items they never saw exactly, whatever
write numbers were skipped.

Frame ids. When the dtype has a `frame_id` field, the header keeps `last_frame_id` of
the newest committed record and a commit whose frame_id is not greater is dropped
(`commit()`/`write()` return None; the half-written slot is left odd and is reused by
the next write). Output frame ids therefore strictly increase across generations, with
no duplicates. A ring whose records carry a `stream` index (several sources share the
detections and poses rings) keeps one such guard per stream (`MAX_STREAMS`, header
`stream_fids`): ids increase per stream, and streams never drop each other's records. A restarted *producer* of frame ids (capture) must continue from
`ring.last_frame_id + 1`.

Lifetime. Only the supervisor creates and unlinks blocks; workers attach. Neither
registers with Python's resource_tracker (it would unlink a block when any attached
process exits): creation/attachment unregisters right away (or passes track=False where
Python supports it) and `unlink()` calls shm_unlink directly. Blocks left behind by a
supervisor killed with -9 are removed by `Ring.cleanup_stale()`, which recognises them by
run id or by the creator pid recorded in the header being dead.
"""
from __future__ import annotations

import ctypes
import json
import logging
import os
import platform
import re
import sys
import time
from dataclasses import dataclass, field
from multiprocessing import resource_tracker, shared_memory
from typing import Any

import numpy as np
from numpy.lib.format import descr_to_dtype, dtype_to_descr

from pipeline.runtime.ring_members import MAX_MEMBERS, MEMBER_DTYPE, TABLE_BYTES, MemberTable, RingMember, full_fence

log = logging.getLogger(__name__)

MAGIC = b"PPRING01"
VERSION = 3  # 2: member table and commit numbers; 3: `stream` in the records, frame-id guard per stream
MAX_STREAMS = 16  # frame-id guards in the header: one per stream (records with a `stream` field)
_STREAM_FIDS_OFFSET = 264
SHM_PREFIX = "posepipe-"
SHM_DIR = "/dev/shm"
PAGE = 4096
SEQ_STRIDE = 128
SLOT_ALIGN = 64
WAIT_SLICE_S = 0.1
_DESCR_OFFSET = 512
_NAME_RE = re.compile(r"^[A-Za-z0-9_.]+$")


def ring_shm_name(run_id: str, name: str) -> str:
    """The shared-memory block of ring `name` of run `run_id` (what `Ring.create` makes)."""
    return f"{SHM_PREFIX}{run_id}-{name}"


# Fixed header fields: (name, numpy type, byte offset). 8-byte fields are 8-aligned so each
# load/store is a single aligned access; the futex word is 4-aligned as the kernel requires.
_FIELDS = {
    "magic": ("S8", 0),
    "version": ("<u4", 8),
    "wake": ("<u4", 12),
    "header_bytes": ("<u8", 16),
    "slots": ("<u8", 24),
    "itemsize": ("<u8", 32),
    "slot_stride": ("<u8", 40),
    "seq_offset": ("<u8", 48),
    "data_offset": ("<u8", 56),
    "creator_pid": ("<i8", 64),
    "creator_start": ("<u8", 72),
    "owner_generation": ("<i8", 80),
    "writer_generation": ("<i8", 88),
    "writer_pid": ("<i8", 96),
    "last_frame_id": ("<i8", 104),
    "newest_seq": ("<u8", 128),  # own cache line: written on every commit
    "commits": ("<u8", 136),     # items committed so far (a slot's commit number is its rank)
    "descr_len": ("<u8", 192),
    "members_offset": ("<u8", 200),
    "max_members": ("<u8", 208),
    "space": ("<u4", 256),       # futex word bumped by members: writers waiting for space or demand
}

SEQLOCK_MACHINES = ("x86_64", "amd64")   # where the seqlock's ordering holds without fences
_SYS_FUTEX = {"x86_64": 202, "amd64": 202}.get(platform.machine().lower())
_FUTEX_WAIT = 0
_FUTEX_WAKE = 1
_INT_MAX = 2**31 - 1


class RingError(RuntimeError):
    """A ring cannot be created, attached or used; the message says what to do."""


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


_libc = None


def _syscall():
    global _libc
    if _libc is None:
        if not sys.platform.startswith("linux") or _SYS_FUTEX is None:
            raise RingError(
                f"ring wake-up uses the Linux futex syscall; this platform ({sys.platform}, "
                f"{platform.machine()}) is not supported. Run posepipe on Linux x86-64.")
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    return _libc.syscall


def check_architecture() -> None:
    """RingError on a machine where the lock-free read is not proven correct (see the module doc)."""
    machine = platform.machine()
    if machine.lower() not in SEQLOCK_MACHINES:
        raise RingError(f"posepipe's shared-memory rings are not supported on {machine or 'this machine'} yet: "
                        f"their lock-free reads rely on x86-64 memory ordering, and on a weaker one (ARM: "
                        f"Jetson, GH200) a reader could get a torn frame. Run posepipe on an x86-64 Linux "
                        f"machine")


def _futex_wait(addr: int, expected: int, timeout_s: float) -> None:
    ts = _Timespec(int(timeout_s), int((timeout_s % 1.0) * 1e9))
    # EAGAIN (word already changed), ETIMEDOUT and EINTR all just mean "look again".
    _syscall()(ctypes.c_long(_SYS_FUTEX), ctypes.c_void_p(addr), ctypes.c_int(_FUTEX_WAIT),
               ctypes.c_uint32(expected), ctypes.byref(ts), None, ctypes.c_int(0))


def _futex_wake(addr: int) -> None:
    _syscall()(ctypes.c_long(_SYS_FUTEX), ctypes.c_void_p(addr), ctypes.c_int(_FUTEX_WAKE),
               ctypes.c_int(_INT_MAX), None, None, ctypes.c_int(0))


def _proc_start_time(pid: int) -> int:
    """Start time of a process in clock ticks since boot (0 if unknown); guards against pid reuse."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return int(stat[stat.rindex(b")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return 0


def _pid_alive(pid: int, start_time: int = 0) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        fields = stat[stat.rindex(b")") + 2:].split()
        if fields[0] in (b"Z", b"X"):
            return False
        if start_time and int(fields[19]) != start_time:
            return False  # the pid was reused by another process
    except (OSError, ValueError, IndexError):
        pass
    return True


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def _descr_from_json(obj: Any) -> Any:
    """JSON turned the descr's tuples into lists; rebuild what descr_to_dtype expects."""
    if isinstance(obj, str):
        return obj
    out = []
    for entry in obj:
        if not isinstance(entry, list) or len(entry) not in (2, 3):
            raise ValueError(f"bad dtype entry {entry!r}")
        name, fmt = entry[0], entry[1]
        fmt = fmt if isinstance(fmt, str) else _descr_from_json(fmt)
        out.append((name, fmt, tuple(entry[2])) if len(entry) == 3 else (name, fmt))
    return out


def _check_name(kind: str, value: str) -> None:
    if not isinstance(value, str) or not _NAME_RE.match(value) or len(value) > 100:
        raise RingError(f"ring {kind} {value!r} must be 1-100 characters of A-Z a-z 0-9 _ .")


def _shm_unlink(shm_name: str) -> bool:
    from _posixshmem import shm_unlink  # what SharedMemory.unlink uses, minus the tracker
    try:
        shm_unlink("/" + shm_name)
        return True
    except FileNotFoundError:
        return False


def _open_untracked(shm_name: str, create: bool = False, size: int = 0) -> shared_memory.SharedMemory:
    try:
        shm = shared_memory.SharedMemory(name=shm_name, create=create, size=size, track=False)
    except TypeError:  # Python < 3.13: no track flag; undo the registration at once
        shm = shared_memory.SharedMemory(name=shm_name, create=create, size=size)
        resource_tracker.unregister(shm._name, "shared_memory")  # noqa: SLF001 (name with '/')
    return shm


@dataclass
class ReadItem:
    seq: int
    slot: int
    record: np.ndarray = field(repr=False)  # 0-d structured array: a copy, or a view into the slot (copy=False)
    overwritten_before: int = 0  # items between the previous returned one and this one never returned


class Ring:
    """One shared-memory ring. Use `Ring.create` (supervisor) or `Ring.attach` (workers)."""

    def __init__(self, shm: shared_memory.SharedMemory, owner: bool):
        self._shm = shm
        self._owner = owner
        self._closed = False
        buf = shm.buf
        if len(buf) < _DESCR_OFFSET:
            raise RingError(f"shared memory block {shm.name!r} is too small to be a posepipe ring")
        self._f = {k: np.ndarray((1,), dtype=t, buffer=buf, offset=o) for k, (t, o) in _FIELDS.items()}
        if bytes(self._f["magic"][0]) != MAGIC:
            raise RingError(f"shared memory block {shm.name!r} is not a posepipe ring (bad magic); "
                            f"was it created by Ring.create of this posepipe version?")
        if int(self._f["version"][0]) != VERSION:
            raise RingError(f"ring {shm.name!r} has layout version {int(self._f['version'][0])}, "
                            f"this code reads version {VERSION}; restart the whole pipeline")
        n = int(self._f["descr_len"][0])
        header_bytes = int(self._f["header_bytes"][0])
        if not 0 < n <= header_bytes - _DESCR_OFFSET:
            raise RingError(f"ring {shm.name!r} has a corrupt header (descr length {n})")
        try:
            descr = json.loads(bytes(buf[_DESCR_OFFSET:_DESCR_OFFSET + n]).decode())
            self.dtype = descr_to_dtype(_descr_from_json(descr))
        except (ValueError, TypeError) as e:
            raise RingError(f"ring {shm.name!r} has an unreadable record dtype in its header: {e}") from e
        self.slots = int(self._f["slots"][0])
        stride = int(self._f["slot_stride"][0])
        seq_off = int(self._f["seq_offset"][0])
        data_off = int(self._f["data_offset"][0])
        members_off = int(self._f["members_offset"][0])
        n_members = int(self._f["max_members"][0])
        if (self.dtype.itemsize != int(self._f["itemsize"][0]) or self.slots < 2 or stride < self.dtype.itemsize
                or data_off + stride * self.slots > len(buf) or seq_off + SEQ_STRIDE * self.slots > members_off
                or not 0 < n_members <= MAX_MEMBERS or members_off + MEMBER_DTYPE.itemsize * n_members > data_off):
            raise RingError(f"ring {shm.name!r} has an inconsistent header (geometry does not fit the block)")
        self._seqs = np.ndarray((self.slots,), dtype="<u8", buffer=buf, offset=seq_off, strides=(SEQ_STRIDE,))
        self._commits = np.ndarray((self.slots,), dtype="<u8", buffer=buf, offset=seq_off + 8, strides=(SEQ_STRIDE,))
        self._records = np.ndarray((self.slots,), dtype=self.dtype, buffer=buf, offset=data_off, strides=(stride,))
        self._views = [self._records[i, ...] for i in range(self.slots)]
        self._wake_addr = self._f["wake"].ctypes.data
        self._has_frame_id = self.dtype.names is not None and "frame_id" in self.dtype.names
        self._has_stream = self._has_frame_id and "stream" in self.dtype.names
        self._stream_fids = np.ndarray((MAX_STREAMS,), dtype="<i8", buffer=buf, offset=_STREAM_FIDS_OFFSET)
        self.shm_name = shm.name.lstrip("/")
        self.name = self.shm_name
        self._space_addr = self._f["space"].ctypes.data
        table = np.ndarray((n_members,), dtype=MEMBER_DTYPE, buffer=buf, offset=members_off)
        self.members = MemberTable(self.shm_name, table, shm._fd, self._seqs, self._bump_space, _pid_alive)

    # ---- lifetime -------------------------------------------------------------------------------
    @classmethod
    def create(cls, name: str, dtype: np.dtype, slots: int, run_id: str) -> Ring:
        """Create the block `posepipe-{run_id}-{name}` (supervisor only)."""
        check_architecture()
        _check_name("name", name)
        _check_name("run id", run_id)
        dtype = np.dtype(dtype)
        if dtype.itemsize == 0:
            raise RingError(f"ring {name!r}: record dtype has size 0")
        if not 2 <= int(slots) <= 1 << 20:
            raise RingError(f"ring {name!r}: slots must be in 2..1048576, got {slots}")
        slots = int(slots)
        descr = json.dumps(dtype_to_descr(dtype)).encode()
        header_bytes = _align(_DESCR_OFFSET + len(descr), PAGE)
        seq_off = header_bytes
        members_off = _align(seq_off + SEQ_STRIDE * slots, PAGE)
        data_off = _align(members_off + TABLE_BYTES, PAGE)
        stride = _align(dtype.itemsize, PAGE if dtype.itemsize > PAGE else SLOT_ALIGN)
        size = data_off + stride * slots
        shm_name = ring_shm_name(run_id, name)
        try:
            shm = _open_untracked(shm_name, create=True, size=size)
        except FileExistsError as e:
            raise RingError(f"ring {shm_name!r} already exists: another pipeline with run id {run_id!r} is "
                            f"running, or one died; run `pipeline stop` (or Ring.cleanup_stale) first") from e
        except OSError as e:
            raise RingError(f"cannot create ring {shm_name!r} of {size / 2**20:.1f} MiB: {e} "
                            f"(is /dev/shm full or too small?)") from e
        buf = shm.buf
        f = {k: np.ndarray((1,), dtype=t, buffer=buf, offset=o) for k, (t, o) in _FIELDS.items()}
        np.ndarray((MAX_STREAMS,), dtype="<i8", buffer=buf, offset=_STREAM_FIDS_OFFSET)[:] = -1
        buf[_DESCR_OFFSET:_DESCR_OFFSET + len(descr)] = descr
        for key, value in (("version", VERSION), ("header_bytes", header_bytes), ("slots", slots),
                           ("itemsize", dtype.itemsize), ("slot_stride", stride), ("seq_offset", seq_off),
                           ("data_offset", data_off), ("creator_pid", os.getpid()),
                           ("creator_start", _proc_start_time(os.getpid())), ("owner_generation", -1),
                           ("writer_generation", -1), ("writer_pid", 0), ("last_frame_id", -1),
                           ("newest_seq", 0), ("commits", 0), ("descr_len", len(descr)),
                           ("members_offset", members_off), ("max_members", MAX_MEMBERS)):
            f[key][0] = value
        f["magic"][0] = MAGIC  # last: a block is a valid ring only once the header is complete
        del f, buf
        ring = cls(shm, owner=True)
        log.debug("created ring %s: %d slots x %d bytes", shm_name, slots, stride)
        return ring

    @classmethod
    def attach(cls, shm_name: str) -> Ring:
        """Attach to an existing ring (workers); dtype and slots come from its header."""
        check_architecture()
        shm_name = shm_name.lstrip("/")
        try:
            shm = _open_untracked(shm_name)
        except FileNotFoundError as e:
            raise RingError(f"ring {shm_name!r} does not exist: is the supervisor running, "
                            f"and is the name/run id right?") from e
        try:
            return cls(shm, owner=False)
        except Exception:
            shm.close()
            raise

    def close(self) -> None:
        """Detach from the block (idempotent). Views handed out must be dropped first."""
        if self._closed:
            return
        self._closed = True
        self.members.close()
        self._f = self._seqs = self._commits = self._records = None
        self._views = []
        try:
            self._shm.close()
        except BufferError:
            log.warning("ring %s: record views are still referenced; the mapping stays until they "
                        "are garbage collected", self.shm_name)
            _LINGERING.append(self._shm)

    def unlink(self) -> None:
        """Remove the block from the system (supervisor only; idempotent)."""
        if _shm_unlink(self.shm_name):
            log.debug("unlinked ring %s", self.shm_name)

    def __enter__(self) -> Ring:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @staticmethod
    def cleanup_stale(prefix: str = SHM_PREFIX, run_id: str | None = None) -> list[str]:
        """Unlink leftover blocks: all of `run_id`, or (run_id None) those whose creator is dead."""
        removed = []
        try:
            names = sorted(os.listdir(SHM_DIR))
        except OSError:
            return removed
        want = f"{prefix}{run_id}-" if run_id is not None else prefix
        for entry in names:
            if not entry.startswith(want):
                continue
            if run_id is None and not _creator_dead(entry):
                continue
            if _shm_unlink(entry):
                log.info("removed stale ring %s", entry)
                removed.append(entry)
        return removed

    # ---- header access --------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise RingError(f"ring {self.shm_name!r} is closed")

    def newest_seq(self) -> int:
        return int(self._f["newest_seq"][0])

    @property
    def last_frame_id(self) -> int:
        return int(self._f["last_frame_id"][0])

    def last_frame_id_of(self, stream: int) -> int:
        """The newest frame id committed for `stream` (records with a `stream` field), -1 if none."""
        return int(self._stream_fids[stream]) if 0 <= stream < MAX_STREAMS else -1

    def _fid_guard(self, record) -> tuple[np.ndarray, int]:
        """(array, index) of the frame-id guard a record is checked against: its stream's, or the
        ring's one `last_frame_id`. A stream index out of range is a bug in the writer."""
        if self._has_stream:
            stream = int(record["stream"])
            if not 0 <= stream < MAX_STREAMS:
                raise RingError(f"ring {self.shm_name}: record stream {stream} outside 0..{MAX_STREAMS - 1}")
            return self._stream_fids, stream
        return self._f["last_frame_id"], 0

    @property
    def owner_generation(self) -> int:
        return int(self._f["owner_generation"][0])

    @property
    def writer_generation(self) -> int:
        return int(self._f["writer_generation"][0])

    @property
    def creator_pid(self) -> int:
        return int(self._f["creator_pid"][0])

    def set_owner(self, generation: int) -> None:
        """Hand the writer token to `generation` (supervisor; -1 = unset: any writer)."""
        self._check_open()
        self._f["owner_generation"][0] = int(generation)

    def slot_of(self, seq: int) -> int:
        return (int(seq) // 2 - 1) % self.slots

    def slot_record(self, slot: int) -> np.ndarray:
        """Zero-copy 0-d view of a slot; check `slot_seq` before and after using it."""
        self._check_open()
        return self._views[slot]

    def slot_seq(self, slot: int) -> int:
        return int(self._seqs[slot])

    def host_region(self) -> tuple[int, int]:
        """(address, size) of the whole mapped block, e.g. to page-lock it for GPU DMA."""
        self._check_open()
        whole = np.frombuffer(self._shm.buf, dtype=np.uint8)
        return int(whole.ctypes.data), int(whole.nbytes)

    def writer(self, generation: int) -> RingWriter:
        self._check_open()
        return RingWriter(self, int(generation))

    def reader(self, policy: str = "latest", member: RingMember | None = None) -> RingReader:
        """A cursor; with `member` (from `members.register`) its reads claim what they read."""
        self._check_open()
        return RingReader(self, policy, member)

    def _bump_space(self) -> None:
        self._f["space"][0] = (int(self._f["space"][0]) + 1) & 0xFFFFFFFF
        _futex_wake(self._space_addr)

    def space_word(self) -> int:
        return int(self._f["space"][0])

    def wait_space(self, word: int, timeout_s: float) -> None:
        """Sleep until a member changes something (claim, pin, taken, done, need) or `timeout_s`."""
        if timeout_s > 0:
            _futex_wait(self._space_addr, word, min(timeout_s, WAIT_SLICE_S))

    def __repr__(self) -> str:
        return f"Ring({self.shm_name!r}, slots={self.slots}, itemsize={self.dtype.itemsize})"


_LINGERING: list[shared_memory.SharedMemory] = []


def _creator_dead(shm_name: str) -> bool:
    """True when the header names a creator pid that no longer runs (unknown blocks are kept)."""
    try:
        with open(os.path.join(SHM_DIR, shm_name), "rb") as f:
            head = f.read(_DESCR_OFFSET)
    except OSError:
        return False
    if len(head) < _DESCR_OFFSET or head[:8] != MAGIC:
        return False
    pid = int(np.frombuffer(head, "<i8", 1, _FIELDS["creator_pid"][1])[0])
    start = int(np.frombuffer(head, "<u8", 1, _FIELDS["creator_start"][1])[0])
    return not _pid_alive(pid, start)


class RingWriter:
    """Writes records; at most one writer holds a ring at a time (see module docstring)."""

    def __init__(self, ring: Ring, generation: int):
        self.ring = ring
        self.generation = generation
        self._pid = os.getpid()
        self._pending: tuple[int, int] | None = None
        f = ring._f
        self._owner = f["owner_generation"]
        self._writer_gen = f["writer_generation"]
        self._writer_pid = f["writer_pid"]
        self._last_fid = f["last_frame_id"]
        self._newest = f["newest_seq"]
        self._commits_total = f["commits"]
        self._wake = f["wake"]
        self._seqs = ring._seqs
        self.full = False           # the last begin()/write() found no free slot in time
        self.skipped_slots = 0      # slots passed over because a member held their item

    def may_write(self) -> bool:
        owner = int(self._owner[0])
        holder = int(self._writer_gen[0])
        if owner != -1 and owner != self.generation:
            if holder == self.generation:
                self._writer_gen[0] = -1
                log.info("ring %s: generation %d released the writer token to %d",
                         self.ring.shm_name, self.generation, owner)
            return False
        if holder == self.generation:
            return True
        if holder == -1 or not _pid_alive(int(self._writer_pid[0])):
            self._writer_pid[0] = self._pid
            self._writer_gen[0] = self.generation
            log.info("ring %s: generation %d holds the writer token", self.ring.shm_name, self.generation)
            return True
        return False

    def begin(self, timeout: float = 0.0) -> np.ndarray | None:
        """Open the next slot for writing; returns its 0-d view, or None if this writer may not
        write (`full` False) or no slot became free within `timeout` seconds (`full` True).

        Live mode passes over slots whose item a live member claims or pins; lossless mode (a
        member registered with backpressure) writes the oldest slot only once every such member
        is done with its frame and nobody holds it (see `ring_members`)."""
        if self._pending is not None:
            raise RingError(f"ring {self.ring.shm_name}: begin() called twice without commit()")
        self.full = False
        if not self.may_write():
            return None
        ring, members = self.ring, self.ring.members
        deadline = None
        while True:
            word = ring.space_word()
            n0 = int(self._newest[0]) // 2
            floor = members.need_floor()
            if floor is not None:
                if self._free_for_lossless(n0 % ring.slots, floor) and self._open(n0):
                    return ring._views[n0 % ring.slots]
            else:
                for n in range(n0, n0 + ring.slots):
                    if not members.held(int(self._seqs[n % ring.slots])) and self._open(n):
                        self.skipped_slots += n - n0
                        return ring._views[n % ring.slots]
            now = time.monotonic()
            deadline = now + max(timeout, 0.0) if deadline is None else deadline
            if now >= deadline:
                self.full = True
                return None
            ring.wait_space(word, deadline - now)

    def _free_for_lossless(self, slot: int, floor: int) -> bool:
        old = int(self._seqs[slot])
        if old == 0 or old & 1:
            return True  # never written, or left unpublished
        if self.ring._has_frame_id and int(self.ring._views[slot]["frame_id"]) >= floor:
            return False  # a member still needs that frame
        return not self.ring.members.held(old)

    def _open(self, n: int) -> bool:
        """Mark slot n % slots as being written (odd), unless a member claimed its item meanwhile."""
        slot = n % self.ring.slots
        old = int(self._seqs[slot])
        self._seqs[slot] = 2 * n + 1
        full_fence()  # the odd seq is visible before we look for claims (ring_members: claim protocol)
        if self.ring.members.held(old):
            self._seqs[slot] = old
            return False
        self._pending = (slot, 2 * n + 2)
        return True

    def commit(self) -> int | None:
        """Publish the slot opened by begin(); returns its seq, or None if its frame_id was stale."""
        if self._pending is None:
            raise RingError(f"ring {self.ring.shm_name}: commit() without begin()")
        slot, seq = self._pending
        self._pending = None
        if self.ring._has_frame_id:
            view = self.ring._views[slot]
            fid = int(view["frame_id"])
            guard, i = self.ring._fid_guard(view)
            if fid <= int(guard[i]):
                return None  # slot stays odd (its old item is gone either way) and is reused next
            guard[i] = fid
            if fid > int(self._last_fid[0]):
                self._last_fid[0] = fid
        commit_no = int(self._commits_total[0]) + 1
        self.ring._commits[slot] = commit_no  # before the even seq: a reader that sees the seq sees this
        self._commits_total[0] = commit_no
        self._seqs[slot] = seq
        self._newest[0] = seq
        self._wake[0] = (int(self._wake[0]) + 1) & 0xFFFFFFFF
        _futex_wake(self.ring._wake_addr)
        return seq

    def abort(self) -> None:
        """Give up the slot opened by begin() without publishing it."""
        self._pending = None

    def write(self, record, timeout: float = 0.0) -> int | None:
        """Copy a whole record (0-d array or np.void of the ring dtype) into the next slot."""
        if record.dtype != self.ring.dtype:
            raise RingError(f"ring {self.ring.shm_name}: record dtype does not match the ring's")
        self.full = False
        if self.ring._has_frame_id:
            guard, i = self.ring._fid_guard(record)
            if int(record["frame_id"]) <= int(guard[i]):
                return None
        view = self.begin(timeout)
        if view is None:
            return None
        view[...] = record
        return self.commit()

    def release(self) -> None:
        """Give up the writer token (on clean exit) so the next generation need not wait."""
        if int(self._writer_gen[0]) == self.generation and int(self._writer_pid[0]) == self._pid:
            self._writer_gen[0] = -1


class RingReader:
    """A cursor over a ring. Policies: 'latest' (newest item) or 'next' (every item in order).

    With a `member` (registered in the ring's member table) every read claims its item first, so
    the writer cannot overwrite it while it is read; a zero-copy item (copy=False) stays claimed
    until `done(item)`, a copied one only while it is copied. The member's taken/done/need fields
    follow the reads (demand, hand-over, lossless back-pressure: `ring_members`)."""

    def __init__(self, ring: Ring, policy: str = "latest", member: RingMember | None = None):
        if policy not in ("latest", "next"):
            raise RingError(f"reader policy must be 'latest' or 'next', got {policy!r}")
        _syscall()  # fail now, not on the first wait, where futexes are missing
        self.ring = ring
        self.policy = policy
        self.member = member
        self.cursor = ring.newest_seq()
        self.overruns = 0
        self.skipped = 0
        self.reads = 0
        self.expect_ns = 0  # member: how long an item takes to process, so producers deliver just in time
        self._returned = self.cursor  # seq of the last item returned (gaps are counted from it)
        # commit number of that item: gaps are counted in commits, which skipped write numbers lack
        self._returned_commit = int(ring._commits[ring.slot_of(self.cursor)]) if self.cursor else 0
        self._newest = ring._f["newest_seq"]
        self._wake = ring._f["wake"]
        self._seqs = ring._seqs
        self._commits = ring._commits
        if member is not None:
            member.took(self.cursor)

    def _try_read(self, copy: bool) -> ReadItem | None:
        ring = self.ring
        slots = ring.slots
        member = self.member
        while True:
            newest = int(self._newest[0])
            if newest <= self.cursor:
                return None
            if self.policy == "latest":
                target = newest
            else:
                # Oldest item still in the ring; if the writer is already overwriting it the
                # seqlock check below drops it.
                target = max(self.cursor + 2, newest - 2 * (slots - 1))
            slot = (target // 2 - 1) % slots
            seq = int(self._seqs[slot])
            if seq == target and (member is None or member.claim(slot, target)):
                view = ring._views[slot]
                record = view.copy() if copy else view
                commit = int(self._commits[slot])
                if int(self._seqs[slot]) == target:
                    gap = max(commit - self._returned_commit - 1, 0)
                    self.skipped += gap
                    self.cursor = self._returned = target
                    self._returned_commit = commit
                    self.reads += 1
                    if member is not None:
                        if copy:
                            member.clear_claim()
                        member.took(target, self.expect_ns)
                    return ReadItem(seq=target, slot=slot, record=record, overwritten_before=gap)
                if member is not None:
                    member.clear_claim()
            elif self.policy == "next" and seq < target:
                # The writer passed this slot over (a member held its older item): write number
                # `target` was skipped and no item ever had that seq. Nothing was lost.
                self.cursor = target
                continue
            # Overwritten before or while we read it: drop it, never return torn data.
            self.overruns += 1
            if self.policy == "next":
                self.cursor = target  # lost; shows up in the next item's overwritten_before

    def done(self, item: ReadItem, frame_id: int | None = None) -> None:
        """The item is fully processed: its claim goes, and (lossless) frames up to `frame_id` too."""
        if self.member is not None:
            self.member.finished(item.seq, frame_id)

    def close(self) -> None:
        """Give the member entry back (what it claimed or pinned is released)."""
        if self.member is not None:
            self.member.close()

    def read(self, timeout: float | None = 0.5, copy: bool = True) -> ReadItem | None:
        """The next item by policy; blocks (without spinning) up to `timeout` s, None on timeout."""
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        while True:
            word = int(self._wake[0])
            item = self._try_read(copy)
            if item is not None:
                return item
            if deadline is None:
                slice_s = WAIT_SLICE_S
            else:
                slice_s = min(deadline - time.monotonic(), WAIT_SLICE_S)
                if slice_s <= 0:
                    return None
            _futex_wait(self.ring._wake_addr, word, slice_s)

    def wait(self, timeout: float | None = 0.5) -> bool:
        """Block until an item newer than the cursor exists (True) or the timeout passes (False)."""
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        while True:
            word = int(self._wake[0])
            if int(self._newest[0]) > self.cursor:
                return True
            slice_s = WAIT_SLICE_S if deadline is None else min(deadline - time.monotonic(), WAIT_SLICE_S)
            if slice_s <= 0:
                return False
            _futex_wait(self.ring._wake_addr, word, slice_s)

    def valid(self, item: ReadItem) -> bool:
        """For copy=False items: True while the slot still holds item.seq (not overwritten)."""
        return int(self._seqs[item.slot]) == item.seq
