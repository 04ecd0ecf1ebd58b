"""conv+ReLU / conv+add+ReLU rewrite (pipeline/backends/conv_fusion.py), checked on CPU: the
rewrite finds HRNet's pairs, changes no number, and the custom ops have shape functions dynamo
can trace (fullgraph). The cuDNN kernels themselves are checked in test_gpu.py."""
import copy

import pytest
import torch
from torch import nn

from pipeline.backends import conv_fusion as cf
from pipeline.backends import network as net


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(4, 4, 3, padding=1)
        self.b1 = nn.BatchNorm2d(4)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.b2 = nn.BatchNorm2d(4)
        self.c3 = nn.Conv2d(4, 4, 1)
        self.relu = nn.ReLU()

    def forward(self, x):
        y = self.relu(self.b1(self.c1(x)))
        y = torch.relu(self.b2(self.c2(y)) + x)      # residual
        return self.c3(y), y                           # c3: no ReLU, stays a plain conv


def _randomise_bn(module):
    g = torch.Generator().manual_seed(0)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return module.eval()


@pytest.mark.parametrize("channels_last", [False, True])
def test_rewrite_counts_and_equal_outputs(channels_last):
    model = _randomise_bn(Block())
    folded = net.fold_batchnorm(copy.deepcopy(model))
    fused, counts = cf.fuse_conv_relu(copy.deepcopy(folded))
    assert counts == {"conv_relu": 1, "conv_add_relu": 1}
    kinds = [type(m).__name__ for m in fused.modules()]
    assert kinds.count("FusedConv") == 2 and kinds.count("Conv2d") == 1
    x = torch.randn(2, 4, 8, 8)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        ref, got = model(x), fused(x)
    for a, b in zip(ref, got):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert got[1].is_contiguous(memory_format=torch.channels_last) == channels_last


def test_ops_pass_opcheck_and_trace_without_graph_breaks():
    x = torch.randn(1, 4, 8, 8).contiguous(memory_format=torch.channels_last)
    w, b = torch.randn(4, 4, 3, 3), torch.randn(4)
    z = torch.randn(1, 4, 8, 8)
    torch.library.opcheck(torch.ops.posepipe.conv_relu.default, (x, w, b, [1, 1], [1, 1], [1, 1], 1),
                          test_utils=("test_schema", "test_faketensor"))
    torch.library.opcheck(torch.ops.posepipe.conv_add_relu.default, (x, w, z, b, [1, 1], [1, 1], [1, 1], 1),
                          test_utils=("test_schema", "test_faketensor"))
    fused, _ = cf.fuse_conv_relu(net.fold_batchnorm(_randomise_bn(Block())))
    compiled = torch.compile(fused, backend="eager", fullgraph=True)
    with torch.inference_mode():
        for a, b in zip(compiled(x), fused(x)):
            torch.testing.assert_close(a, b)


def test_poco_backbone_is_rewritten_and_unchanged():
    from pipeline.models import load_poco
    torch.manual_seed(0)
    model = load_poco("cliff")
    plain = net.prepare_network(copy.deepcopy(model), "fp32", True)
    fused = net.prepare_network(model, "fp32", True, cudnn_fusion=True)
    # HRNet-W48: every conv followed by ReLU, or by a residual add and ReLU, is one kernel now
    assert fused.fused["conv_relu"] > 100 and fused.fused["conv_add_relu"] > 100
    x = torch.randn(1, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    bbox = torch.randn(1, 3) * 0.3
    with torch.inference_mode():
        a, b = plain.module(x, bbox), fused.module(x, bbox)
    for key in ("pred_pose", "pred_shape", "pred_cam", "var_pose"):
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-5)


def test_fusion_needs_the_folded_graph():
    from pipeline.models import load_poco
    with pytest.raises(ValueError, match="fold_bn"):
        net.prepare_network(load_poco("cliff"), "fp32", False, fold_bn=False, cudnn_fusion=True)


@pytest.mark.parametrize("variant, folded, left", [("cliff", 325, 0), ("pare", 311, 4)])
def test_bn_counts_say_what_was_folded_and_what_is_left(variant, folded, left):
    # bn_folded counts BatchNorms folded into convs (not "the graph was traced"); PARE's head
    # keeps its 4 BatchNorms because only the backbone is folded.
    from pipeline.backends.base import BackendConfig
    prepared = net.prepare_network(net.build_network(BackendConfig(model=variant)), "fp32", False)
    assert (prepared.bn_folded, prepared.bn_left) == (folded, left)
    assert net.count_batchnorm(prepared.module) == left
    unfolded = net.prepare_network(net.build_network(BackendConfig(model=variant)), "fp32", False, fold_bn=False)
    assert (unfolded.bn_folded, unfolded.bn_left) == (0, folded + left)
