"""Recording sink: round trip, crash recovery, clear errors at open."""
import numpy as np
import pytest

from pipeline.sinks.base import SinkError
from pipeline.sinks.recording import RecordingSink, load_recording


def _frames(make_frame, make_person, n):
    rng = np.random.default_rng(5)
    frames = []
    for i in range(n):
        persons = [make_person(t, rng=rng, joints=rng.normal(size=(24, 3)) if t == 1 else None)
                   for t in range(i % 4)]
        frames.append(make_frame(i, persons))
    return frames


def _assert_same(a, b):
    for key in ("frame_id", "t_capture_ns", "generation", "source_epoch", "frame_height", "frame_width",
                "model", "backend", "precision", "untrained", "n_found", "stamps_ns"):
        assert getattr(a, key) == getattr(b, key), key
    assert len(a.persons) == len(b.persons)
    for p, q in zip(a.persons, b.persons):
        assert p.track_id == q.track_id and p.score == pytest.approx(q.score)
        for key in ("box", "global_orient", "body_pose", "betas", "transl", "pred_cam", "joint_uncertainty"):
            assert np.array_equal(getattr(p, key), getattr(q, key)), key
        assert (p.joints is None) == (q.joints is None)
        if p.joints is not None:
            assert np.array_equal(p.joints, q.joints)


def test_round_trip(tmp_path, make_frame, make_person):
    path = tmp_path / "rec.npz"
    frames = _frames(make_frame, make_person, 230)
    sink = RecordingSink(path, chunk_frames=100)
    sink.open()
    for f in frames:
        sink.send(f)
    assert sink.wait_written(10)
    assert sink.stats()["chunks"] == 2 and sink.stats()["buffered"] == 30
    sink.close()
    sink.close()  # idempotent
    assert path.is_file() and not (tmp_path / "rec.npz.parts").exists()
    rec = load_recording(path)
    assert rec.complete and len(rec) == 230
    for a, b in zip(frames, rec.frames()):
        _assert_same(a, b)
    tr = rec.track(2)
    assert len(tr["frame_id"]) == sum(1 for f in frames if len(f.persons) > 2)
    assert rec.track_ids() == [0, 1, 2]


def test_crash_loses_at_most_the_last_chunk(tmp_path, make_frame, make_person):
    path = tmp_path / "crash.npz"
    sink = RecordingSink(path, chunk_frames=50)
    sink.open()
    for f in _frames(make_frame, make_person, 170):
        sink.send(f)
    assert sink.wait_written(10)
    # no close(): as if the publisher died here
    rec = load_recording(path)
    assert not rec.complete and len(rec) == 150
    with pytest.raises(SinkError, match="interrupted"):
        RecordingSink(path).open()


def test_unwritable_or_bad_paths_fail_at_open(tmp_path):
    with pytest.raises(SinkError, match="does not exist"):
        RecordingSink(tmp_path / "missing" / "rec.npz").open()
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    with pytest.raises(SinkError, match="not a folder"):
        RecordingSink(afile / "rec.npz").open()
    with pytest.raises(SinkError, match="cannot write"):
        RecordingSink("/proc/posepipe-rec.npz").open()  # exists, but nothing can be created there
    with pytest.raises(SinkError, match=".npz"):
        RecordingSink(tmp_path / "rec.json").open()
    (tmp_path / "old.npz").write_bytes(b"")
    with pytest.raises(SinkError, match="already exists"):
        RecordingSink(tmp_path / "old.npz").open()


def test_load_rejects_foreign_files(tmp_path):
    bad = tmp_path / "other.npz"
    np.savez(bad, x=np.zeros(3))
    with pytest.raises(ValueError, match="not a posepipe recording"):
        load_recording(bad)
    with pytest.raises(FileNotFoundError):
        load_recording(tmp_path / "none.npz")


def test_registry_builds_my_sinks(tmp_path):
    from pipeline.sinks import build_sink
    from pipeline.sinks.remi import RemiSink
    from pipeline.sinks.vmc import VmcSink
    from pipeline.sinks.recording import RecordingSink as R
    assert isinstance(build_sink("remi", {"port": 9999, "translation": "full"}), RemiSink)
    assert isinstance(build_sink("vmc", {"port": 39539}), VmcSink)
    assert isinstance(build_sink("recording", {"path": str(tmp_path / "r.npz")}), R)
    with pytest.raises(SinkError, match="not a known option"):
        build_sink("remi", {"colour": 1})


class FailingDisk:
    """Stands in for os.fsync: fails with ENOSPC (or hangs first, like a dying disk) until healed."""

    def __init__(self, hang_s=0.0):
        import os
        self.real, self.hang_s, self.failing, self.calls = os.fsync, hang_s, True, 0

    def __call__(self, fd):
        import errno
        import time
        self.calls += 1
        if not self.failing:
            return self.real(fd)
        time.sleep(self.hang_s)
        raise OSError(errno.ENOSPC, "No space left on device")


def test_failing_disk_never_blocks_the_publisher(tmp_path, make_frame, make_person, monkeypatch):
    import time

    from pipeline.sinks import recording as rec_mod
    path = tmp_path / "disk.npz"
    sink = RecordingSink(path, chunk_frames=20, max_pending_chunks=3, retry_initial=0.05, retry_max=0.4)
    sink.open()
    frames = _frames(make_frame, make_person, 1000)
    for f in frames[:40]:
        sink.send(f)
    assert sink.wait_written(10)
    disk = FailingDisk(hang_s=0.5)          # each write now hangs 0.5 s, then fails
    monkeypatch.setattr(rec_mod.os, "fsync", disk)
    t0 = time.perf_counter()
    for f in frames[40:940]:                # 45 chunks; writing them in send() would take >= 22 s
        sink.send(f)
    send_s = time.perf_counter() - t0
    disk.hang_s = 0.0                       # now it fails at once: only the back-off spaces the retries
    time.sleep(0.6)
    calls0 = disk.calls
    time.sleep(1.5)
    retries = disk.calls - calls0
    st = sink.stats()
    print(f"\n900 sends with a hanging, failing disk: {send_s * 1000:.0f} ms; {retries} write attempts "
          f"in 1.5 s (back-off to 0.4 s); {st}")
    assert send_s < 1.0, send_s             # the publisher's thread never waited for the disk
    assert 2 <= retries <= 8, retries       # retried with back-off, not in a tight loop
    assert disk.calls - 1 <= st["write_errors"] <= disk.calls and st["chunks"] == 2
    # bounded memory: the chunk in flight + 3 waiting + the unfinished one; older ones dropped
    assert st["buffered"] <= 5 * 20 and st["dropped"] == 900 - st["buffered"]
    assert st["frames"] == 940
    disk.failing = False                    # the disk has room again
    for f in frames[940:]:
        sink.send(f)
    sink.close()
    dropped = sink.stats()["dropped"]       # chunks sent while the writer still backed off count too
    rec = load_recording(path)
    assert rec.complete and len(rec) == 1000 - dropped
    ids = [int(x) for x in rec["frame_id"]]
    assert ids[:40] == list(range(40)) and ids == sorted(ids) and ids[-20:] == list(range(980, 1000))
    by_id = {f.frame_id: f for f in frames}
    for i, b in zip(ids, rec.frames()):     # whole chunks kept, person rows still point at their frames
        _assert_same(by_id[i], b)


def test_close_streams_the_chunks_and_gives_up_on_a_dead_disk(tmp_path, make_frame, make_person, monkeypatch):
    from pipeline.sinks import recording as rec_mod

    def whole_recording_in_memory(*a, **k):
        raise AssertionError("close() must not load the whole recording")

    monkeypatch.setattr(rec_mod, "_load_parts", whole_recording_in_memory)
    frames = _frames(make_frame, make_person, 75)
    sink = RecordingSink(tmp_path / "a.npz", chunk_frames=10)
    sink.open()
    for f in frames:
        sink.send(f)
    sink.close()
    monkeypatch.undo()
    rec = load_recording(tmp_path / "a.npz")
    assert rec.complete and len(rec) == 75
    for a, b in zip(frames, rec.frames()):
        _assert_same(a, b)

    sink = RecordingSink(tmp_path / "b.npz", chunk_frames=10, retry_initial=0.05, close_timeout=0.5)
    sink.open()
    for f in frames[:30]:
        sink.send(f)
    assert sink.wait_written(10)
    monkeypatch.setattr(rec_mod.os, "fsync", FailingDisk())
    for f in frames[30:]:
        sink.send(f)
    sink.close()                            # returns after close_timeout; what was saved stays
    monkeypatch.undo()
    rec = load_recording(tmp_path / "b.npz")
    assert not rec.complete and len(rec) == 30
