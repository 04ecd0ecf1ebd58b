"""The POCO network (backbone + regression head + uncertainty head), inference path only.

Parameter names match the official trainer's `POCO.state_dict()`: `backbone.*`, `head.*`,
`uncert_head.*`. The normalising-flow head (`flow_head.*`, incl. its `cond_layer`) is
training-only and the SMPL layer (`smpl.*`) is a separate, optional step: neither is built.
"""
from __future__ import annotations

import torch
from torch import nn

from pipeline.models.heads import CliffHead, PareHead, UncertHeadFeatPose, UncertHeadFeatPoseNet
from pipeline.models.hrnet import HRNetW48Cls, PoseHRNetW32

VARIANTS = ("cliff", "pare")


class PocoModel(nn.Module):
    """out = model(img (B,3,224,224) normalised, bbox_info (B,3)) -> dict of
    pred_pose (B,24,3,3), pred_shape (B,10), pred_cam (B,3), var_pose (B,24).
    PARE ignores bbox_info (may be None)."""

    def __init__(self, variant: str):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown POCO variant {variant!r}; allowed: {', '.join(VARIANTS)}")
        self.variant = variant
        self.untrained = True
        self.checkpoint_path: str | None = None
        if variant == "cliff":
            self.backbone = HRNetW48Cls()
            self.head = CliffHead(self.backbone.out_features)
            self.uncert_head = UncertHeadFeatPoseNet(self.backbone.out_features, 216)
        else:
            self.backbone = PoseHRNetW32()
            self.head = PareHead(self.backbone.out_channels)
            self.uncert_head = UncertHeadFeatPose(24 * 128, 512)

    def set_mean_params(self, params: dict) -> None:
        with torch.no_grad():
            self.head.init_pose.copy_(torch.as_tensor(params["pose"]).reshape(1, -1))
            self.head.init_shape.copy_(torch.as_tensor(params["shape"]).reshape(1, -1))
            self.head.init_cam.copy_(torch.as_tensor(params["cam"]).reshape(1, -1))

    def forward(self, img: torch.Tensor, bbox_info: torch.Tensor | None = None) -> dict:
        features = self.backbone(img)
        if self.variant == "cliff":
            if bbox_info is None:
                raise ValueError("POCO-CLIFF needs bbox_info (B,3); see pipeline.models.preprocess.bbox_info")
            out = self.head(features, bbox_info.to(features.dtype))
        else:
            out = self.head(features)
        var_pose = self.uncert_head(out.pop("uncert_feat"), out["pred_pose"])
        out["var_pose"] = var_pose
        return out
