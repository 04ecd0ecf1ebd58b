"""Network outputs -> per-person SMPL parameters with smplx names (numpy)."""
from __future__ import annotations

import numpy as np

from pipeline.models.preprocess import focal_length


def to_smpl_params(out: dict, centres, sides, img_wh) -> dict[str, np.ndarray]:
    """out: model/backend outputs (torch or numpy) for B persons; centres (B,2), sides (B,)
    square box sides in pixels (as returned by `crop_batch`), img_wh = (W, H) of the frame.

    Returns float32 arrays: global_orient (B,3), body_pose (B,69) axis-angle; betas (B,10);
    transl (B,3) full-image camera translation in metres; pred_cam (B,3); joint_uncertainty (B,24).

    Plain numpy in float64: this runs once per frame on the inference worker's hot path, where
    a few dozen small torch CPU ops cost more (and jitter more) than the arithmetic itself.
    """
    from pipeline.pose.rotations import rotmat_to_axis_angle

    rot = _f64(out["pred_pose"])
    b = rot.shape[0]
    if rot.shape[1:] != (24, 3, 3):
        raise ValueError(f"pred_pose must be (B,24,3,3), got {tuple(rot.shape)}")
    aa = rotmat_to_axis_angle(rot).reshape(b, 24 * 3)
    cam = _f64(out["pred_cam"]).reshape(b, 3)
    c = _f64(centres).reshape(b, 2)
    side = _f64(sides).reshape(b)
    w, h = float(img_wh[0]), float(img_wh[1])
    f = focal_length(w, h)
    # architecture.md §6: transl = [tx + 2(cx - W/2)/(s b), ty + 2(cy - H/2)/(s b), 2 f/(s b)]
    sb = cam[:, 0] * side
    transl = np.stack([cam[:, 1] + 2.0 * (c[:, 0] - w / 2.0) / sb,
                       cam[:, 2] + 2.0 * (c[:, 1] - h / 2.0) / sb,
                       2.0 * f / sb], axis=-1)
    as32 = lambda x: np.ascontiguousarray(x, dtype=np.float32)  # noqa: E731
    return {
        "global_orient": as32(aa[:, :3]),
        "body_pose": as32(aa[:, 3:]),
        "betas": as32(_f64(out["pred_shape"]).reshape(b, 10)),
        "transl": as32(transl),
        "pred_cam": as32(cam),
        "joint_uncertainty": as32(_f64(out["var_pose"]).reshape(b, 24)),
    }


def _f64(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)
