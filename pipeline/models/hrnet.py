"""HRNet backbones used by POCO (architecture.md §6).

Two variants share the same building blocks and the official parameter names, so the
released POCO state dicts load with ``strict=True``:

* ``HRNetW48Cls``  – classification HRNet-W48 (POCO-CLIFF); returns pooled (B, 2048) features.
* ``PoseHRNetW32`` – pose HRNet-W32 with conv upsampling (POCO-PARE); returns (B, 480, 56, 56).
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

# Both networks run in eval mode; momentum only matters while calibrating BN statistics.
_BN_MOMENTUM = 0.1


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=_BN_MOMENTUM)


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = _bn(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = _bn(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = _bn(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = _bn(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = _bn(planes * self.expansion)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


def make_layer(block: type, inplanes: int, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
    """A stack of residual blocks; the first one projects the shortcut when shapes change."""
    downsample = None
    if stride != 1 or inplanes != planes * block.expansion:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes * block.expansion, kernel_size=1, stride=stride, bias=False),
            _bn(planes * block.expansion),
        )
    layers = [block(inplanes, planes, stride, downsample)]
    for _ in range(1, blocks):
        layers.append(block(planes * block.expansion, planes))
    return nn.Sequential(*layers)


class HighResolutionModule(nn.Module):
    """Parallel branches of BASIC blocks followed by an all-to-all fusion of resolutions."""

    def __init__(self, channels: list[int], num_blocks: int = 4):
        super().__init__()
        self.num_branches = len(channels)
        self.branches = nn.ModuleList(
            [make_layer(BasicBlock, c, c, num_blocks) for c in channels]
        )
        self.fuse_layers = self._make_fuse_layers(channels) if self.num_branches > 1 else None

    @staticmethod
    def _make_fuse_layers(ch: list[int]) -> nn.ModuleList:
        n = len(ch)
        fuse_layers = nn.ModuleList()
        for i in range(n):
            row = nn.ModuleList()
            for j in range(n):
                if j > i:
                    # lower resolution -> 1x1 conv + BN, then nearest upsampling
                    row.append(nn.Sequential(
                        nn.Conv2d(ch[j], ch[i], 1, 1, 0, bias=False),
                        _bn(ch[i]),
                        nn.Upsample(scale_factor=2 ** (j - i), mode="nearest"),
                    ))
                elif j == i:
                    row.append(None)
                else:
                    # higher resolution -> chain of strided 3x3 convs; ReLU on all but the last
                    steps = []
                    for k in range(i - j):
                        if k == i - j - 1:
                            steps.append(nn.Sequential(
                                nn.Conv2d(ch[j], ch[i], 3, 2, 1, bias=False), _bn(ch[i])))
                        else:
                            steps.append(nn.Sequential(
                                nn.Conv2d(ch[j], ch[j], 3, 2, 1, bias=False), _bn(ch[j]), nn.ReLU()))
                    row.append(nn.Sequential(*steps))
            fuse_layers.append(row)
        return fuse_layers

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.num_branches == 1:
            return [self.branches[0](xs[0])]
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        fused = []
        for i, row in enumerate(self.fuse_layers):
            # summation order (branch 0 first) follows the official implementation
            y = xs[0] if i == 0 else row[0](xs[0])
            for j in range(1, self.num_branches):
                y = y + (xs[j] if i == j else row[j](xs[j]))
            fused.append(F.relu(y))
        return fused


def _make_transition(pre: list[int], cur: list[int]) -> nn.ModuleList:
    layers = nn.ModuleList()
    for i, c in enumerate(cur):
        if i < len(pre):
            if c != pre[i]:
                layers.append(nn.Sequential(
                    nn.Conv2d(pre[i], c, 3, 1, 1, bias=False), _bn(c), nn.ReLU()))
            else:
                layers.append(None)
        else:
            steps = []
            for k in range(i + 1 - len(pre)):
                out_c = c if k == i - len(pre) else pre[-1]
                steps.append(nn.Sequential(
                    nn.Conv2d(pre[-1], out_c, 3, 2, 1, bias=False), _bn(out_c), nn.ReLU()))
            layers.append(nn.Sequential(*steps))
    return layers


def _apply_transition(transition: nn.ModuleList, ys: list[torch.Tensor], single_input: bool) -> list:
    out = []
    for i, t in enumerate(transition):
        if single_input:
            out.append(ys[0] if t is None else t(ys[0]))
        elif t is None:
            out.append(ys[i])
        else:
            # new (and re-projected) branches are fed from the lowest resolution output
            out.append(t(ys[-1]))
    return out


class _HRNetTrunk(nn.Module):
    """Stem, layer1 and stages 2-4 (modules 1/4/3, BASIC blocks x4) for base width w."""

    def __init__(self, width: int):
        super().__init__()
        w = width
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = _bn(64)
        self.conv2 = nn.Conv2d(64, 64, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn2 = _bn(64)
        self.layer1 = make_layer(Bottleneck, 64, 64, 4)
        c2, c3, c4 = [w, 2 * w], [w, 2 * w, 4 * w], [w, 2 * w, 4 * w, 8 * w]
        self.transition1 = _make_transition([256], c2)
        self.stage2 = nn.Sequential(*[HighResolutionModule(list(c2)) for _ in range(1)])
        self.transition2 = _make_transition(c2, c3)
        self.stage3 = nn.Sequential(*[HighResolutionModule(list(c3)) for _ in range(4)])
        self.transition3 = _make_transition(c3, c4)
        self.stage4 = nn.Sequential(*[HighResolutionModule(list(c4)) for _ in range(3)])
        self.stage_channels = c4

    def trunk(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = self.layer1(x)
        ys = self.stage2(_apply_transition(self.transition1, [x], single_input=True))
        ys = self.stage3(_apply_transition(self.transition2, ys, single_input=False))
        return self.stage4(_apply_transition(self.transition3, ys, single_input=False))


class HRNetW48Cls(_HRNetTrunk):
    """HRNet-W48 classification network without its 1000-way classifier: (B,3,H,W) -> (B,2048)."""

    out_features = 2048
    # present in official checkpoints but never used by POCO; the loader drops them on purpose
    IGNORED_KEYS = ("classifier.weight", "classifier.bias")

    def __init__(self):
        super().__init__(48)
        head_channels = [32, 64, 128, 256]
        self.incre_modules = nn.ModuleList([
            make_layer(Bottleneck, c, hc, 1) for c, hc in zip(self.stage_channels, head_channels)
        ])
        self.downsamp_modules = nn.ModuleList([
            nn.Sequential(
                nn.Conv2d(head_channels[i] * 4, head_channels[i + 1] * 4, kernel_size=3, stride=2, padding=1),
                _bn(head_channels[i + 1] * 4),
                nn.ReLU(),
            )
            for i in range(3)
        ])
        self.final_layer = nn.Sequential(
            nn.Conv2d(head_channels[3] * 4, 2048, kernel_size=1, stride=1, padding=0),
            _bn(2048),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ys = self.trunk(x)
        y = self.incre_modules[0](ys[0])
        for i, down in enumerate(self.downsamp_modules):
            y = self.incre_modules[i + 1](ys[i + 1]) + down(y)
        y = self.final_layer(y)
        return y.mean(dim=(2, 3))


def _upsample_layer(num_layers: int, channels: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(num_layers):
        layers += [
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
            nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1, bias=False),
            _bn(channels),
            nn.ReLU(),
        ]
    return nn.Sequential(*layers)


class PoseHRNetW32(_HRNetTrunk):
    """Pose HRNet-W32; all branches brought to 1/4 resolution by conv upsampling: (B,480,56,56)."""

    out_channels = 480

    def __init__(self, num_joints: int = 24):
        super().__init__(32)
        # 1x1 heatmap layer of the pose network; kept so official state dicts load strictly,
        # but POCO-PARE never calls it.
        self.final_layer = nn.Conv2d(32, num_joints, kernel_size=1, stride=1, padding=0)
        self.upsample_stage_2 = _upsample_layer(1, 64)
        self.upsample_stage_3 = _upsample_layer(2, 128)
        self.upsample_stage_4 = _upsample_layer(3, 256)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ys = self.trunk(x)
        return torch.cat([
            ys[0],
            self.upsample_stage_2(ys[1]),
            self.upsample_stage_3(ys[2]),
            self.upsample_stage_4(ys[3]),
        ], dim=1)
