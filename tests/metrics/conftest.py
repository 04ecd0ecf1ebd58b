import numpy as np
import pytest

from pipeline.pose.frame import Person, PosesFrame
from pipeline.runtime.records import STAGES


def person(track_id=-1, body_pose=None, transl=(0.0, 0.0, 3.0), betas=None, box=(0, 0, 100, 200), joints=None):
    return Person(
        track_id=track_id,
        box=np.asarray(box, np.float32),
        score=0.9,
        global_orient=np.zeros(3, np.float32),
        body_pose=np.zeros(69, np.float32) if body_pose is None else np.asarray(body_pose, np.float32),
        betas=np.zeros(10, np.float32) if betas is None else np.asarray(betas, np.float32),
        transl=np.asarray(transl, np.float32),
        pred_cam=np.array([0.9, 0.0, 0.0], np.float32),
        joint_uncertainty=np.zeros(24, np.float32),
        joints=None if joints is None else np.asarray(joints, np.float32),
    )


def frame(frame_id, persons=(), t_capture_ns=None, stage_ms=(1, 2, 5, 1, 20, 1), backend="torch",
          untrained=False, epoch=0):
    """A PosesFrame whose stage stamps are spaced by `stage_ms` (capture→frame_written→…→publish)."""
    t0 = t_capture_ns if t_capture_ns is not None else 1_000_000_000 + frame_id * 10_000_000
    stamps = {"capture": t0}
    t = t0
    for name, ms in zip(STAGES[1:], stage_ms):
        t += int(ms * 1e6)
        stamps[name] = t
    return PosesFrame(frame_id=frame_id, t_capture_ns=t0, generation=1, source_epoch=epoch, frame_height=480,
                      frame_width=640, model="poco-cliff", backend=backend, precision="fp32", untrained=untrained,
                      n_found=len(persons), stamps_ns=stamps, persons=list(persons))


@pytest.fixture
def make_person():
    return person


@pytest.fixture
def make_frame():
    return frame
