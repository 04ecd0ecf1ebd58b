"""Conv + ReLU and conv + add + ReLU as single cuDNN kernels (compile backend option
`cudnn_fusion`).

At batch 1 the compiled POCO network is bound by the number of kernels, not by FLOPs: HRNet
has 325 convolutions, and Inductor cannot fuse a cuDNN convolution with the ReLU (or the
residual add + ReLU) that follows it, so each of those pairs costs a second kernel. cuDNN can
run them as one (`cudnn_convolution_relu`, `cudnn_convolution_add_relu`: relu(conv(x) + z +
bias)). This module rewrites a BatchNorm-folded torch.fx graph so the pairs call those, through
two custom ops that Inductor treats as opaque kernels (with shape functions, so dynamo traces
them without a graph break). On CPU the ops run the unfused arithmetic, so the rewritten
network is testable anywhere.
"""
from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import nn


def _conv(x, weight, bias, stride, padding, dilation, groups):
    return F.conv2d(x, weight, bias, stride, padding, dilation, groups)


def _like_cudnn(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    # cuDNN's fused kernels write their output in the input's memory format
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return out.contiguous(memory_format=torch.channels_last)
    return out.contiguous()


@torch.library.custom_op("posepipe::conv_relu", mutates_args=())
def conv_relu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: list[int],
              padding: list[int], dilation: list[int], groups: int) -> torch.Tensor:
    if x.is_cuda:
        out = torch.cudnn_convolution_relu(x, weight, bias, stride, padding, dilation, groups)
    else:
        out = F.relu(_conv(x, weight, bias, stride, padding, dilation, groups))
    return _like_cudnn(out, x)


@conv_relu.register_fake
def _(x, weight, bias, stride, padding, dilation, groups):
    return _like_cudnn(_conv(x, weight, bias, stride, padding, dilation, groups), x)


@torch.library.custom_op("posepipe::conv_add_relu", mutates_args=())
def conv_add_relu(x: torch.Tensor, weight: torch.Tensor, z: torch.Tensor, bias: torch.Tensor | None,
                  stride: list[int], padding: list[int], dilation: list[int], groups: int) -> torch.Tensor:
    if x.is_cuda:
        z = _like_cudnn(z, x)  # cuDNN adds z element by element in the output's layout
        out = torch.cudnn_convolution_add_relu(x, weight, z, 1.0, bias, stride, padding, dilation, groups)
    else:
        out = F.relu(_conv(x, weight, bias, stride, padding, dilation, groups) + z)
    return _like_cudnn(out, x)


@conv_add_relu.register_fake
def _(x, weight, z, bias, stride, padding, dilation, groups):
    return _like_cudnn(_conv(x, weight, bias, stride, padding, dilation, groups), x)


class FusedConv(nn.Module):
    """A Conv2d (BN already folded in) followed by ReLU, or by `+ z` and ReLU."""

    def __init__(self, conv: nn.Conv2d, add: bool):
        super().__init__()
        self.weight = conv.weight
        self.bias = conv.bias
        self.stride, self.padding = list(conv.stride), list(conv.padding)
        self.dilation, self.groups = list(conv.dilation), int(conv.groups)
        self.add = add

    def forward(self, x, z=None):
        if self.add:
            return torch.ops.posepipe.conv_add_relu(x, self.weight, z, self.bias, self.stride,
                                                    self.padding, self.dilation, self.groups)
        return torch.ops.posepipe.conv_relu(x, self.weight, self.bias, self.stride, self.padding,
                                            self.dilation, self.groups)


def _is_relu(node, modules) -> bool:
    if node.op == "call_module":
        return isinstance(modules.get(node.target), nn.ReLU)
    if node.op == "call_function":
        return node.target in (torch.relu, F.relu, torch.nn.functional.relu) and not node.kwargs.get("inplace")
    return node.op == "call_method" and node.target == "relu"


def _fusable_conv(node, modules) -> nn.Conv2d | None:
    if node.op != "call_module" or len(node.users) != 1:
        return None
    conv = modules.get(node.target)
    if not isinstance(conv, nn.Conv2d) or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        return None
    return conv


def fuse_conv_relu(gm: torch.fx.GraphModule) -> tuple[torch.fx.GraphModule, dict]:
    """Rewrite conv->relu and conv->add->relu chains of a traced module (in place).
    Returns the module and counts {"conv_relu": n, "conv_add_relu": m}."""
    modules = dict(gm.named_modules())
    graph = gm.graph
    counts = {"conv_relu": 0, "conv_add_relu": 0}
    for node in list(graph.nodes):
        conv = _fusable_conv(node, modules)
        if conv is None:
            continue
        user = next(iter(node.users))
        name = f"fused_{node.target.replace('.', '_')}"
        if _is_relu(user, modules):
            gm.add_submodule(name, FusedConv(conv, add=False))
            with graph.inserting_after(node):
                fused = graph.call_module(name, (node.args[0],))
            user.replace_all_uses_with(fused)
            graph.erase_node(user)
            graph.erase_node(node)
            counts["conv_relu"] += 1
        elif (user.op == "call_function" and user.target in (operator.add, torch.add) and len(user.args) == 2
              and not user.kwargs and len(user.users) == 1 and _is_relu(next(iter(user.users)), modules)):
            other = user.args[1] if user.args[0] is node else user.args[0]
            if other is node or not isinstance(other, torch.fx.Node):
                continue
            relu = next(iter(user.users))
            gm.add_submodule(name, FusedConv(conv, add=True))
            with graph.inserting_after(user):  # after both the conv's input and `other` exist
                fused = graph.call_module(name, (node.args[0], other))
            relu.replace_all_uses_with(fused)
            graph.erase_node(relu)
            graph.erase_node(user)
            graph.erase_node(node)
            counts["conv_add_relu"] += 1
    graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm, counts
