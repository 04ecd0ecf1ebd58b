"""A small network with POCO's interface, for backend tests that must not wait for HRNet.

Same outputs as the real model (pred_pose rotation matrices via 6D Gram-Schmidt,
pred_shape, pred_cam, var_pose), a `backbone` attribute with conv+BN (so BN folding and the
fp16 island are exercised) and calibrated BatchNorm statistics.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def rot6d_to_rotmat(x: torch.Tensor) -> torch.Tensor:
    x = x.reshape(-1, 3, 2)
    a = F.normalize(x[:, :, 0], dim=1)
    b = F.normalize(x[:, :, 1] - (a * x[:, :, 1]).sum(1, keepdim=True) * a, dim=1)
    return torch.stack([a, b, torch.cross(a, b, dim=1)], dim=-1)


class StandInPoco(nn.Module):
    def __init__(self, width: int = 16):
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=4, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width * 2, 3, stride=4, padding=1, bias=False), nn.BatchNorm2d(width * 2),
            nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        feat = width * 2
        self.fc = nn.Linear(feat + 3, 64)
        self.decpose = nn.Linear(64, 144)
        self.decshape = nn.Linear(64, 10)
        self.deccam = nn.Linear(64, 3)
        self.unc = nn.Linear(feat + 216, 24)

    def forward(self, img, bbox_info):
        feat = self.backbone(img)
        h = self.fc(torch.cat([feat, bbox_info], dim=1))
        rot = rot6d_to_rotmat(self.decpose(h)).reshape(img.shape[0], 24, 3, 3)
        var = torch.sigmoid(self.unc(torch.cat([feat, rot.reshape(img.shape[0], -1)], dim=1)))
        return {"pred_pose": rot, "pred_shape": self.decshape(h), "pred_cam": self.deccam(h),
                "var_pose": var}


def make_standin(seed: int = 0) -> StandInPoco:
    """Random weights with BatchNorm statistics calibrated on random crops (fp16-safe)."""
    torch.manual_seed(seed)
    model = StandInPoco()
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(torch.randn(8, 3, 224, 224), torch.randn(8, 3) * 0.3)
    return model.eval()


def standin_factory(variant, checkpoint, device):
    if checkpoint is not None:
        model = StandInPoco()
        model.load_state_dict(torch.load(checkpoint, map_location="cpu"))
        return model.eval().to(device)
    return make_standin(0).to(device)
