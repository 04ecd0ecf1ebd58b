"""POCO regression heads (CLIFF, PARE) and the POCO uncertainty heads, official parameter names."""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from pipeline.models.geometry import rot6d_to_rotmat

NUM_JOINTS = 24
NPOSE = NUM_JOINTS * 6


class CliffHead(nn.Module):
    """CLIFF iterative regressor: 3 residual updates of (pose6d 144, betas 10, cam 3).

    Input of each iteration: cat(features 2048, bbox_info 3, pose 144, shape 10, cam 3) = 2208.
    fc1 and fc2 have no nonlinearity between them; dropout is identity at eval, so it is not
    built here (it has no parameters).
    """

    def __init__(self, num_features: int = 2048, n_iter: int = 3):
        super().__init__()
        self.n_iter = n_iter
        self.fc1 = nn.Linear(num_features + 3 + NPOSE + 13, 1024)
        self.fc2 = nn.Linear(1024, 1024)
        self.decpose = nn.Linear(1024, NPOSE)
        self.decshape = nn.Linear(1024, 10)
        self.deccam = nn.Linear(1024, 3)
        for layer in (self.decpose, self.decshape, self.deccam):
            nn.init.xavier_uniform_(layer.weight, gain=0.01)
        self.register_buffer("init_pose", torch.zeros(1, NPOSE))
        self.register_buffer("init_shape", torch.zeros(1, 10))
        self.register_buffer("init_cam", torch.zeros(1, 3))

    def forward(self, features: torch.Tensor, bbox_info: torch.Tensor) -> dict:
        b = features.shape[0]
        pose = self.init_pose.expand(b, -1)
        shape = self.init_shape.expand(b, -1)
        cam = self.init_cam.expand(b, -1)
        for _ in range(self.n_iter):
            xc = torch.cat([features, bbox_info, pose, shape, cam], 1)
            xc = self.fc2(self.fc1(xc))
            pose = self.decpose(xc) + pose
            shape = self.decshape(xc) + shape
            cam = self.deccam(xc) + cam
        return {
            "pred_pose": rot6d_to_rotmat(pose).view(b, NUM_JOINTS, 3, 3),
            "pred_shape": shape,
            "pred_cam": cam,
            "uncert_feat": features,
        }


class LocallyConnected2d(nn.Module):
    """Per-location linear map (unshared weights), kernel 1: the PARE per-joint pose MLP.

    Weight layout (1, out, in, H, W, k*k) as in the official layer, so checkpoints load.
    """

    def __init__(self, in_channels: int, out_channels: int, output_size: tuple[int, int]):
        super().__init__()
        h, w = output_size
        self.weight = nn.Parameter(torch.empty(1, out_channels, in_channels, h, w, 1))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x (B, in, H, W) -> (B, out, H, W): sum over input channels at each location
        return torch.einsum("bihw,oihw->bohw", x, self.weight[0, ..., 0])


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel_size=3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(cout, momentum=0.1), nn.ReLU()]


def part_attention(features: torch.Tensor, heatmaps: torch.Tensor) -> torch.Tensor:
    """Softmax-normalised part maps pool the features: (B,C,H,W),(B,J,H,W) -> (B,C,J)."""
    b, j, h, w = heatmaps.shape
    weights = F.softmax(heatmaps.reshape(b, j, h * w), dim=-1)
    feats = features.reshape(b, -1, h * w)
    return torch.matmul(weights, feats.transpose(2, 1)).transpose(2, 1)


class PareHead(nn.Module):
    """PARE head as configured in POCO-PARE: part-segmentation attention, no iterative regression.

    keypoint branch: 2x[conv3x3(no bias)+BN+ReLU] 480->128->128, 1x1 conv -> 25 maps (background
    first, dropped); SMPL branch: same convs, 1x1 conv 128->64 for shape/camera features. Both
    SMPL-branch feature maps are pooled per part; pose = per-joint linear 128->6, shape and
    camera = Linear(24*64 -> 10 / 3). No mean parameters are added (use_mean_* off).
    """

    def __init__(self, num_input_features: int = 480, num_filters: int = 128, smpl_final_dim: int = 64):
        super().__init__()
        self.keypoint_deconv_layers = nn.Sequential(
            *_conv_bn_relu(num_input_features, num_filters), *_conv_bn_relu(num_filters, num_filters))
        self.smpl_deconv_layers = nn.Sequential(
            *_conv_bn_relu(num_input_features, num_filters), *_conv_bn_relu(num_filters, num_filters))
        self.keypoint_final_layer = nn.Conv2d(num_filters, NUM_JOINTS + 1, kernel_size=1, stride=1, padding=0)
        self.smpl_final_layer = nn.Conv2d(num_filters, smpl_final_dim, kernel_size=1, stride=1, padding=0)
        # softargmax temperature: unused with part-segmentation attention, but in the state dict
        self.register_buffer("temperature", torch.tensor(1.0))
        self.register_buffer("init_pose", torch.zeros(1, NPOSE))
        self.register_buffer("init_shape", torch.zeros(1, 10))
        self.register_buffer("init_cam", torch.zeros(1, 3))
        self.shape_mlp = nn.Linear(NUM_JOINTS * smpl_final_dim, 10)
        self.cam_mlp = nn.Linear(NUM_JOINTS * smpl_final_dim, 3)
        self.pose_mlp = LocallyConnected2d(num_filters, 6, (NUM_JOINTS, 1))

    def forward(self, features: torch.Tensor) -> dict:
        b = features.shape[0]
        part_feats = self.keypoint_deconv_layers(features)
        heatmaps = self.keypoint_final_layer(part_feats)[:, 1:]
        smpl_feats = self.smpl_deconv_layers(features)
        cam_shape_feats = self.smpl_final_layer(smpl_feats)
        point_local_feat = part_attention(smpl_feats, heatmaps)          # (B,128,24)
        cam_shape_feats = part_attention(cam_shape_feats, heatmaps)      # (B,64,24)
        pose6d = self.pose_mlp(point_local_feat.unsqueeze(-1))           # (B,6,24,1)
        shape_feats = torch.flatten(cam_shape_feats, start_dim=1)
        pred_cam = self.cam_mlp(shape_feats)
        pred_shape = self.shape_mlp(shape_feats)
        pose6d = pose6d.squeeze(-1).transpose(2, 1)                      # (B,24,6)
        return {
            "pred_pose": rot6d_to_rotmat(pose6d).reshape(b, NUM_JOINTS, 3, 3),
            "pred_shape": pred_shape,
            "pred_cam": pred_cam,
            # channel-major flatten (c*24 + j), as the uncertainty head was trained on
            "uncert_feat": point_local_feat.reshape(b, -1),
        }


class UncertHeadFeatPoseNet(nn.Module):
    """POCO-CLIFF uncertainty head (`feat-pose-net`, 216 neurons, sigmoid activations).

    var_pose = sigmoid(fc1(cat[sigmoid(featNet(feat 2048)), sigmoid(poseNet(rotmats 216))])).
    Feature part first, pose part second. Dropout (identity at eval) sits before each sigmoid.
    """

    def __init__(self, num_features: int = 2048, hidden: int = 216):
        super().__init__()
        self.uncert_fc_poseNet = nn.Linear(NUM_JOINTS * 9, hidden)
        self.uncert_fc_featNet = nn.Linear(num_features, hidden)
        self.uncert_fc1 = nn.Linear(2 * hidden, NUM_JOINTS)

    def forward(self, uncert_feat: torch.Tensor, pred_pose: torch.Tensor) -> torch.Tensor:
        b = uncert_feat.shape[0]
        pose_feats = torch.sigmoid(self.uncert_fc_poseNet(pred_pose.reshape(b, -1)))
        feat_feats = torch.sigmoid(self.uncert_fc_featNet(uncert_feat))
        return torch.sigmoid(self.uncert_fc1(torch.cat([feat_feats, pose_feats], 1)))


class UncertHeadFeatPose(nn.Module):
    """POCO-PARE uncertainty head (`feat-pose`, 512 neurons): cat(feat 3072, rotmats 216) = 3288
    -> Linear 512 -> sigmoid -> Linear 24 -> sigmoid."""

    def __init__(self, num_features: int = NUM_JOINTS * 128, hidden: int = 512):
        super().__init__()
        self.uncert_fc1 = nn.Linear(num_features + NUM_JOINTS * 9, hidden)
        self.uncert_fc2 = nn.Linear(hidden, NUM_JOINTS)

    def forward(self, uncert_feat: torch.Tensor, pred_pose: torch.Tensor) -> torch.Tensor:
        b = uncert_feat.shape[0]
        x = torch.cat([uncert_feat, pred_pose.reshape(b, -1)], 1)
        x = torch.sigmoid(self.uncert_fc1(x))
        return torch.sigmoid(self.uncert_fc2(x))
