"""Shared builders for the sink tests: synthetic PosesFrames, no model or data files."""
import numpy as np
import pytest

from pipeline.pose.frame import Person, PosesFrame


def build_person(track_id=0, global_orient=None, body_pose=None, betas=None, transl=None,
                 pred_cam=None, box=(100, 50, 300, 450), joints=None, rng=None):
    rng = rng or np.random.default_rng(track_id + 7)
    return Person(
        track_id=track_id,
        box=np.asarray(box, np.float32),
        score=0.9,
        global_orient=np.asarray([np.pi, 0, 0] if global_orient is None else global_orient, np.float32),
        body_pose=np.asarray(rng.normal(0, 0.2, 69) if body_pose is None else body_pose, np.float32),
        betas=np.asarray(rng.normal(0, 1, 10) if betas is None else betas, np.float32),
        transl=np.asarray([0.1, 0.2, 5.0] if transl is None else transl, np.float32),
        pred_cam=np.asarray([0.9, 0.05, 0.1] if pred_cam is None else pred_cam, np.float32),
        joint_uncertainty=np.linspace(0, 1, 24).astype(np.float32),
        joints=None if joints is None else np.asarray(joints, np.float32),
    )


def build_frame(frame_id=0, persons=(), t_capture_ns=None, width=640, height=480, epoch=0):
    return PosesFrame(
        frame_id=frame_id,
        t_capture_ns=int(1_000_000_000 + frame_id * 33_333_333) if t_capture_ns is None else t_capture_ns,
        generation=1, source_epoch=epoch, frame_height=height, frame_width=width,
        model="poco-cliff", backend="torch", precision="fp32", untrained=True,
        n_found=len(persons), stamps_ns={"capture": 1, "publish": 2}, persons=list(persons),
    )


@pytest.fixture
def make_person():
    return build_person


@pytest.fixture
def make_frame():
    return build_frame
