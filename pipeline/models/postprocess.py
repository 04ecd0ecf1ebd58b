"""Network outputs -> per-person SMPL parameters with smplx names (numpy)."""
from __future__ import annotations

import numpy as np

from pipeline.models.preprocess import focal_length


def to_smpl_params(out: dict, centres, sides, img_wh) -> dict[str, np.ndarray]:
    """out: model/backend outputs (torch or numpy) for B persons; centres (B,2), sides (B,)
    square box sides in pixels (as returned by `crop_batch`), img_wh = (W, H) of the frame.

    Returns float32 arrays: global_orient (B,3), body_pose (B,69) axis-angle; betas (B,10);
    transl (B,3) full-image camera translation in metres; pred_cam (B,3); joint_uncertainty (B,24).
    """
    import torch

    from pipeline.models.geometry import full_image_translation, rotmat_to_axis_angle

    def t(x):
        return torch.as_tensor(np.asarray(x.detach().cpu() if hasattr(x, "detach") else x), dtype=torch.float64)

    rot = t(out["pred_pose"])
    b = rot.shape[0]
    if rot.shape[1:] != (24, 3, 3):
        raise ValueError(f"pred_pose must be (B,24,3,3), got {tuple(rot.shape)}")
    aa = rotmat_to_axis_angle(rot).reshape(b, 24 * 3)
    cam = t(out["pred_cam"]).reshape(b, 3)
    c = t(centres).reshape(b, 2)
    s = t(sides).reshape(b)
    w, h = float(img_wh[0]), float(img_wh[1])
    f = torch.full((b,), focal_length(w, h), dtype=torch.float64)
    transl = full_image_translation(cam, c, s, torch.tensor([w, h], dtype=torch.float64), f)
    as32 = lambda x: np.ascontiguousarray(x.numpy().astype(np.float32))  # noqa: E731
    return {
        "global_orient": as32(aa[:, :3]),
        "body_pose": as32(aa[:, 3:]),
        "betas": as32(t(out["pred_shape"]).reshape(b, 10)),
        "transl": as32(transl),
        "pred_cam": as32(cam),
        "joint_uncertainty": as32(t(out["var_pose"]).reshape(b, 24)),
    }
