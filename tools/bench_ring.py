"""Benchmark the frames transport: posepipe ring vs multiprocessing.Queue vs pyzmq (architecture.md §2).

Writer and reader are separate spawned processes for every transport. Each transport runs
twice: *saturated* (the writer sends as fast as it can; throughput = frames the reader got
per second) and *paced* (the writer sends at --paced-fps, like a camera; hand-off latency
without CPU starvation). Latency = reader's time.monotonic_ns() when it holds the frame
minus the writer's time.monotonic_ns() stamped just before the hand-off:
  ring   writer fills the slot's pixels, stamps, commit(); reader read(copy=False)
         (zero-copy view, as detection/inference use it) or, with --reader-copy, a copy
  queue  writer stamps, Queue.put((stamp, frame)); reader Queue.get()
  zmq    writer stamps, PUSH send_multipart([stamp, frame buffer], copy=False) over ipc://;
         reader PULL recv_multipart(copy=False) + np.frombuffer (zero-copy view)

    python tools/bench_ring.py --seconds 3
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue as queue_mod
import sys
import tempfile
import time
import uuid

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipeline.runtime.records import frames_dtype  # noqa: E402
from pipeline.runtime.ring import Ring  # noqa: E402

CTX = mp.get_context("spawn")


def _frame(h: int, w: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)


def _pace(next_t: float, period: float) -> float:
    if period > 0:
        delay = next_t - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        return max(next_t + period, time.monotonic())
    return next_t


def _send_for(seconds: float, period: float, go, send) -> int:
    """Once `go` is set, call send(n) for n = 0, 1, ... for `seconds`, at most once per `period`
    (0: as fast as it returns); how many were sent. Every writer paces the same way."""
    go.wait()
    end = time.monotonic() + seconds
    next_t = time.monotonic()
    n = 0
    while time.monotonic() < end:
        next_t = _pace(next_t, period)
        send(n)
        n += 1
    return n


# ---- ring ---------------------------------------------------------------------------------------
def ring_writer(shm_name, h, w, seconds, period, go, done):
    ring = Ring.attach(shm_name)
    wr = ring.writer(0)
    src = _frame(h, w)

    def send(fid):
        rec = wr.begin()
        rec["pixels"][:h, :w] = src
        rec["height"], rec["width"], rec["frame_id"] = h, w, fid
        rec["t_capture_ns"] = time.monotonic_ns()
        wr.commit()

    done.put(_send_for(seconds, period, go, send))
    ring.close()


def ring_reader(shm_name, seconds, copy, go, out):
    ring = Ring.attach(shm_name)
    rd = ring.reader("next")
    lat = []
    go.wait()
    end = time.monotonic() + seconds + 0.3
    while time.monotonic() < end:
        item = rd.read(timeout=0.1, copy=copy)
        if item is None:
            continue
        t = time.monotonic_ns()
        lat.append(t - int(item.record["t_capture_ns"]))
        int(item.record["pixels"][0, 0, 0])
    out.put((np.asarray(lat, np.int64).tobytes(), rd.overruns, rd.skipped))
    del item
    ring.close()


# ---- multiprocessing.Queue ----------------------------------------------------------------------
def queue_writer(q, h, w, seconds, period, go, done):
    src = _frame(h, w)
    n = _send_for(seconds, period, go, lambda _n: q.put((time.monotonic_ns(), src)))
    q.put(None)
    done.put(n)


def queue_reader(q, seconds, copy, go, out):
    lat = []
    go.wait()
    end = time.monotonic() + seconds + 5
    while time.monotonic() < end:
        try:
            msg = q.get(timeout=0.5)
        except queue_mod.Empty:
            continue
        if msg is None:
            break
        lat.append(time.monotonic_ns() - msg[0])
    out.put((np.asarray(lat, np.int64).tobytes(), 0, 0))


# ---- pyzmq --------------------------------------------------------------------------------------
def zmq_writer(endpoint, h, w, seconds, period, go, done):
    import zmq
    ctx = zmq.Context()
    s = ctx.socket(zmq.PUSH)
    s.setsockopt(zmq.SNDHWM, 4)
    s.setsockopt(zmq.LINGER, 2000)
    s.connect(endpoint)
    src = _frame(h, w)
    n = _send_for(seconds, period, go,
                  lambda _n: s.send_multipart([np.int64(time.monotonic_ns()).tobytes(), src], copy=False))
    s.send_multipart([b"", b""])
    done.put(n)
    s.close()
    ctx.term()


def zmq_reader(endpoint, h, w, seconds, copy, go, out):
    import zmq
    ctx = zmq.Context()
    s = ctx.socket(zmq.PULL)
    s.setsockopt(zmq.RCVHWM, 4)
    s.bind(endpoint)
    lat = []
    go.wait()
    end = time.monotonic() + seconds + 5
    while time.monotonic() < end:
        if not s.poll(500):
            continue
        stamp, buf = s.recv_multipart(copy=False)
        if not len(stamp.bytes):
            break
        t = time.monotonic_ns()
        img = np.frombuffer(buf.buffer, np.uint8).reshape(h, w, 3)
        if copy:
            img = img.copy()
            t = time.monotonic_ns()
        lat.append(t - int(np.frombuffer(stamp.bytes, np.int64)[0]))
    out.put((np.asarray(lat, np.int64).tobytes(), 0, 0))
    s.close(linger=0)
    ctx.term()


def run_one(kind: str, args, period: float) -> dict:
    go, done, out = CTX.Event(), CTX.Queue(), CTX.Queue()
    h, w = args.height, args.width
    cleanup = None
    if kind == "ring":
        ring = Ring.create("frames", frames_dtype(h, w), args.slots, "bench" + uuid.uuid4().hex[:8])
        wp = CTX.Process(target=ring_writer, args=(ring.shm_name, h, w, args.seconds, period, go, done))
        rp = CTX.Process(target=ring_reader, args=(ring.shm_name, args.seconds, args.reader_copy, go, out))

        def cleanup():
            ring.close()
            ring.unlink()
    elif kind == "queue":
        q = CTX.Queue(maxsize=args.slots)
        wp = CTX.Process(target=queue_writer, args=(q, h, w, args.seconds, period, go, done))
        rp = CTX.Process(target=queue_reader, args=(q, args.seconds, args.reader_copy, go, out))
    else:
        tmp = tempfile.mkdtemp(prefix="posepipe-bench-")
        endpoint = f"ipc://{tmp}/frames.ipc"
        wp = CTX.Process(target=zmq_writer, args=(endpoint, h, w, args.seconds, period, go, done))
        rp = CTX.Process(target=zmq_reader, args=(endpoint, h, w, args.seconds, args.reader_copy, go, out))

        def cleanup():
            try:
                os.unlink(f"{tmp}/frames.ipc")
            except FileNotFoundError:
                pass
            os.rmdir(tmp)
    rp.start()
    wp.start()
    time.sleep(1.5)  # imports, attach/bind/connect
    t0 = time.monotonic()
    go.set()
    sent = done.get(timeout=args.seconds + 60)
    lat_b, overruns, skipped = out.get(timeout=args.seconds + 60)
    elapsed = time.monotonic() - t0
    wp.join(10)
    rp.join(10)
    if cleanup:
        cleanup()
    lat = np.frombuffer(lat_b, np.int64) / 1e6
    received = len(lat)
    return {
        "kind": kind, "sent": sent, "received": received, "fps": received / min(elapsed, args.seconds),
        "p50": float(np.percentile(lat, 50)) if received else float("nan"),
        "p99": float(np.percentile(lat, 99)) if received else float("nan"),
        "overruns": overruns, "skipped": skipped,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="duration per transport and mode")
    ap.add_argument("--height", type=int, default=1080)
    ap.add_argument("--width", type=int, default=1920)
    ap.add_argument("--slots", type=int, default=4, help="ring slots / queue size / zmq HWM")
    ap.add_argument("--paced-fps", type=float, default=60.0, help="writer rate of the latency run (0: skip)")
    ap.add_argument("--reader-copy", action="store_true", help="readers copy each frame out")
    ap.add_argument("--transports", default="ring,queue,zmq")
    args = ap.parse_args(argv)
    kinds = [k.strip() for k in args.transports.split(",") if k.strip()]
    bad = set(kinds) - {"ring", "queue", "zmq"}
    if bad:
        ap.error(f"unknown transport(s) {sorted(bad)}; choose from ring, queue, zmq")
    if args.seconds <= 0 or args.height <= 0 or args.width <= 0 or args.slots < 2:
        ap.error("--seconds, --height, --width must be positive and --slots >= 2")
    print(f"frames {args.width}x{args.height} RGB ({args.height * args.width * 3 / 2**20:.1f} MiB), "
          f"{args.seconds:g} s per run, cpus={os.cpu_count()}, reader_copy={args.reader_copy}")
    modes = [("saturated", 0.0)] + ([(f"paced {args.paced_fps:g} fps", 1.0 / args.paced_fps)]
                                    if args.paced_fps > 0 else [])
    results = {}
    for mode, period in modes:
        print(f"\n{mode}:")
        print(f"  {'transport':<9} {'sent':>7} {'recv':>7} {'recv fps':>9} {'p50 ms':>8} {'p99 ms':>8}"
              f" {'overruns':>8} {'skipped':>8}")
        for kind in kinds:
            r = run_one(kind, args, period)
            results[(mode, kind)] = r
            print(f"  {kind:<9} {r['sent']:>7} {r['received']:>7} {r['fps']:>9.1f} {r['p50']:>8.3f} "
                  f"{r['p99']:>8.3f} {r['overruns']:>8} {r['skipped']:>8}", flush=True)
        if "ring" in kinds:
            ring = results[(mode, "ring")]
            for other in ("queue", "zmq"):
                if other in kinds:
                    o = results[(mode, other)]
                    print(f"  ring/{other}: throughput x{ring['fps'] / max(o['fps'], 1e-9):.1f}, "
                          f"p99 latency x{o['p99'] / max(ring['p99'], 1e-9):.1f} lower")
    return 0


if __name__ == "__main__":
    sys.exit(main())
