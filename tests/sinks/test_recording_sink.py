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
    assert sink.stats()["chunks"] == 2
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
