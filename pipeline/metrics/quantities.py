"""Per-frame quantities of the seed's metrics CSV, with the seed's mistakes corrected (architecture.md §10).

Each quantity below names the seed's definition and ours. Where they differ, ours is the
corrected one and the reason is given; `docs/metrics.md` holds the same table.

pose change
    seed: Σ over the 23 body joints of ‖R_j(t) − R_j(t−1)‖_F, rotation matrices built from the
    axis-angle `body_pose`, person 0 only.  ours: the same sum (unitless, 0 … 23·2√2), computed
    between consecutive processed frames of the same person (see "matching" below).
shape variance
    seed: variance of the frame's 10 betas.  ours: the same (population variance, ddof=0).
translation change (mm)
    seed: difference of the crop-relative weak-perspective camera, labelled mm but not a length.
    ours: ‖transl(t) − transl(t−1)‖ × 1000 with the full-image camera translation (metres), so the
    number really is millimetres of camera-frame motion.
joint position change (mm)
    seed: computed from crop-relative quantities, not millimetres.  ours: mean over the 24 SMPL
    joints of ‖J_k(t) − J_k(t−1)‖ × 1000 (camera frame, metres → mm) when the record carries
    joints (SMPL available), NaN otherwise. Mean vertex change (mm) is an extra column when a
    person carries `vertices`.
detection rate
    seed and ours: 100 when the frame has ≥ 1 person, else 0; the window mean counts the zeros.

Matching (which "previous frame" a change is measured against): the previous *processed*
frame, i.e. the previous published record the metrics reader saw. A change exists only when
the same person is present in both: same `track_id` when the detector tracks (id ≥ 0). Single-
person detectors without tracking write id −1; for them the primary person of consecutive frames
is taken to be the same person, as the seed did with person 0. The chain is cut (next change is
NaN) when the reader missed records, when `source_epoch` changes, or when nobody was seen.

Primary person (what the seed columns report): the person with the largest box area, the first
one on ties. The seed reported person 0 of its detector's order; we report the largest because
person 0 of a detector is not stable across frames.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from pipeline.pose.frame import Person, PosesFrame
from pipeline.metrics.percentiles import stage_latencies_ms

NUM_BODY_JOINTS = 23


def axis_angle_to_matrix(aa: np.ndarray) -> np.ndarray:
    """(..., 3) axis-angle → (..., 3, 3) rotation matrices (Rodrigues), float64."""
    aa = np.asarray(aa, dtype=np.float64)
    if aa.shape[-1] != 3:
        raise ValueError(f"axis-angle needs a last dimension of 3, got shape {aa.shape}")
    theta = np.linalg.norm(aa, axis=-1, keepdims=True)
    # Below ~1e-12 the axis is undefined; the rotation is the identity to double precision.
    safe = np.where(theta > 1e-12, theta, 1.0)
    k = aa / safe
    kx, ky, kz = k[..., 0], k[..., 1], k[..., 2]
    zero = np.zeros_like(kx)
    kmat = np.stack([
        np.stack([zero, -kz, ky], axis=-1),
        np.stack([kz, zero, -kx], axis=-1),
        np.stack([-ky, kx, zero], axis=-1),
    ], axis=-2)
    s = np.sin(theta)[..., None]
    c = np.cos(theta)[..., None]
    eye = np.broadcast_to(np.eye(3), kmat.shape)
    rot = eye + s * kmat + (1.0 - c) * (kmat @ kmat)
    return np.where((theta > 1e-12)[..., None], rot, eye)


def pose_change(body_pose_prev: np.ndarray, body_pose_cur: np.ndarray) -> float:
    """Σ over the 23 body joints of the Frobenius norm of the rotation-matrix difference."""
    prev = _body_pose(body_pose_prev)
    cur = _body_pose(body_pose_cur)
    diff = axis_angle_to_matrix(cur) - axis_angle_to_matrix(prev)
    return float(np.sqrt((diff ** 2).sum(axis=(-2, -1))).sum())


def shape_variance(betas: np.ndarray) -> float:
    b = np.asarray(betas, dtype=np.float64).reshape(-1)
    if b.size == 0:
        raise ValueError("betas are empty")
    return float(np.var(b))


def translation_change_mm(transl_prev: np.ndarray, transl_cur: np.ndarray) -> float:
    a = _vec3(transl_prev, "transl")
    b = _vec3(transl_cur, "transl")
    return float(np.linalg.norm(b - a) * 1000.0)


def mean_point_change_mm(points_prev: np.ndarray, points_cur: np.ndarray) -> float:
    """Mean Euclidean displacement (mm) of corresponding 3D points given in metres."""
    a = np.asarray(points_prev, dtype=np.float64)
    b = np.asarray(points_cur, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2 or a.shape[1] != 3 or a.shape[0] == 0:
        raise ValueError(f"need two (N,3) point sets of one shape, got {a.shape} and {b.shape}")
    return float(np.linalg.norm(b - a, axis=1).mean() * 1000.0)


def primary_index(persons: list[Person]) -> int | None:
    """Index of the largest box (first on ties), None when nobody is there."""
    if not persons:
        return None
    areas = [_box_area(p.box) for p in persons]
    best = max(areas)
    return areas.index(best)


@dataclass
class FrameQuantities:
    """Everything the window needs from one published frame."""
    t_ns: int                      # publish stamp (or arrival time when the stamp is missing)
    frame_id: int
    persons: int
    detected: float                # 100.0 or 0.0
    pose_change: float = math.nan
    translation_change_mm: float = math.nan
    joint_change_mm: float = math.nan
    vertex_change_mm: float = math.nan
    shape_variance: float = math.nan
    end_to_end_ms: float = math.nan
    stage_ms: dict[str, float] = field(default_factory=dict)
    generation: int = 0
    model: str = ""
    backend: str = ""
    precision: str = ""
    untrained: bool = False
    missed: int = 0                # published records the reader lost just before this one


class FrameMeasurer:
    """Turns consecutive PosesFrames into FrameQuantities, remembering the previous frame's people."""

    def __init__(self) -> None:
        self._prev_by_track: dict[int, Person] = {}
        self._prev_primary: Person | None = None
        self._prev_epoch: int | None = None

    def break_chain(self) -> None:
        """Forget the previous frame: the next change metrics are NaN (missed records, restart)."""
        self._prev_by_track = {}
        self._prev_primary = None

    def measure(self, frame: PosesFrame, arrival_ns: int, missed: int = 0) -> FrameQuantities:
        if missed > 0 or (self._prev_epoch is not None and frame.source_epoch != self._prev_epoch):
            self.break_chain()
        self._prev_epoch = frame.source_epoch

        stages = stage_latencies_ms(frame.stamps_ns)
        t_ns = frame.stamps_ns.get("publish") or arrival_ns
        q = FrameQuantities(
            t_ns=int(t_ns),
            frame_id=frame.frame_id,
            persons=len(frame.persons),
            detected=100.0 if frame.persons else 0.0,
            end_to_end_ms=stages.get("end_to_end", math.nan),
            stage_ms=stages,
            generation=frame.generation,
            model=frame.model,
            backend=frame.backend,
            precision=frame.precision,
            untrained=frame.untrained,
            missed=max(0, int(missed)),
        )
        idx = primary_index(frame.persons)
        if idx is None:
            self.break_chain()
            return q
        cur = frame.persons[idx]
        q.shape_variance = shape_variance(cur.betas)
        prev = self._match(cur)
        if prev is not None:
            q.pose_change = pose_change(prev.body_pose, cur.body_pose)
            q.translation_change_mm = translation_change_mm(prev.transl, cur.transl)
            if prev.joints is not None and cur.joints is not None:
                q.joint_change_mm = mean_point_change_mm(prev.joints, cur.joints)
            pv, cv = getattr(prev, "vertices", None), getattr(cur, "vertices", None)
            if pv is not None and cv is not None:
                q.vertex_change_mm = mean_point_change_mm(pv, cv)
        self._prev_by_track = {p.track_id: p for p in frame.persons if p.track_id >= 0}
        self._prev_primary = cur
        return q

    def _match(self, cur: Person) -> Person | None:
        if cur.track_id >= 0:
            return self._prev_by_track.get(cur.track_id)
        if self._prev_primary is not None and self._prev_primary.track_id < 0:
            return self._prev_primary
        return None


def _body_pose(body_pose: np.ndarray) -> np.ndarray:
    a = np.asarray(body_pose, dtype=np.float64)
    if a.size != NUM_BODY_JOINTS * 3:
        raise ValueError(f"body_pose must hold 23 joints x 3 = 69 values, got shape {a.shape}")
    return a.reshape(NUM_BODY_JOINTS, 3)


def _vec3(v: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64).reshape(-1)
    if a.size != 3:
        raise ValueError(f"{name} must hold 3 values, got {a.size}")
    return a


def _box_area(box: np.ndarray) -> float:
    x1, y1, x2, y2 = (float(v) for v in np.asarray(box).reshape(-1)[:4])
    return max(0.0, x2 - x1) * max(0.0, y2 - y1)
