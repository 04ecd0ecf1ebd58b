"""A/B comparison of two pose variants run on the same frames (architecture.md §4, issue 7).

Variant A is the serving inference worker (ring `poses`), variant B a second worker with
changed settings beside it (ring `poses_b`). B does not pick its own frames: A copies every
detections record it consumes into the tee ring `detections_ab`, which B reads with policy
`next` (runtime/supervisor/ab.py), so both run on the same frames and a slower B skips frames
only when their pixels left the frames ring before B got to them. A frame counts as *matched*
when both variants produced a record with the same `frame_id`; the *pair rate* is matched
frames / A's frames since B's first frame. Every agreement number is computed on matched
frames only, B against A:

* ``rot_deg``       mean geodesic angle between the rotation matrices of the 24 SMPL joints
                    (global orient + 23 body joints), degrees;
* ``rot_deg_per_joint`` the same angle per joint ({joint name: degrees}, SMPL order; a dict
                    because heartbeat extras carry dicts, not lists), e.g. to see where two
                    model families (POCO and landmarks-ik) disagree;
* ``transl_mm``     mean distance between the full-image translations, millimetres;
* ``joints_mm``     mean per-joint distance of the SMPL joints, millimetres (only when both
                    records carry joints, else None);
* ``same_count``    fraction of matched frames where both found the same number of persons.

Persons of a matched frame are paired in record order: both variants crop the boxes of the
same detections record, in its order. When the counts differ the first min(counts) are
paired and the frame counts against `same_count`.

Per variant: frames seen, throughput (frames per second since the first frame), capture ->
inference-end latency p50/p99 and model time (infer_start -> infer_end) p50/p99. The
supervisor adds each variant's process cost (`ab_cost`): CPU %, CPU time per frame since B
was ready, resident memory and, on a GPU, device memory and NVML's per-process SM share.
"""
from __future__ import annotations

import collections
import csv
import math
import os
import time
from dataclasses import dataclass, field

import numpy as np

from pipeline.pose.frame import PosesFrame
from pipeline.pose.rotations import axis_angle_to_rotmat, rotation_angle_between
from pipeline.pose.skeleton import JOINT_NAMES

VARIANTS = ("A", "B")
PENDING_MAX = 256      # unmatched frames kept per variant (older ones can no longer match)
LATENCY_WINDOW = 1000
CSV_COLUMNS = ("Timestamp", "Variant", "Worker", "Generation", "Model", "Backend", "Precision", "Untrained",
               "Settings", "Frames", "Throughput (FPS)", "Latency p50 (ms)", "Latency p99 (ms)",
               "Model Time p50 (ms)", "Model Time p99 (ms)", "Matched Frames", "Rotation Diff (deg)",
               "Translation Diff (mm)", "Joint Diff (mm)", "Same Person Count (%)", "Pair Rate (%)",
               "CPU (%)", "CPU per Frame (ms)", "RSS (MB)", "GPU Memory (MB)", "GPU SM Share (%)",
               "Per-Joint Rotation Diff (deg)")
# (label, key in a variant's cost dict, scale) for the table and the CSV
COST_FIELDS = (("CPU (%)", "cpu_percent", 1.0), ("CPU per Frame (ms)", "cpu_ms_per_frame", 1.0),
               ("RSS (MB)", "rss_bytes", 2.0 ** -20), ("GPU Memory (MB)", "gpu_mem_bytes", 2.0 ** -20),
               ("GPU SM Share (%)", "gpu_proc_util_percent", 1.0))


def person_rotations(persons: list) -> np.ndarray:
    """(P, 24, 3, 3) rotation matrices of the given persons (global orient + 23 body joints)."""
    if not persons:
        return np.zeros((0, 24, 3, 3))
    aa = np.stack([np.concatenate([p.global_orient, p.body_pose]).reshape(24, 3) for p in persons])
    return axis_angle_to_rotmat(aa)


@dataclass
class FrameAgreement:
    """B against A on one frame (None: nothing to compare, e.g. no person in either)."""
    rot_deg: float | None
    transl_mm: float | None
    joints_mm: float | None
    same_count: bool
    rot_deg_joints: np.ndarray | None = None   # (24,) per joint, mean over the paired persons


def compare_frames(a: PosesFrame, b: PosesFrame) -> FrameAgreement:
    n = min(len(a.persons), len(b.persons))
    same = len(a.persons) == len(b.persons)
    if n == 0:
        return FrameAgreement(None, None, None, same)
    pa, pb = a.persons[:n], b.persons[:n]
    per_joint = np.degrees(rotation_angle_between(person_rotations(pa), person_rotations(pb))).mean(axis=0)
    rot = float(per_joint.mean())
    ta = np.stack([p.transl for p in pa]).astype(np.float64)
    tb = np.stack([p.transl for p in pb]).astype(np.float64)
    transl = float(np.linalg.norm(ta - tb, axis=-1).mean() * 1000.0)
    joints = None
    if all(p.joints is not None for p in pa + pb):
        ja = np.stack([p.joints for p in pa]).astype(np.float64)
        jb = np.stack([p.joints for p in pb]).astype(np.float64)
        joints = float(np.linalg.norm(ja - jb, axis=-1).mean() * 1000.0)
    return FrameAgreement(rot, transl, joints, same, per_joint)


class _Mean:
    def __init__(self):
        self.total = 0.0
        self.n = 0

    def add(self, value: float | None) -> None:
        if value is not None and math.isfinite(value):
            self.total += value
            self.n += 1

    @property
    def value(self) -> float | None:
        return self.total / self.n if self.n else None


@dataclass
class _VariantStats:
    frames: int = 0
    first_ns: int = 0
    last_ns: int = 0
    latency_ms: collections.deque = field(default_factory=lambda: collections.deque(maxlen=LATENCY_WINDOW))
    model_ms: collections.deque = field(default_factory=lambda: collections.deque(maxlen=LATENCY_WINDOW))
    generation: int = 0
    model: str = ""
    backend: str = ""
    precision: str = ""
    untrained: bool = False

    def observe(self, frame: PosesFrame, now_ns: int) -> None:
        self.frames += 1
        self.first_ns = self.first_ns or now_ns
        self.last_ns = now_ns
        self.generation, self.model, self.backend = frame.generation, frame.model, frame.backend
        self.precision, self.untrained = frame.precision, frame.untrained
        s = frame.stamps_ns
        end = s.get("infer_end", 0)
        if end and frame.t_capture_ns:
            self.latency_ms.append((end - frame.t_capture_ns) / 1e6)
        if end and s.get("infer_start"):
            self.model_ms.append((end - s["infer_start"]) / 1e6)

    def summary(self) -> dict:
        span = (self.last_ns - self.first_ns) / 1e9
        lat = _pcts(self.latency_ms)
        mod = _pcts(self.model_ms)
        return {"frames": self.frames, "fps": round((self.frames - 1) / span, 3) if span > 0 else 0.0,
                "latency_p50_ms": lat[0], "latency_p99_ms": lat[1], "model_p50_ms": mod[0],
                "model_p99_ms": mod[1], "generation": self.generation, "model": self.model,
                "backend": self.backend, "precision": self.precision, "untrained": self.untrained}


def _pcts(values) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    p50, p99 = np.percentile(np.fromiter(values, np.float64), [50, 99])
    return round(float(p50), 3), round(float(p99), 3)


class AbComparer:
    """Feeds on both variants' frames (any order), pairs them by frame_id, keeps the tallies."""

    def __init__(self, clock=time.monotonic_ns):
        self._clock = clock
        self.reset()

    def reset(self) -> None:
        self.stats = {v: _VariantStats() for v in VARIANTS}
        self.pending = {v: collections.OrderedDict() for v in VARIANTS}
        self.matched = 0
        self.same_count = 0
        self.rot, self.transl, self.joints = _Mean(), _Mean(), _Mean()
        self.rot_joints = np.zeros(len(JOINT_NAMES))
        self.rot_joints_n = 0
        self.max_rot = 0.0
        self.b_first_id: int | None = None
        self.a_since_b = 0   # A's frames from B's first frame on: the pair rate's denominator

    def feed(self, variant: str, frame: PosesFrame) -> FrameAgreement | None:
        if variant not in VARIANTS:
            raise ValueError(f"variant must be A or B, got {variant!r}")
        self.stats[variant].observe(frame, self._clock())
        if variant == "B" and self.b_first_id is None:
            # B started late (model load): A's frames before B's first one cannot pair
            self.b_first_id = frame.frame_id
            self.a_since_b = sum(1 for fid in self.pending["A"] if fid >= frame.frame_id)
        elif variant == "A" and self.b_first_id is not None and frame.frame_id >= self.b_first_id:
            self.a_since_b += 1
        other = "B" if variant == "A" else "A"
        partner = self.pending[other].pop(frame.frame_id, None)
        if partner is None:
            mine = self.pending[variant]
            mine[frame.frame_id] = frame
            while len(mine) > PENDING_MAX:
                mine.popitem(last=False)
            # Frames of the other variant older than this one can no longer be matched by it:
            # each variant's frame ids only increase.
            theirs = self.pending[other]
            while theirs and next(iter(theirs)) < frame.frame_id:
                theirs.popitem(last=False)
            return None
        a, b = (frame, partner) if variant == "A" else (partner, frame)
        agreement = compare_frames(a, b)
        self.matched += 1
        self.same_count += agreement.same_count
        self.rot.add(agreement.rot_deg)
        self.transl.add(agreement.transl_mm)
        self.joints.add(agreement.joints_mm)
        if agreement.rot_deg is not None:
            self.max_rot = max(self.max_rot, agreement.rot_deg)
        if agreement.rot_deg_joints is not None and np.all(np.isfinite(agreement.rot_deg_joints)):
            self.rot_joints += agreement.rot_deg_joints
            self.rot_joints_n += 1
        return agreement

    def summary(self) -> dict:
        def r(x):
            return None if x is None else round(x, 4)

        return {"A": self.stats["A"].summary(), "B": self.stats["B"].summary(),
                "agreement": {"matched": self.matched,
                              "pair_rate": round(self.matched / self.a_since_b, 4) if self.a_since_b else None,
                              "rot_deg": r(self.rot.value), "rot_max_deg": round(self.max_rot, 4),
                              "transl_mm": r(self.transl.value), "joints_mm": r(self.joints.value),
                              "rot_deg_per_joint": ({name: round(float(x), 3) for name, x in
                                                     zip(JOINT_NAMES, self.rot_joints / self.rot_joints_n)}
                                                    if self.rot_joints_n else None),
                              "same_count": round(self.same_count / self.matched, 4) if self.matched else None}}


def format_table(ab: dict) -> str:
    """The `pipeline ab status` table from the supervisor's `ab` status entry."""
    cmp = ab.get("comparison") or {}
    a, b, agr = cmp.get("A") or {}, cmp.get("B") or {}, cmp.get("agreement") or {}
    settings = " ".join(f"{k}={v}" for k, v in _flat(ab.get("changes") or {}).items()) or "(same settings)"
    lines = [f"A/B of {ab.get('worker')}: B = {settings}; B is {ab.get('b_state')}"
             + (f" ({ab['b_progress']})" if ab.get("b_progress") and ab.get("b_state") == "starting" else "")]
    if ab.get("b_error"):
        lines.append(f"B failed: {ab['b_error']}")
    rows = [("", "A", "B")]
    for key, label in (("generation", "generation"), ("model", "model"), ("backend", "backend"),
                       ("precision", "precision"), ("frames", "frames"), ("fps", "throughput fps"),
                       ("latency_p50_ms", "latency p50 ms"), ("latency_p99_ms", "latency p99 ms"),
                       ("model_p50_ms", "model p50 ms"), ("model_p99_ms", "model p99 ms")):
        rows.append((label, _fmt(a.get(key)), _fmt(b.get(key))))
    cost = ab.get("cost") or {}
    for label, key, scale in COST_FIELDS:
        values = [(cost.get(v) or {}).get(key) for v in VARIANTS]
        if any(v is not None for v in values):
            rows.append((label, *(_fmt(None if v is None else v * scale) for v in values)))
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    lines += ["  ".join(c.ljust(width[i]) for i, c in enumerate(r)).rstrip() for r in rows]
    same = agr.get("same_count")
    pair = agr.get("pair_rate")
    tee = ab.get("tee") or {}
    lines.append(f"pair rate {_fmt(None if pair is None else pair * 100)} % of A's frames since B's first; "
                 f"B reads the detections A consumed (A copied {_fmt(tee.get('written'))}, B found "
                 f"{_fmt(tee.get('b_stale'))} frames already overwritten, lost {_fmt(tee.get('b_overruns'))})")
    lines.append(f"agreement on {agr.get('matched', 0)} matched frames: "
                 f"rotation {_fmt(agr.get('rot_deg'))} deg (max {_fmt(agr.get('rot_max_deg'))}), "
                 f"translation {_fmt(agr.get('transl_mm'))} mm, joints {_fmt(agr.get('joints_mm'), 'n/a (no SMPL)')} mm, "
                 f"same person count {_fmt(None if same is None else same * 100)} %")
    per_joint = _per_joint_text(agr.get("rot_deg_per_joint"))
    if per_joint:
        lines.append(f"rotation difference per joint (deg): {per_joint}")
    return "\n".join(lines)


def _per_joint_text(values: dict | None) -> str:
    if not isinstance(values, dict):
        return ""
    return ", ".join(f"{name} {_fmt(float(v))}" for name, v in values.items())


def _fmt(value, missing: str = "-") -> str:
    if value is None:
        return missing
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def csv_rows(summary: dict, worker: str, changes: dict, cost: dict | None = None) -> list[dict]:
    """One row per variant; the agreement columns (B against A) repeat on both rows; `cost` is
    the supervisor's per-variant process cost (see the module docstring)."""
    agr = summary.get("agreement") or {}
    cost = cost or {}
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    rows = []
    for variant in VARIANTS:
        s = summary.get(variant) or {}
        same = agr.get("same_count")
        rows.append({
            "Timestamp": stamp, "Variant": variant, "Worker": worker, "Generation": s.get("generation"),
            "Model": s.get("model"), "Backend": s.get("backend"), "Precision": s.get("precision"),
            "Untrained": s.get("untrained"),
            "Settings": " ".join(f"{k}={v}" for k, v in _flat(changes).items()) if variant == "B" else "(serving)",
            "Frames": s.get("frames"), "Throughput (FPS)": s.get("fps"),
            "Latency p50 (ms)": s.get("latency_p50_ms"), "Latency p99 (ms)": s.get("latency_p99_ms"),
            "Model Time p50 (ms)": s.get("model_p50_ms"), "Model Time p99 (ms)": s.get("model_p99_ms"),
            "Matched Frames": agr.get("matched"), "Rotation Diff (deg)": agr.get("rot_deg"),
            "Translation Diff (mm)": agr.get("transl_mm"), "Joint Diff (mm)": agr.get("joints_mm"),
            "Same Person Count (%)": None if same is None else round(same * 100, 2),
            "Pair Rate (%)": None if agr.get("pair_rate") is None else round(agr["pair_rate"] * 100, 2),
            "Per-Joint Rotation Diff (deg)": _per_joint_text(agr.get("rot_deg_per_joint")) or None,
        })
        mine = cost.get(variant) or {}
        for label, key, scale in COST_FIELDS:
            rows[-1][label] = None if mine.get(key) is None else round(mine[key] * scale, 3)
    return rows


def write_csv(path: str, rows: list[dict]) -> str:
    """Append rows to `path` (header written when the file is new); returns the absolute path."""
    if not isinstance(path, str) or not path.strip():
        raise ValueError("the CSV path must be a non-empty string")
    path = os.path.abspath(os.path.expanduser(path))
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise ValueError(f"cannot write {path}: directory {parent} does not exist")
    if os.path.isdir(path):
        raise ValueError(f"cannot write {path}: it is a directory")
    new = not os.path.exists(path) or os.path.getsize(path) == 0
    if not new:
        with open(path, newline="") as f:
            header = next(csv.reader(f), [])
        if tuple(header) != CSV_COLUMNS:
            raise ValueError(f"cannot append to {path}: its header is not this version's A/B columns "
                             f"(first columns {', '.join(header[:3])}...); write to a new file")
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        if new:
            writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in CSV_COLUMNS})
    return path
