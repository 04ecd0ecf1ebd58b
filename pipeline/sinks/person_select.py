"""Which person a single-avatar sink (seed relay, VMC) follows in a multi-person frame."""
from __future__ import annotations

from pipeline.pose.frame import Person, PosesFrame

POLICIES = ("largest", "first")


def check_policy(policy: str, track_id) -> None:
    if policy not in POLICIES:
        raise ValueError(f"person must be one of {POLICIES}, got {policy!r}")
    if track_id is not None and (isinstance(track_id, bool) or not isinstance(track_id, int) or track_id < 0):
        raise ValueError(f"track_id must be a non-negative integer or None, got {track_id!r}")


def choose_person(frame: PosesFrame, policy: str = "largest", track_id: int | None = None) -> Person | None:
    """The chosen track if `track_id` is set (None when it is not in this frame), else the
    person with the largest box area (`largest`) or the first one listed (`first`)."""
    if not frame.persons:
        return None
    if track_id is not None:
        return next((p for p in frame.persons if p.track_id == track_id), None)
    if policy == "first":
        return frame.persons[0]
    return max(frame.persons, key=lambda p: max(0.0, float(p.box[2] - p.box[0])) * max(0.0, float(p.box[3] - p.box[1])))
