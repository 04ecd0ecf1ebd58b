"""In-process unit tests of the shared-memory ring (architecture.md §2)."""
from __future__ import annotations

import os
import time
from multiprocessing import shared_memory

import numpy as np
import pytest

from pipeline.runtime.records import detections_dtype, frames_dtype, poses_dtype
from pipeline.runtime.ring import Ring, RingError, RingReader, RingWriter

SIMPLE = np.dtype([("frame_id", "<i8"), ("value", "<f8"), ("payload", "<u4", (16,))], align=True)


def _shm_entries(run_id: str) -> list[str]:
    return [e for e in os.listdir("/dev/shm") if e.startswith(f"posepipe-{run_id}-")]


@pytest.fixture
def ring(run_id):
    r = Ring.create("simple", SIMPLE, 4, run_id)
    yield r
    r.close()
    r.unlink()


def _put(w: RingWriter, fid: int) -> int | None:
    rec = np.zeros((), SIMPLE)
    rec["frame_id"] = fid
    rec["value"] = fid * 0.5
    rec["payload"][:] = fid
    return w.write(rec)


def test_create_attach_unlink(run_id):
    r = Ring.create("frames", frames_dtype(8, 12), 3, run_id)
    assert r.shm_name == f"posepipe-{run_id}-frames"
    assert _shm_entries(run_id) == [r.shm_name]
    a = Ring.attach(r.shm_name)
    assert (a.slots, a.dtype) == (3, r.dtype)
    assert a.creator_pid == os.getpid()
    a.close()
    a.close()  # idempotent
    r.close()
    r.unlink()
    r.unlink()  # idempotent, no error when gone
    assert _shm_entries(run_id) == []
    with pytest.raises(RingError, match="does not exist"):
        Ring.attach(r.shm_name)


@pytest.mark.parametrize("dtype", [frames_dtype(4, 6), detections_dtype(3), poses_dtype(5), SIMPLE])
def test_dtype_round_trip(run_id, dtype):
    r = Ring.create("rt", dtype, 2, run_id)
    a = Ring.attach(r.shm_name)
    assert a.dtype == dtype and a.dtype.itemsize == dtype.itemsize
    assert all(a.dtype.fields[n][1] == dtype.fields[n][1] for n in dtype.names)
    rec = np.zeros((), dtype)
    rec["frame_id"] = 7
    r.writer(0).write(rec)
    got = a.slot_record(r.slot_of(r.newest_seq()))
    assert got.tobytes() == rec.tobytes()
    a.close()
    r.close()
    r.unlink()


def test_bad_inputs(run_id, ring):
    with pytest.raises(RingError, match="already exists"):
        Ring.create("simple", SIMPLE, 4, run_id)
    with pytest.raises(RingError, match="name"):
        Ring.create("bad/name", SIMPLE, 4, run_id)
    with pytest.raises(RingError, match="slots"):
        Ring.create("x", SIMPLE, 1, run_id)
    with pytest.raises(RingError, match="policy"):
        ring.reader("oldest")
    with pytest.raises(RingError, match="dtype"):
        ring.writer(0).write(np.zeros((), frames_dtype(2, 2)))
    # a foreign block with our prefix is refused, not misread
    foreign = shared_memory.SharedMemory(name=f"posepipe-{run_id}-foreign", create=True, size=8192)
    try:
        with pytest.raises(RingError, match="not a posepipe ring"):
            Ring.attach(foreign.name)
    finally:
        foreign.close()
        foreign.unlink()


def test_seq_scheme_and_slot_access(ring):
    w = ring.writer(0)
    assert ring.newest_seq() == 0
    seqs = [_put(w, i) for i in range(6)]
    assert seqs == [2, 4, 6, 8, 10, 12]
    assert ring.newest_seq() == 12
    for s in seqs[-4:]:  # the last `slots` items are still there
        slot = ring.slot_of(s)
        assert ring.slot_seq(slot) == s
        assert int(ring.slot_record(slot)["frame_id"]) == s // 2 - 1


def test_begin_commit_zero_copy_and_odd_while_writing(ring):
    w = ring.writer(0)
    rec = w.begin()
    slot = ring.slot_of(2)
    assert ring.slot_seq(slot) % 2 == 1  # write in progress
    rec["frame_id"] = 0
    rec["payload"][:] = 9
    reader = ring.reader("next")
    assert reader.read(timeout=0) is None  # nothing committed yet
    assert w.commit() == 2
    item = reader.read(timeout=0, copy=False)
    assert item.seq == 2 and int(item.record["payload"][3]) == 9
    assert reader.valid(item)
    with pytest.raises(RingError, match="without begin"):
        w.commit()


def test_reader_starts_at_newest(ring):
    w = ring.writer(0)
    _put(w, 0)
    _put(w, 1)
    r = ring.reader("next")
    assert r.read(timeout=0) is None
    _put(w, 2)
    assert int(r.read(timeout=0).record["frame_id"]) == 2


def test_latest_policy_skips(ring):
    w = ring.writer(0)
    r = ring.reader("latest")
    for i in range(3):
        _put(w, i)
    item = r.read(timeout=0)
    assert int(item.record["frame_id"]) == 2
    assert item.overwritten_before == 2 and r.skipped == 2 and r.overruns == 0
    assert r.read(timeout=0) is None
    _put(w, 3)
    item = r.read(timeout=0)
    assert int(item.record["frame_id"]) == 3 and item.overwritten_before == 0


def test_next_policy_in_order_and_reports_losses(ring):
    w = ring.writer(0)
    r = ring.reader("next")
    for i in range(3):
        _put(w, i)
    assert [int(r.read(timeout=0).record["frame_id"]) for _ in range(3)] == [0, 1, 2]
    assert r.skipped == 0
    for i in range(3, 13):  # 10 items into 4 slots: the 6 oldest are overwritten
        _put(w, i)
    item = r.read(timeout=0)
    assert int(item.record["frame_id"]) == 9 and item.overwritten_before == 6
    assert [int(r.read(timeout=0).record["frame_id"]) for _ in range(3)] == [10, 11, 12]
    assert r.skipped == 6 and r.overruns == 0


def test_next_policy_overrun_on_slot_being_rewritten(ring):
    w = ring.writer(0)
    r = ring.reader("next")
    for i in range(4):
        _put(w, i)
    rec = w.begin()  # the writer starts overwriting the oldest slot (frame 0)
    item = r.read(timeout=0)
    assert int(item.record["frame_id"]) == 1  # frame 0 was dropped, never returned torn
    assert r.overruns == 1 and item.overwritten_before == 1
    rec["frame_id"] = 4
    w.commit()


def test_copy_false_view_invalidated_by_overwrite(ring):
    w = ring.writer(0)
    r = ring.reader("next")
    _put(w, 0)
    item = r.read(timeout=0, copy=False)
    assert r.valid(item)
    for i in range(1, 5):
        _put(w, i)
    assert not r.valid(item)  # the view now shows another item; the caller must drop its result


def test_wait_timeout_does_not_spin(ring):
    r = ring.reader("latest")
    cpu0, t0 = time.process_time(), time.monotonic()
    assert r.read(timeout=1.0) is None
    waited, cpu = time.monotonic() - t0, time.process_time() - cpu0
    assert 0.95 <= waited < 1.3
    assert cpu < 0.02, f"read() burnt {cpu:.3f} s CPU while waiting 1 s"
    assert r.wait(timeout=0.05) is False


def test_frame_ids_strictly_increase(ring):
    w = ring.writer(0)
    assert _put(w, 5) == 2
    assert _put(w, 5) is None  # duplicate
    assert _put(w, 3) is None  # older
    rec = w.begin()
    rec["frame_id"] = 4
    assert w.commit() is None  # stale via the zero-copy path too
    assert _put(w, 6) == 4
    assert ring.last_frame_id == 6


def test_ownership_hand_over_in_process(ring):
    old, new = ring.writer(1), ring.writer(2)
    ring.set_owner(1)
    assert old.may_write() and not new.may_write()
    assert _put(old, 0) == 2 and _put(new, 1) is None
    ring.set_owner(2)
    assert not new.may_write()  # old still holds the token until it notices
    assert _put(old, 1) is None  # old notices and releases
    assert ring.writer_generation == -1
    assert _put(new, 1) == 4
    assert ring.writer_generation == 2
    new.release()
    assert ring.writer_generation == -1


def test_close_with_live_view_does_not_raise(run_id):
    r = Ring.create("lv", SIMPLE, 2, run_id)
    view = r.slot_record(0)
    r.close()
    del view
    r.unlink()
    with pytest.raises(RingError, match="closed"):
        r.reader()


def test_reader_and_writer_types(ring):
    assert isinstance(ring.reader(), RingReader)
    assert isinstance(ring.writer(0), RingWriter)


@pytest.mark.parametrize("machine", ["aarch64", "arm64", "armv7l", "ppc64le", "riscv64", ""])
def test_machines_without_proven_ordering_are_refused(monkeypatch, run_id, ring, machine):
    """Issue 21 item 6: the seqlock relies on x86-64 ordering; ARM (Jetson, GH200) would get torn
    reads, so both creating and attaching a ring refuse, saying why and what to do."""
    import pipeline.runtime.ring as ring_mod

    monkeypatch.setattr(ring_mod.platform, "machine", lambda: machine)
    with pytest.raises(RingError, match=r"not supported on .*x86-64 memory ordering.*torn frame.*x86-64 Linux"):
        Ring.create("other", SIMPLE, 4, run_id)
    with pytest.raises(RingError, match="x86-64"):
        Ring.attach(ring.shm_name)
    assert _shm_entries(run_id) == [ring.shm_name]   # nothing was created


@pytest.mark.parametrize("machine", ["x86_64", "AMD64"])
def test_x86_64_is_accepted(monkeypatch, run_id, machine):
    import pipeline.runtime.ring as ring_mod

    monkeypatch.setattr(ring_mod.platform, "machine", lambda: machine)
    r = Ring.create("ok", SIMPLE, 4, run_id)
    r.close()
    r.unlink()
