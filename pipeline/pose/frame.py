"""Python-side view of one published frame: what sinks, metrics and clients consume.

A `PosesFrame` is built from a poses/published ring record (`from_record`) and holds
plain numpy arrays per person, with smplx field names.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.runtime.records import STAGES


@dataclass
class Person:
    track_id: int
    box: np.ndarray                # (4,) x1, y1, x2, y2 detector box in frame pixels
    score: float
    global_orient: np.ndarray      # (3,) axis-angle
    body_pose: np.ndarray          # (69,) axis-angle, 23 joints
    betas: np.ndarray              # (10,)
    transl: np.ndarray             # (3,) full-image camera translation, metres
    pred_cam: np.ndarray           # (3,) weak-perspective [s, tx, ty] of the 224 crop
    joint_uncertainty: np.ndarray  # (24,)
    joints: np.ndarray | None = None  # (24, 3) SMPL joints, metres, when SMPL is available


@dataclass
class PosesFrame:
    frame_id: int
    t_capture_ns: int
    generation: int
    source_epoch: int
    frame_height: int
    frame_width: int
    model: str
    backend: str
    precision: str
    untrained: bool
    n_found: int
    stamps_ns: dict[str, int] = field(default_factory=dict)
    persons: list[Person] = field(default_factory=list)
    stream: str = "main"           # the source's name (several sources in one pipeline; issue 20)


def stream_name(index: int, streams=None) -> str:
    """The name of stream `index` (`streams`: the pipeline's names in order; none: `main`)."""
    if streams and 0 <= index < len(streams):
        return str(streams[index])
    return "main" if index == 0 else f"stream{index}"


def from_record(rec, streams=None) -> PosesFrame:
    """Copy a poses-dtype record (0-d structured array or np.void) into a PosesFrame;
    `streams` names the stream indices (default: `main`)."""
    count = int(rec["count"])
    has_joints = bool(rec["has_joints"])
    persons = [
        Person(
            track_id=int(rec["track_ids"][i]),
            box=np.array(rec["boxes"][i], dtype=np.float32),
            score=float(rec["scores"][i]),
            global_orient=np.array(rec["global_orient"][i], dtype=np.float32),
            body_pose=np.array(rec["body_pose"][i], dtype=np.float32),
            betas=np.array(rec["betas"][i], dtype=np.float32),
            transl=np.array(rec["transl"][i], dtype=np.float32),
            pred_cam=np.array(rec["pred_cam"][i], dtype=np.float32),
            joint_uncertainty=np.array(rec["joint_uncertainty"][i], dtype=np.float32),
            joints=np.array(rec["joints"][i], dtype=np.float32) if has_joints else None,
        )
        for i in range(count)
    ]
    stamps = rec["stamps_ns"]
    return PosesFrame(
        frame_id=int(rec["frame_id"]),
        t_capture_ns=int(rec["t_capture_ns"]),
        generation=int(rec["generation"]),
        source_epoch=int(rec["source_epoch"]),
        frame_height=int(rec["frame_height"]),
        frame_width=int(rec["frame_width"]),
        model=_text(rec["model"]),
        backend=_text(rec["backend"]),
        precision=_text(rec["precision"]),
        untrained=bool(rec["untrained"]),
        n_found=int(rec["n_found"]),
        stamps_ns={name: int(stamps[i]) for i, name in enumerate(STAGES) if stamps[i]},
        persons=persons,
        stream=stream_name(int(rec["stream"]), streams) if "stream" in rec.dtype.names else "main",
    )


def _text(field) -> str:
    # .item() of an 'S' scalar drops the NUL padding, for np.void and 0-d array records alike.
    return np.asarray(field).item().decode(errors="replace")


def fill_record(rec, frame: PosesFrame) -> None:
    """Write a PosesFrame into a poses-dtype record in place (inverse of from_record)."""
    p_max = rec["track_ids"].shape[0]
    persons = frame.persons[:p_max]
    rec["frame_id"] = frame.frame_id
    rec["t_capture_ns"] = frame.t_capture_ns
    rec["generation"] = frame.generation
    rec["source_epoch"] = frame.source_epoch
    rec["frame_height"] = frame.frame_height
    rec["frame_width"] = frame.frame_width
    rec["model"] = frame.model.encode()[:24]
    rec["backend"] = frame.backend.encode()[:24]
    rec["precision"] = frame.precision.encode()[:8]
    rec["untrained"] = frame.untrained
    rec["n_found"] = frame.n_found
    rec["count"] = len(persons)
    for i, name in enumerate(STAGES):
        rec["stamps_ns"][i] = frame.stamps_ns.get(name, 0)
    rec["has_joints"] = bool(persons) and all(p.joints is not None for p in persons)
    for i, p in enumerate(persons):
        rec["track_ids"][i] = p.track_id
        rec["boxes"][i] = p.box
        rec["scores"][i] = p.score
        rec["global_orient"][i] = p.global_orient
        rec["body_pose"][i] = p.body_pose
        rec["betas"][i] = p.betas
        rec["transl"][i] = p.transl
        rec["pred_cam"][i] = p.pred_cam
        rec["joint_uncertainty"][i] = p.joint_uncertainty
        if p.joints is not None:
            rec["joints"][i] = p.joints
