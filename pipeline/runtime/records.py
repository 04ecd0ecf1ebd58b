"""Fixed-size record layouts for the shared-memory rings (architecture.md §2).

Every ring slot holds one record described by a numpy structured dtype. The ring itself
adds the seqlock counter; the fields here are the payload. All records share a common
header so any reader can trace a frame from capture to publish.

Ring names used by the pipeline:
    frames      capture -> detection, inference      (pixels, RGB)
    detections  detection -> inference               (person boxes + reference to the frame slot)
    poses       inference -> publisher               (SMPL parameters per person)
    published   publisher -> metrics, profiler        (poses record + publish stamp)
"""
from __future__ import annotations

import numpy as np

# Order of the per-stage monotonic timestamps carried in every record (`stamps_ns`).
STAGES = (
    "capture",        # frame grabbed from the source (== t_capture_ns)
    "frame_written",  # frame slot committed to the frames ring
    "detect_start",
    "detect_end",
    "infer_start",
    "infer_end",
    "publish",        # publisher sent it to the sinks
)
STAGE_INDEX = {name: i for i, name in enumerate(STAGES)}

NUM_JOINTS = 24
NUM_BETAS = 10


def _header() -> list:
    return [
        ("frame_id", "<i8"),        # monotonically increasing per source run, set by capture
        ("t_capture_ns", "<i8"),    # time.monotonic_ns() at grab; comparable across processes
        ("generation", "<i4"),      # generation of the worker that wrote this record
        ("source_epoch", "<i4"),    # bumps when the source changes (new file, scene cut, swap)
        ("stream", "<i4"),          # index of the source in the pipeline's streams (0: the only one)
        ("stamps_ns", "<i8", (len(STAGES),)),  # 0 = stage not reached
    ]


def frames_dtype(max_height: int, max_width: int) -> np.dtype:
    """A frame of at most max_height x max_width RGB pixels, stored top-left."""
    if max_height <= 0 or max_width <= 0:
        raise ValueError(f"frame ring size must be positive, got {max_height}x{max_width}")
    return np.dtype(_header() + [
        ("height", "<u4"),
        ("width", "<u4"),
        ("pixels", "u1", (max_height, max_width, 3)),
    ], align=True)


def detections_dtype(max_persons: int) -> np.dtype:
    """Person boxes found in one frame, plus the frames-ring slot they refer to."""
    _check_persons(max_persons)
    p = max_persons
    return np.dtype(_header() + [
        ("frame_slot", "<i4"),      # index of the slot in the frames ring
        ("frame_seq", "<u8"),       # seq of that slot when it was read; readers re-check it
        ("frame_height", "<u4"),
        ("frame_width", "<u4"),
        ("count", "<i4"),           # persons stored (<= max_persons)
        ("n_found", "<i4"),         # persons the detector found before the max_persons cut
        ("boxes", "<f4", (p, 4)),   # x1, y1, x2, y2 in frame pixels (detector box, not yet squared)
        ("scores", "<f4", (p,)),
        ("track_ids", "<i4", (p,)), # -1 when untracked
    ], align=True)


def poses_dtype(max_persons: int) -> np.dtype:
    """SMPL parameters for every person of one frame (smplx field names)."""
    _check_persons(max_persons)
    p = max_persons
    return np.dtype(_header() + [
        ("frame_height", "<u4"),
        ("frame_width", "<u4"),
        ("count", "<i4"),
        ("n_found", "<i4"),
        ("untrained", "u1"),        # 1 when the model runs random-initialised weights
        ("has_joints", "u1"),       # 1 when `joints` was filled from SMPL
        ("model", "S24"),           # e.g. b"poco-cliff"
        ("backend", "S24"),         # e.g. b"torch", b"compile", b"trt"
        ("precision", "S8"),        # b"fp32" / b"fp16"
        ("track_ids", "<i4", (p,)),
        ("boxes", "<f4", (p, 4)),   # detector box x1, y1, x2, y2
        ("scores", "<f4", (p,)),
        ("global_orient", "<f4", (p, 3)),      # axis-angle
        ("body_pose", "<f4", (p, 69)),         # 23 joints axis-angle
        ("betas", "<f4", (p, NUM_BETAS)),
        ("transl", "<f4", (p, 3)),             # full-image camera translation, metres
        ("pred_cam", "<f4", (p, 3)),           # weak-perspective [s, tx, ty] of the 224 crop
        ("joint_uncertainty", "<f4", (p, NUM_JOINTS)),
        ("joints", "<f4", (p, NUM_JOINTS, 3)), # SMPL joints in camera frame (metres), if has_joints
    ], align=True)


def _check_persons(max_persons: int) -> None:
    if not 1 <= max_persons <= 64:
        raise ValueError(f"max_persons must be in 1..64, got {max_persons}")


def stamp(record, stage: str, t_ns: int) -> None:
    record["stamps_ns"][STAGE_INDEX[stage]] = t_ns
