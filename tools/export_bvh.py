"""Export one person track of a posepipe recording (.npz) to a BVH file Blender can import.

    python tools/export_bvh.py recording.npz out.bvh [--track ID] [--order ZXY|XYZ]
        [--rest-joints joints.npy | --smpl data/smpl/SMPL_NEUTRAL.pkl] [--scale 100]

Skeleton: the 24 SMPL joints with SMPL's tree (root = pelvis). Bone offsets come from, in
order of preference: `--rest-joints` (a (24, 3) .npy of rest-pose joint positions in metres,
e.g. regressed from your SMPL model), `--smpl` (the SMPL model file; joints regressed at
the track's mean betas, needs the `smplx` package), or `pipeline.pose.skeleton`'s documented
default rest joints for an average body. Leaf joints (head, feet, hands) end in a short
End Site. Units: metres times `--scale` (default 100: centimetres).

Frame: y up, the body's rest pose facing +z (SMPL's body frame). POCO's camera-frame root
(y down, z forward) is turned into it with diag(1, -1, -1), as the seed relay does. The
root carries Xposition Yposition Zposition (pelvis position: F @ (transl + J0)) then the
rotation channels; every other joint has rotation channels only. With order ZXY the
channels are "Zrotation Xrotation Yrotation" and the joint's local rotation is
Rz @ Rx @ Ry (the BVH reading: the first listed channel is the outermost rotation); XYZ
likewise. Angles are in degrees and unwrapped over time so no channel jumps by 360.

Frames: one per recorded frame in which the track appears (gaps are not filled); the
frame time is the median interval of the track's capture timestamps.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make `pipeline` importable from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.pose.rotations import EULER_ORDERS, FLIP_YZ, axis_angle_to_rotmat, rotmat_to_euler  # noqa: E402
from pipeline.sinks.recording import load_recording  # noqa: E402
from pipeline.pose.skeleton import DEFAULT_REST_JOINTS, JOINT_NAMES, PARENTS, check_rest_joints  # noqa: E402

log = logging.getLogger(__name__)

_CHILDREN = {j: [c for c in range(24) if PARENTS[c] == j] for j in range(24)}


def rest_joints_from_smpl(smpl_path, betas) -> np.ndarray:
    """Rest joints (24, 3) of the SMPL model at `betas` (needs smplx and the model file)."""
    try:
        import smplx
        import torch
    except ImportError as e:
        raise RuntimeError(f"--smpl needs the smplx and torch packages ({e}); install them or pass "
                           f"--rest-joints") from None
    path = Path(smpl_path)
    if not path.exists():
        raise FileNotFoundError(f"SMPL model file {str(path)!r} not found; pass the SMPL_NEUTRAL.pkl path "
                                f"or use --rest-joints / the default skeleton")
    model = smplx.create(str(path), model_type="smpl", gender="neutral")
    with torch.no_grad():
        out = model(betas=torch.as_tensor(np.asarray(betas, np.float32)).reshape(1, -1)[:, :10])
    return out.joints[0, :24].double().numpy()


def _write_joint(lines, j, rest, scale, rot_channels, depth):
    pad = "  " * depth
    parent = PARENTS[j]
    offset = rest[j] * 0 if parent < 0 else (rest[j] - rest[parent]) * scale
    kind = "ROOT" if parent < 0 else "JOINT"
    lines.append(f"{pad}{kind} {JOINT_NAMES[j]}")
    lines.append(pad + "{")
    lines.append(f"{pad}  OFFSET {offset[0]:.6f} {offset[1]:.6f} {offset[2]:.6f}")
    chans = (["Xposition", "Yposition", "Zposition"] if parent < 0 else []) + rot_channels
    lines.append(f"{pad}  CHANNELS {len(chans)} {' '.join(chans)}")
    if _CHILDREN[j]:
        for c in _CHILDREN[j]:
            _write_joint(lines, c, rest, scale, rot_channels, depth + 1)
    else:
        # head points up; hands and feet continue half their bone further
        end = np.array([0.0, 0.1, 0.0]) if JOINT_NAMES[j] == "head" else 0.5 * (rest[j] - rest[parent])
        end = end * scale
        lines.append(f"{pad}  End Site")
        lines.append(pad + "  {")
        lines.append(f"{pad}    OFFSET {end[0]:.6f} {end[1]:.6f} {end[2]:.6f}")
        lines.append(pad + "  }")
    lines.append(pad + "}")


def export_bvh(recording_path, out_path, track_id: int | None = None, rest_joints=None,
               smpl_path=None, order: str = "ZXY", scale: float = 100.0) -> dict:
    """Write the BVH; returns a summary (track, frames, frame_time, joints)."""
    if order not in EULER_ORDERS:
        raise ValueError(f"order must be one of {EULER_ORDERS}, got {order!r}")
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale!r}")
    rec = load_recording(recording_path)
    ids = rec.track_ids()
    if not ids:
        raise ValueError(f"{str(recording_path)!r} has no persons to export")
    if track_id is None:
        counts = {t: int(np.sum(rec["track_id"] == t)) for t in ids}
        track_id = max(counts, key=counts.get)
    elif track_id not in ids:
        raise ValueError(f"track {track_id} is not in the recording; tracks present: {ids}")
    tr = rec.track(track_id)
    n = len(tr["frame_id"])

    if rest_joints is not None:
        rest = check_rest_joints(np.load(rest_joints, allow_pickle=False)
                                 if isinstance(rest_joints, (str, Path)) else rest_joints)
    elif smpl_path is not None:
        rest = rest_joints_from_smpl(smpl_path, tr["betas"].mean(axis=0))
    else:
        rest = DEFAULT_REST_JOINTS

    aa = np.concatenate([tr["global_orient"].reshape(n, 1, 3), tr["body_pose"].reshape(n, 23, 3)], axis=1)
    R = axis_angle_to_rotmat(aa)
    R[:, 0] = FLIP_YZ @ R[:, 0]
    euler = np.degrees(rotmat_to_euler(R, order))           # (n, 24, 3)
    euler = np.degrees(np.unwrap(np.radians(euler), axis=0)) if n > 1 else euler
    pelvis = (FLIP_YZ @ (tr["transl"].astype(np.float64) + rest[0]).T).T * scale

    t = tr["t_capture_ns"].astype(np.float64) * 1e-9
    dts = np.diff(t)
    dts = dts[dts > 0]
    frame_time = float(np.median(dts)) if len(dts) else 1.0 / 30.0

    rot_channels = [f"{axis}rotation" for axis in order]
    lines = ["HIERARCHY"]
    _write_joint(lines, 0, rest, scale, rot_channels, 0)
    lines += ["MOTION", f"Frames: {n}", f"Frame Time: {frame_time:.6f}"]
    order_of_joints = _dfs_order()
    for i in range(n):
        values = list(pelvis[i]) + [v for j in order_of_joints for v in euler[i, j]]
        lines.append(" ".join(f"{v:.6f}" for v in values))
    Path(out_path).write_text("\n".join(lines) + "\n")
    log.info("wrote %s: track %d, %d frames, %.4f s per frame", out_path, track_id, n, frame_time)
    return {"track_id": track_id, "frames": n, "frame_time": frame_time, "joints": 24}


def _dfs_order() -> list[int]:
    """Joints in the order their CHANNELS appear in the hierarchy (depth first)."""
    out = []

    def visit(j):
        out.append(j)
        for c in _CHILDREN[j]:
            visit(c)
    visit(0)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Export one track of a posepipe recording to BVH.")
    ap.add_argument("recording", help="recording .npz written by the recording sink")
    ap.add_argument("out", help="output .bvh path")
    ap.add_argument("--track", type=int, default=None, help="track id (default: the longest track)")
    ap.add_argument("--order", default="ZXY", choices=EULER_ORDERS, help="Euler channel order")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--rest-joints", help="(24, 3) .npy of rest joints in metres")
    src.add_argument("--smpl", help="SMPL model file to regress rest joints from")
    ap.add_argument("--scale", type=float, default=100.0, help="units per metre (default 100 = cm)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        summary = export_bvh(args.recording, args.out, args.track, args.rest_joints, args.smpl,
                             args.order, args.scale)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"export_bvh: {e}", file=sys.stderr)
        return 2
    print(f"{args.out}: track {summary['track_id']}, {summary['frames']} frames, "
          f"{summary['frame_time']:.4f} s/frame")
    return 0


if __name__ == "__main__":
    sys.exit(main())
