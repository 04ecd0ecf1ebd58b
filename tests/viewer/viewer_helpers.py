"""Helpers for the viewer tests: synthetic frames and a polling wait."""
from __future__ import annotations

import time

import numpy as np
from pipeline.pose.frame import Person, PosesFrame


def make_person(track_id=1, transl=(0.0, 0.0, 3.0), body_pose=None, global_orient=(np.pi, 0.0, 0.0),
                uncertainty=None, box=(100, 50, 300, 450)) -> Person:
    return Person(
        track_id=track_id,
        box=np.array(box, np.float32),
        score=0.9,
        global_orient=np.array(global_orient, np.float32),
        body_pose=np.zeros(69, np.float32) if body_pose is None else np.asarray(body_pose, np.float32),
        betas=np.zeros(10, np.float32),
        transl=np.array(transl, np.float32),
        pred_cam=np.array([1.0, 0.0, 0.0], np.float32),
        joint_uncertainty=np.linspace(0, 1, 24).astype(np.float32) if uncertainty is None else uncertainty,
    )


def make_frame(frame_id=0, persons=(), latency_ms=20.0, untrained=True) -> PosesFrame:
    now = time.monotonic_ns()
    capture = now - int(latency_ms * 1e6)
    return PosesFrame(
        frame_id=frame_id, t_capture_ns=capture, generation=0, source_epoch=0,
        frame_height=480, frame_width=640, model="poco-cliff", backend="torch", precision="fp32",
        untrained=untrained, n_found=len(persons),
        stamps_ns={"capture": capture, "publish": now}, persons=list(persons),
    )


def wait_for(predicate, timeout=10.0, interval=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
