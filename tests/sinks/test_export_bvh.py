"""BVH export of a recorded track, checked with a minimal BVH parser written here."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.pose.rotations import FLIP_YZ, axis_angle_to_rotmat, euler_to_rotmat
from pipeline.sinks.recording import RecordingSink
from pipeline.pose.skeleton import JOINT_NAMES

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("export_bvh", ROOT / "tools" / "export_bvh.py")
export_bvh_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(export_bvh_mod)


def parse_bvh(text):
    """Joints (name, channels, offset) in file order, frame count, frame time, motion (F, C)."""
    tokens = text.split()
    i, joints, stack = 0, [], []
    assert tokens[0] == "HIERARCHY"
    i = 1
    while tokens[i] != "MOTION":
        t = tokens[i]
        if t in ("ROOT", "JOINT"):
            joints.append({"name": tokens[i + 1], "channels": [], "offset": None})
            stack.append("joint")
            i += 2
        elif t == "End":
            assert tokens[i + 1] == "Site"
            stack.append("end")
            i += 2
        elif t == "{":
            i += 1
        elif t == "}":
            stack.pop()
            i += 1
        elif t == "OFFSET":
            off = [float(x) for x in tokens[i + 1:i + 4]]
            if stack[-1] == "joint":
                joints[-1]["offset"] = off
            i += 4
        elif t == "CHANNELS":
            n = int(tokens[i + 1])
            joints[-1]["channels"] = tokens[i + 2:i + 2 + n]
            i += 2 + n
        else:
            raise AssertionError(f"unexpected token {t!r}")
    assert not stack
    assert tokens[i + 1] == "Frames:"
    frames = int(tokens[i + 2])
    assert tokens[i + 3] == "Frame" and tokens[i + 4] == "Time:"
    frame_time = float(tokens[i + 5])
    motion = np.array([float(x) for x in tokens[i + 6:]])
    n_channels = sum(len(j["channels"]) for j in joints)
    assert motion.size == frames * n_channels
    return joints, frames, frame_time, motion.reshape(frames, n_channels)


def _record(tmp_path, make_frame, make_person, poses, dt_ns=40_000_000):
    path = tmp_path / "rec.npz"
    sink = RecordingSink(path, chunk_frames=16)
    sink.open()
    for i, (go, bp) in enumerate(poses):
        sink.send(make_frame(i, [make_person(7, global_orient=go, body_pose=bp, transl=[0.1, 0.2, 4.0])],
                             t_capture_ns=10**9 + i * dt_ns))
    sink.close()
    return path


@pytest.mark.parametrize("order", ["ZXY", "XYZ"])
def test_bvh_parses_and_rotations_round_trip(tmp_path, make_frame, make_person, order):
    rng = np.random.default_rng(11)
    poses = []
    for i in range(20):
        bp = rng.normal(0, 0.4, 69)
        poses.append((rng.normal(0, 0.5, 3) + [np.pi, 0, 0], bp))
    elbow = np.zeros(69)
    elbow[(19 - 1) * 3 + 1] = np.pi / 2  # right elbow 90 degrees about y
    poses.append(([np.pi, 0, 0], elbow))
    path = _record(tmp_path, make_frame, make_person, poses)
    out = tmp_path / "out.bvh"
    summary = export_bvh_mod.export_bvh(path, out, order=order)
    joints, frames, frame_time, motion = parse_bvh(out.read_text())
    assert summary["track_id"] == 7
    assert frames == len(poses) and len(joints) == 24
    assert sorted(j["name"] for j in joints) == sorted(JOINT_NAMES)
    assert joints[0]["channels"][:3] == ["Xposition", "Yposition", "Zposition"]
    assert all(len(j["channels"]) == 3 for j in joints[1:])
    assert frame_time == pytest.approx(0.04)
    assert np.all(np.isfinite(motion))
    # every joint's Euler channels rebuild the recorded rotation
    col = {}
    c = 0
    for j in joints:
        col[j["name"]] = c
        c += len(j["channels"])
    for f, (go, bp) in enumerate(poses):
        aa = np.concatenate([np.asarray(go).reshape(1, 3), np.asarray(bp).reshape(23, 3)])
        expect = axis_angle_to_rotmat(aa)
        expect[0] = FLIP_YZ @ expect[0]
        for jn, name in enumerate(JOINT_NAMES):
            start = col[name] + (3 if jn == 0 else 0)
            R = euler_to_rotmat(np.radians(motion[f, start:start + 3]), order)
            assert np.allclose(R, expect[jn], atol=1e-4), (f, name)
    last = motion[-1, col["right_elbow"]:col["right_elbow"] + 3]
    assert np.allclose(last, [0, 0, 90] if order == "ZXY" else [0, 90, 0], atol=1e-3)


def test_cli_and_custom_rest_joints(tmp_path, make_frame, make_person):
    path = _record(tmp_path, make_frame, make_person, [([np.pi, 0, 0], np.zeros(69))] * 3)
    rest = np.random.default_rng(0).normal(0, 0.3, (24, 3))
    np.save(tmp_path / "rest.npy", rest)
    out = tmp_path / "cli.bvh"
    res = subprocess.run([sys.executable, str(ROOT / "tools" / "export_bvh.py"), str(path), str(out),
                          "--rest-joints", str(tmp_path / "rest.npy"), "--scale", "1"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    joints, frames, _, _ = parse_bvh(out.read_text())
    assert frames == 3
    lknee = next(j for j in joints if j["name"] == "left_knee")
    assert np.allclose(lknee["offset"], rest[4] - rest[1], atol=1e-5)
    bad = subprocess.run([sys.executable, str(ROOT / "tools" / "export_bvh.py"), str(path), str(out),
                          "--track", "99"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "tracks present" in bad.stderr
