"""A/B agreement per joint (pipeline/metrics/ab.py): the angle between the two variants'
rotations of each SMPL joint, averaged over matched frames, in the status table and the CSV."""
from __future__ import annotations

import csv

import numpy as np

from pipeline.metrics.ab import AbComparer, compare_frames, csv_rows, format_table, write_csv
from pipeline.pose.frame import Person, PosesFrame
from pipeline.pose.skeleton import JOINT_NAMES


def frame(frame_id, rotations_deg_about_x):
    """One person whose joint j turns rotations_deg_about_x[j] degrees about x."""
    aa = np.zeros((24, 3), np.float32)
    aa[:, 0] = np.radians(rotations_deg_about_x)
    person = Person(track_id=0, box=np.zeros(4, np.float32), score=1.0, global_orient=aa[0],
                    body_pose=aa[1:].reshape(69), betas=np.zeros(10, np.float32),
                    transl=np.array([0, 0, 3], np.float32), pred_cam=np.ones(3, np.float32),
                    joint_uncertainty=np.zeros(24, np.float32))
    return PosesFrame(frame_id=frame_id, t_capture_ns=frame_id, generation=1, source_epoch=0, frame_height=10,
                      frame_width=10, model="m", backend="b", precision="fp32", untrained=False, n_found=1,
                      persons=[person])


def test_per_joint_difference_is_averaged_over_matched_frames():
    a = np.zeros(24)
    b1, b2 = np.zeros(24), np.zeros(24)
    b1[4], b2[4] = 10.0, 30.0     # left knee differs by 10 then 30 degrees
    b1[16] = b2[16] = -5.0        # left shoulder by 5 both times
    cmp = AbComparer()
    assert cmp.feed("A", frame(1, a)) is None
    agreement = cmp.feed("B", frame(1, b1))
    np.testing.assert_allclose(agreement.rot_deg_joints[[4, 16]], [10.0, 5.0], atol=1e-3)
    cmp.feed("B", frame(2, b2))
    cmp.feed("A", frame(2, a))
    cmp.feed("A", frame(3, a))    # unmatched: not counted
    per_joint = cmp.summary()["agreement"]["rot_deg_per_joint"]
    assert list(per_joint) == list(JOINT_NAMES)
    np.testing.assert_allclose([per_joint["left_knee"], per_joint["left_shoulder"], per_joint["pelvis"]],
                               [20.0, 5.0, 0.0], atol=1e-3)
    assert abs(cmp.summary()["agreement"]["rot_deg"] - 25.0 / 24) < 1e-3


def test_per_joint_difference_reaches_the_table_and_the_csv(tmp_path):
    cmp = AbComparer()
    b = np.zeros(24)
    b[19] = 12.0
    cmp.feed("A", frame(1, np.zeros(24)))
    cmp.feed("B", frame(1, b))
    summary = cmp.summary()
    table = format_table({"worker": "inference", "changes": {"model": "landmarks-ik"}, "b_state": "running",
                          "comparison": summary})
    line = [ln for ln in table.splitlines() if ln.startswith("rotation difference per joint")][0]
    assert f"{JOINT_NAMES[19]} 12.000" in line and f"{JOINT_NAMES[0]} 0.000" in line
    path = write_csv(str(tmp_path / "ab.csv"), csv_rows(summary, "inference", {"model": "landmarks-ik"}))
    rows = list(csv.DictReader(open(path)))
    assert "right_elbow 12.000" in rows[1]["Per-Joint Rotation Diff (deg)"]


def test_no_person_in_either_gives_no_per_joint_numbers():
    empty = frame(1, np.zeros(24))
    empty.persons = []
    assert compare_frames(empty, empty).rot_deg_joints is None
    cmp = AbComparer()
    cmp.feed("A", empty)
    cmp.feed("B", empty)
    assert cmp.summary()["agreement"]["rot_deg_per_joint"] is None
    assert "per joint" not in format_table({"comparison": cmp.summary()})
