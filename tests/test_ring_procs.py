"""The ring across real OS processes (spawn context): torn reads, kills, stale cleanup, hand-over."""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time

import numpy as np

from pipeline.runtime.ring import Ring

PAYLOAD = 16384  # 64 KiB of uint32 per record: big enough that a copy can race a rewrite
DTYPE = np.dtype([("frame_id", "<i8"), ("generation", "<i4"), ("payload", "<u4", (PAYLOAD,))], align=True)
CTX = mp.get_context("spawn")


def _expected(seq: int) -> np.ndarray:
    return (np.arange(PAYLOAD, dtype=np.uint32) * np.uint32(2654435761)) ^ np.uint32(seq & 0xFFFFFFFF)


def _writer_proc(shm_name: str, seconds: float, generation: int, ready) -> None:
    ring = Ring.attach(shm_name)
    w = ring.writer(generation)
    ready.wait(10)
    end = time.monotonic() + seconds
    base = _expected(0)
    fid = 0
    while time.monotonic() < end:
        rec = w.begin()
        seq = ring.newest_seq() + 2  # the seq this write will get
        rec["frame_id"] = fid
        # Fill in two halves so a reader overlapping the write would see a mix.
        np.bitwise_xor(base[: PAYLOAD // 2], np.uint32(seq), out=rec["payload"][: PAYLOAD // 2])
        np.bitwise_xor(base[PAYLOAD // 2:], np.uint32(seq), out=rec["payload"][PAYLOAD // 2:])
        assert w.commit() == seq
        fid += 1
    ring.close()


def _reader_proc(shm_name: str, policy: str, seconds: float, ready, out) -> None:
    ring = Ring.attach(shm_name)
    r = ring.reader(policy)
    ready.wait(10)
    base = _expected(0)
    end = time.monotonic() + seconds
    reads = mismatches = 0
    last = 0
    order_ok = True
    while time.monotonic() < end:
        item = r.read(timeout=0.2)
        if item is None:
            continue
        reads += 1
        want = base ^ np.uint32(item.seq)
        if not np.array_equal(item.record["payload"], want) or int(item.record["frame_id"]) != item.seq // 2 - 1:
            mismatches += 1
        if item.seq <= last:
            order_ok = False
        last = item.seq
    out.put((policy, reads, mismatches, r.overruns, r.skipped, order_ok))
    ring.close()


def test_concurrent_full_speed_never_tears(run_id):
    ring = Ring.create("torn", DTYPE, 4, run_id)  # few slots: overruns are likely, torn data must not be
    ready = CTX.Event()
    out = CTX.Queue()
    seconds = 2.0
    procs = [CTX.Process(target=_writer_proc, args=(ring.shm_name, seconds, 0, ready))]
    procs += [CTX.Process(target=_reader_proc, args=(ring.shm_name, p, seconds + 0.3, ready, out))
              for p in ("latest", "next")]
    for p in procs:
        p.start()
    time.sleep(1.0)  # let the children import and attach
    ready.set()
    results = [out.get(timeout=30) for _ in range(2)]
    for p in procs:
        p.join(10)
        assert p.exitcode == 0
    total_written = ring.newest_seq() // 2
    ring.close()
    ring.unlink()
    assert total_written > 500
    for policy, reads, mismatches, overruns, skipped, order_ok in results:
        assert mismatches == 0, f"{policy}: {mismatches} torn reads"
        assert order_ok
        assert reads > 100, f"{policy} reader only got {reads} items"
        assert reads + skipped <= total_written
        print(f"{policy}: written={total_written} reads={reads} overruns={overruns} skipped={skipped}")


def _attach_and_hang(shm_name: str, ready) -> None:
    ring = Ring.attach(shm_name)
    ring.reader("latest")
    ready.set()
    time.sleep(60)


def test_sigkilled_reader_does_not_unlink(run_id):
    ring = Ring.create("kill", DTYPE, 2, run_id)
    ready = CTX.Event()
    p = CTX.Process(target=_attach_and_hang, args=(ring.shm_name, ready))
    p.start()
    assert ready.wait(20)
    os.kill(p.pid, signal.SIGKILL)
    p.join(10)
    time.sleep(0.3)  # give a resource tracker the chance to (wrongly) act
    assert os.path.exists(f"/dev/shm/{ring.shm_name}")
    again = Ring.attach(ring.shm_name)
    again.close()
    ring.close()
    ring.unlink()
    assert not os.path.exists(f"/dev/shm/{ring.shm_name}")


def _create_and_exit(run_id: str) -> None:
    Ring.create("orphan", DTYPE, 2, run_id)  # never unlinked: as if the supervisor was killed


def test_cleanup_stale_removes_blocks_of_dead_creator(run_id):
    p = CTX.Process(target=_create_and_exit, args=(run_id,))
    p.start()
    p.join(20)
    name = f"posepipe-{run_id}-orphan"
    assert os.path.exists(f"/dev/shm/{name}")
    live = Ring.create("alive", DTYPE, 2, run_id)  # our own, creator alive: must survive
    removed = Ring.cleanup_stale()
    assert name in removed and live.shm_name not in removed
    assert not os.path.exists(f"/dev/shm/{name}")
    assert os.path.exists(f"/dev/shm/{live.shm_name}")
    assert Ring.cleanup_stale(run_id=run_id) == [live.shm_name]
    live.close()


def _gen_writer(shm_name: str, generation: int, start_fid: int, stop, wrote) -> None:
    """Writes frame ids from start_fid at ~1 kHz whenever it holds the token."""
    ring = Ring.attach(shm_name)
    w = ring.writer(generation)
    fid = start_fid
    n = 0
    while not stop.is_set():
        rec = w.begin()
        if rec is not None:
            rec["frame_id"] = fid
            rec["generation"] = generation
            if w.commit() is not None:
                n += 1
        fid += 1
        time.sleep(0.001)
    w.release()
    wrote.put((generation, n))
    ring.close()


def test_ownership_hand_over_between_processes(run_id):
    ring = Ring.create("swap", DTYPE, 64, run_id)
    ring.set_owner(1)
    reader = ring.reader("next")
    stop_old, stop_new = CTX.Event(), CTX.Event()
    wrote = CTX.Queue()
    old = CTX.Process(target=_gen_writer, args=(ring.shm_name, 1, 0, stop_old, wrote))
    # The new generation processes the same input: its frame ids overlap the old one's.
    new = CTX.Process(target=_gen_writer, args=(ring.shm_name, 2, 0, stop_new, wrote))
    got = []

    def drain(seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            item = reader.read(timeout=0.05)
            if item is not None:
                got.append((int(item.record["frame_id"]), int(item.record["generation"])))

    old.start()
    new.start()
    drain(1.5)
    ring.set_owner(2)  # make-before-break: both run, the token moves
    drain(0.7)
    stop_old.set()
    drain(0.5)
    stop_new.set()
    for p in (old, new):
        p.join(10)
        assert p.exitcode == 0
    drain(0.1)
    ring.close()
    ring.unlink()
    fids = [f for f, _ in got]
    gens = [g for _, g in got]
    assert reader.overruns == 0 and reader.skipped == 0
    assert all(b > a for a, b in zip(fids, fids[1:])), "frame ids must strictly increase"
    assert 1 in gens and 2 in gens
    assert gens == sorted(gens), "after the hand-over only the new generation writes"
