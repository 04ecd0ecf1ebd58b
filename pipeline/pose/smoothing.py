"""One-Euro smoothing of published poses, per person track and per field (architecture.md §7).

Rotations are never filtered as raw axis-angle: axis-angle wraps at pi (a body turning
through 180 degrees jumps from +pi to -pi about the same axis), and averaging across that
jump produces a spurious full turn. Each joint rotation is converted to a unit quaternion,
made sign-continuous with the previous filtered value (q and -q are the same rotation),
filtered component-wise, renormalised and converted back.

Presets are the seed relay's. Each triplet is read as (min_cutoff Hz, beta, d_cutoff Hz);
where the relay gave only two numbers (the `moderate` betas/translation pairs) d_cutoff
is 1.0 Hz:

    preset     pose+root          betas             translation (transl and pred_cam)
    moderate   1.0 / 0.5 / 1.0    0.5 / 0.2 / 1.0   1.0 / 0.7 / 1.0
    smooth     0.3 / 0.05 / 0.8   0.1 / 0.01 / 0.5  0.4 / 0.1 / 0.9
    off        (frames pass through unchanged; change statistics are still computed)

A person's `joints` (when the frame carries them) are re-posed with the filtered rotations
and translation on the skeleton they came from, so drawn skeletons are smoothed too.

Time steps come from `t_capture_ns`, so a pipeline that skips frames filters with the
real elapsed time. Tracks are keyed by `track_id`; persons without a track (-1) are keyed
by their position in the frame. A track's state is dropped as soon as a frame arrives
without it, when more than `max_gap_s` passed since its last frame, or when the source
changes (`source_epoch`).

`Smoother.stats()` gives cumulative sums; `relay_metrics(before, after)` turns two
snapshots into the seed relay's metrics CSV columns. Change measures follow the seed:
pose body change = sum over the 23 body joints of the Frobenius norm of R_j(t) - R_j(t-1);
pose root change = the same for the root; translation change = |transl(t) - transl(t-1)|
in millimetres (full-image translation); betas variance = variance of the frame's 10 betas.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass

import numpy as np

from pipeline.pose.frame import PosesFrame, Person
from pipeline.pose.rotations import (align_sign, axis_angle_to_quat, axis_angle_to_rotmat,
                                normalize_quat, quat_to_axis_angle, quat_to_rotmat)
from pipeline.pose.skeleton import repose_joints

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OneEuroParams:
    min_cutoff: float
    beta: float
    d_cutoff: float = 1.0

    def __post_init__(self):
        if not (self.min_cutoff > 0 and self.d_cutoff > 0 and self.beta >= 0):
            raise ValueError(f"One-Euro parameters need min_cutoff > 0, d_cutoff > 0, beta >= 0; got {self}")


@dataclass(frozen=True)
class SmoothingPreset:
    pose: OneEuroParams
    betas: OneEuroParams
    translation: OneEuroParams


PRESETS: dict[str, SmoothingPreset | None] = {
    "moderate": SmoothingPreset(OneEuroParams(1.0, 0.5, 1.0), OneEuroParams(0.5, 0.2, 1.0),
                                OneEuroParams(1.0, 0.7, 1.0)),
    "smooth": SmoothingPreset(OneEuroParams(0.3, 0.05, 0.8), OneEuroParams(0.1, 0.01, 0.5),
                              OneEuroParams(0.4, 0.1, 0.9)),
    "off": None,
}


def _alpha(cutoff, dt: float):
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """Vector One-Euro filter (Casiez et al. 2012), each component with its own speed."""

    def __init__(self, params: OneEuroParams):
        self.params = params
        self.x_hat: np.ndarray | None = None
        self.dx_hat: np.ndarray | None = None

    def __call__(self, x: np.ndarray, dt: float) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self.x_hat is None:
            self.x_hat = x.copy()
            self.dx_hat = np.zeros_like(x)
            return self.x_hat.copy()
        p = self.params
        dx = (x - self.x_hat) / dt
        self.dx_hat = self.dx_hat + _alpha(p.d_cutoff, dt) * (dx - self.dx_hat)
        cutoff = p.min_cutoff + p.beta * np.abs(self.dx_hat)
        self.x_hat = self.x_hat + _alpha(cutoff, dt) * (x - self.x_hat)
        return self.x_hat.copy()


class _Track:
    def __init__(self, preset: SmoothingPreset | None):
        self.t_ns: int | None = None
        self.rot = OneEuroFilter(preset.pose) if preset else None      # (24, 4) quaternions
        self.betas = OneEuroFilter(preset.betas) if preset else None
        self.transl = OneEuroFilter(preset.translation) if preset else None
        self.pred_cam = OneEuroFilter(preset.translation) if preset else None
        self.prev_raw: tuple | None = None       # (rotmats (24,3,3), transl) for change stats
        self.prev_filtered: tuple | None = None


_STAT_KEYS = ("pose_body_change", "pose_root_change", "trans_change_mm", "betas_variance")


class Smoother:
    """Applies the selected preset to every person of every frame; not thread-safe."""

    DEFAULT_DT = 1.0 / 30.0

    def __init__(self, preset: str = "off", max_gap_s: float = 1.0):
        self._check(preset)
        self.preset_name = preset
        self.max_gap_s = float(max_gap_s)
        self._tracks: dict = {}
        self._epoch: int | None = None
        self._frames = 0
        self._filter_ms_sum = 0.0
        self._filter_ms_last = 0.0
        self._sums = {f"{kind}_{k}": 0.0 for kind in ("raw", "filtered") for k in _STAT_KEYS}
        self._counts = {k: 0 for k in _STAT_KEYS}

    @staticmethod
    def _check(preset: str) -> None:
        if preset not in PRESETS:
            raise ValueError(f"unknown smoothing preset {preset!r}; choose one of {sorted(PRESETS)}")

    def set(self, key: str, value) -> None:
        """Live switch: `set("smoothing", "smooth")`. Filter states restart from the next frame."""
        if key != "smoothing":
            raise ValueError(f"smoothing has no setting {key!r} (only 'smoothing')")
        self._check(str(value))
        if value != self.preset_name:
            log.info("smoothing preset %s -> %s", self.preset_name, value)
            self.preset_name = str(value)
            self._tracks.clear()

    def apply(self, frame: PosesFrame) -> PosesFrame:
        preset = PRESETS[self.preset_name]
        if self._epoch is not None and frame.source_epoch != self._epoch:
            self._tracks.clear()
        self._epoch = frame.source_epoch
        keys = [p.track_id if p.track_id >= 0 else ("untracked", i) for i, p in enumerate(frame.persons)]
        for gone in set(self._tracks) - set(keys):
            del self._tracks[gone]

        t0 = time.perf_counter()
        out_persons = []
        for key, person in zip(keys, frame.persons):
            track = self._tracks.get(key)
            dt = None
            if track is not None and track.t_ns is not None:
                dt = (frame.t_capture_ns - track.t_ns) * 1e-9
                if dt > self.max_gap_s:
                    track = None
                elif dt <= 0:
                    dt = self.DEFAULT_DT  # repeated/unordered timestamps: assume one frame
            if track is None:
                track = self._tracks[key] = _Track(preset)
                dt = self.DEFAULT_DT
            track.t_ns = frame.t_capture_ns
            out_persons.append(self._filter(person, track, dt) if preset else person)
        elapsed_ms = (time.perf_counter() - t0) * 1e3

        for key, raw, filt in zip(keys, frame.persons, out_persons):
            self._accumulate(self._tracks[key], raw, filt)
        self._frames += 1
        self._filter_ms_last = elapsed_ms
        self._filter_ms_sum += elapsed_ms
        if not preset:
            return frame
        return dataclasses.replace(frame, persons=out_persons)

    @staticmethod
    def _filter(p: Person, track: _Track, dt: float) -> Person:
        aa = np.concatenate([np.asarray(p.global_orient, np.float64).reshape(1, 3),
                             np.asarray(p.body_pose, np.float64).reshape(23, 3)])
        q = axis_angle_to_quat(aa)
        if track.rot.x_hat is not None:
            q = align_sign(q, track.rot.x_hat)
        q_f = normalize_quat(track.rot(q, dt))
        track.rot.x_hat = q_f.copy()  # keep the state on the unit sphere
        aa_f = quat_to_axis_angle(q_f).astype(np.float32)
        transl = track.transl(p.transl, dt).astype(np.float32)
        joints = p.joints
        if joints is not None:
            # the skeleton's joints follow the filtered rotations, or a viewer drawing them
            # would show the raw motion while the rotations are smoothed
            joints = repose_joints(joints, axis_angle_to_rotmat(aa), quat_to_rotmat(q_f), p.transl,
                                   transl).astype(np.float32)
        return dataclasses.replace(
            p,
            global_orient=aa_f[0].copy(),
            body_pose=aa_f[1:].reshape(69).copy(),
            betas=track.betas(p.betas, dt).astype(np.float32),
            transl=transl,
            pred_cam=track.pred_cam(p.pred_cam, dt).astype(np.float32),
            joints=joints,
        )

    def _accumulate(self, track: _Track, raw: Person, filt: Person) -> None:
        cur_raw = _stat_view(raw)
        cur_f = cur_raw if filt is raw else _stat_view(filt)
        self._sums["raw_betas_variance"] += float(np.var(raw.betas))
        self._sums["filtered_betas_variance"] += float(np.var(filt.betas))
        self._counts["betas_variance"] += 1
        if track.prev_raw is not None:
            for kind, prev, cur in (("raw", track.prev_raw, cur_raw), ("filtered", track.prev_filtered, cur_f)):
                d = np.linalg.norm((cur[0] - prev[0]).reshape(24, 9), axis=1)
                self._sums[f"{kind}_pose_body_change"] += float(d[1:].sum())
                self._sums[f"{kind}_pose_root_change"] += float(d[0])
                self._sums[f"{kind}_trans_change_mm"] += float(np.linalg.norm(cur[1] - prev[1]) * 1e3)
            for k in ("pose_body_change", "pose_root_change", "trans_change_mm"):
                self._counts[k] += 1
        track.prev_raw, track.prev_filtered = cur_raw, cur_f

    def stats(self) -> dict:
        """Cumulative counters (difference two snapshots for a window) plus running means."""
        out = {
            "preset": self.preset_name,
            "t_monotonic": time.monotonic(),
            "frames": self._frames,
            "tracks": len(self._tracks),
            "filter_ms_sum": self._filter_ms_sum,
            "filter_ms_last": self._filter_ms_last,
            "filter_ms_avg": self._filter_ms_sum / self._frames if self._frames else 0.0,
        }
        for name, total in self._sums.items():
            n = self._counts[name.split("_", 1)[1]]
            out[f"{name}_sum"] = total
            out[f"{name}_avg"] = total / n if n else 0.0
        for k, n in self._counts.items():
            out[f"{k}_n"] = n
        return out


def _stat_view(p: Person) -> tuple:
    aa = np.concatenate([np.asarray(p.global_orient, np.float64).reshape(1, 3),
                         np.asarray(p.body_pose, np.float64).reshape(23, 3)])
    return axis_angle_to_rotmat(aa), np.asarray(p.transl, np.float64)


RELAY_COLUMNS = (
    "FilterSetting", "Avg Relay Packet Processing FPS", "Avg Filter Latency (ms)",
    "Avg Raw Pose Body Change", "Avg Filtered Pose Body Change",
    "Avg Raw Pose Root Change", "Avg Filtered Pose Root Change",
    "Avg Raw Trans Change (mm)", "Avg Filtered Trans Change (mm)",
    "Avg Raw Betas Variance", "Avg Filtered Betas Variance",
)


def relay_metrics(before: dict, after: dict) -> dict:
    """The seed relay's metrics CSV columns over the window between two `stats()` snapshots.

    FPS is frames / elapsed wall time of the window (not a mean of instantaneous FPS).
    """
    frames = after["frames"] - before["frames"]
    elapsed = after["t_monotonic"] - before["t_monotonic"]

    def avg(name: str, count_key: str) -> float:
        n = after[f"{count_key}_n"] - before[f"{count_key}_n"]
        return (after[f"{name}_sum"] - before[f"{name}_sum"]) / n if n else 0.0

    row = {
        "FilterSetting": after["preset"],
        "Avg Relay Packet Processing FPS": frames / elapsed if elapsed > 0 else 0.0,
        "Avg Filter Latency (ms)": (after["filter_ms_sum"] - before["filter_ms_sum"]) / frames if frames else 0.0,
    }
    labels = {"pose_body_change": "Pose Body Change", "pose_root_change": "Pose Root Change",
              "trans_change_mm": "Trans Change (mm)", "betas_variance": "Betas Variance"}
    for key, label in labels.items():
        row[f"Avg Raw {label}"] = avg(f"raw_{key}", key)
        row[f"Avg Filtered {label}"] = avg(f"filtered_{key}", key)
    return row
