"""One-Euro smoothing: wrap safety, jitter reduction, live switching, track lifetime, cost."""
import math

import numpy as np
import pytest

from pipeline.pose.rotations import axis_angle_to_rotmat, rotation_angle_between
from pipeline.pose.smoothing import PRESETS, RELAY_COLUMNS, Smoother, relay_metrics

FPS = 30.0


def _ema_jitter_ratio(min_cutoff, dt=1 / FPS):
    """std(filtered frame-to-frame change) / std(raw change) for white noise through a
    first-order low-pass with the One-Euro alpha at min_cutoff: alpha / sqrt(2 - alpha)."""
    tau = 1 / (2 * math.pi * min_cutoff)
    a = 1 / (1 + tau / dt)
    return a / math.sqrt(2 - a)


def test_rotation_crossing_pi_does_not_flip(make_frame, make_person):
    sm = Smoother("smooth")
    angles = np.linspace(2.9, 3.4, 60)  # about X, through the +-pi axis-angle boundary
    out = []
    for i, a in enumerate(angles):
        R = axis_angle_to_rotmat([a, 0, 0])
        from pipeline.pose.rotations import rotmat_to_axis_angle
        go = rotmat_to_axis_angle(R)  # canonical axis-angle: flips sign past pi
        f = sm.apply(make_frame(i, [make_person(0, global_orient=go, body_pose=np.zeros(69))]))
        out.append(axis_angle_to_rotmat(f.persons[0].global_orient))
    raw_go = rotmat_to_axis_angle(axis_angle_to_rotmat(np.outer(angles, [1, 0, 0])))
    assert raw_go[0, 0] > 0 and raw_go[-1, 0] < 0  # the input really wraps
    out = np.array(out)
    step = rotation_angle_between(out[1:], out[:-1])
    assert step.max() < (angles[1] - angles[0]) * 1.5  # never jumps
    # and it follows the true rotation (with filter lag only)
    err = rotation_angle_between(out, axis_angle_to_rotmat(np.outer(angles, [1, 0, 0])))
    assert err.max() < 0.2


@pytest.mark.parametrize("preset", ["moderate", "smooth"])
def test_jitter_drops_by_expected_factor(make_frame, make_person, preset):
    rng = np.random.default_rng(3)
    sm = Smoother(preset)
    base_pose = np.full(69, 0.3)
    raw_t, filt_t = [], []
    for i in range(600):
        t = np.array([0.1, 0.2, 5.0]) + rng.normal(0, 0.005, 3)
        bp = base_pose + rng.normal(0, 0.01, 69)
        f = sm.apply(make_frame(i, [make_person(0, transl=t, body_pose=bp, betas=np.zeros(10))]))
        raw_t.append(t)
        filt_t.append(f.persons[0].transl)
    warm = 60
    raw_std = np.std(np.diff(np.array(raw_t)[warm:], axis=0))
    filt_std = np.std(np.diff(np.array(filt_t)[warm:], axis=0))
    measured = filt_std / raw_std
    expected = _ema_jitter_ratio(PRESETS[preset].translation.min_cutoff)
    # beta raises the cutoff a little with noise speed: allow up to 1.6x the pure low-pass value
    assert expected * 0.8 < measured < expected * 1.6, (measured, expected)
    s = sm.stats()
    pose_ratio = s["filtered_pose_body_change_avg"] / s["raw_pose_body_change_avg"]
    assert pose_ratio < _ema_jitter_ratio(PRESETS[preset].pose.min_cutoff) * 1.6 + 0.05


def test_off_passes_through_and_live_switch(make_frame, make_person):
    sm = Smoother("off")
    fr = make_frame(0, [make_person(0)])
    assert sm.apply(fr) is fr
    sm.set("smoothing", "smooth")
    assert sm.preset_name == "smooth"
    with pytest.raises(ValueError, match="choose one of"):
        sm.set("smoothing", "wobbly")
    with pytest.raises(ValueError):
        Smoother("nope")


def test_track_state_dropped_when_track_disappears(make_frame, make_person):
    sm = Smoother("moderate")
    sm.apply(make_frame(0, [make_person(1), make_person(2)]))
    assert sm.stats()["tracks"] == 2
    sm.apply(make_frame(1, [make_person(2)]))
    assert sm.stats()["tracks"] == 1
    # a returning track starts fresh: its first value passes unfiltered
    p = make_person(1, transl=[9, 9, 9])
    out = sm.apply(make_frame(2, [make_person(2), p]))
    assert np.allclose(out.persons[1].transl, [9, 9, 9])


def test_relay_metrics_columns_and_filter_cost(make_frame, make_person):
    sm = Smoother("moderate")
    before = sm.stats()
    rng = np.random.default_rng(0)
    for i in range(200):
        sm.apply(make_frame(i, [make_person(0, rng=rng), make_person(1, rng=rng)]))
    row = relay_metrics(before, sm.stats())
    assert set(row) == set(RELAY_COLUMNS)
    assert row["Avg Relay Packet Processing FPS"] > 0
    assert row["Avg Raw Pose Body Change"] > row["Avg Filtered Pose Body Change"] > 0
    # two persons per frame on a 2-core CPU box: well under a millisecond or two
    print(f"filter cost per frame (2 persons): {row['Avg Filter Latency (ms)']:.3f} ms")
    assert row["Avg Filter Latency (ms)"] < 5.0


def test_joints_move_with_the_smoothed_rotations(make_frame, make_person):
    """A person carrying joints (SMPL's or landmarks-ik's skeleton): after smoothing they are
    forward kinematics of the smoothed rotations on the same skeleton, not the raw joints."""
    from pipeline.pose.skeleton import DEFAULT_REST_JOINTS, forward_kinematics

    rng = np.random.default_rng(5)
    rest = DEFAULT_REST_JOINTS * 1.1   # a skeleton other than the template
    sm = Smoother("smooth")
    for i in range(20):
        go = np.array([np.pi, 0, 0]) + rng.normal(0, 0.05, 3)
        bp = rng.normal(0, 0.3, 69)
        t = np.array([0.1, 0.2, 4.0]) + rng.normal(0, 0.02, 3)
        joints, _ = forward_kinematics(go, bp, t, rest)
        out = sm.apply(make_frame(i, [make_person(0, global_orient=go, body_pose=bp, transl=t, joints=joints)]))
        p = out.persons[0]
        expected, _ = forward_kinematics(p.global_orient, p.body_pose, p.transl, rest)
        np.testing.assert_allclose(p.joints, expected, atol=2e-4)
    assert np.abs(p.joints - joints).max() > 1e-3   # smoothing did move them
    off = Smoother("off").apply(make_frame(0, [make_person(0, joints=joints)]))
    np.testing.assert_array_equal(off.persons[0].joints, joints.astype(np.float32))
