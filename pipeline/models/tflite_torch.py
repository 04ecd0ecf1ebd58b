"""A TFLite convolutional network as an equivalent torch module, so it runs batched on a GPU.

The graph (operators, their options, tensor shapes) is read from the .tflite flatbuffer with the
schema module that ships in `ai-edge-litert`; the constant weights are taken from LiteRT itself
after one run without delegates (the mediapipe models store fp16 and block-sparse weights that
LiteRT densifies and dequantizes: reading them back is exact and needs no format code here).
Supported operators are the ones BlazePose's detector and its pose landmark model use: CONV_2D,
DEPTHWISE_CONV_2D, ADD, PAD, RESHAPE, DEPTH_TO_SPACE, RESIZE_BILINEAR, CONCATENATION,
MAX_POOL_2D, LOGISTIC (+ DEQUANTIZE / DENSIFY of constants). A file with any other operator is
refused with its name.

4-D activations are kept NCHW inside the module (torch's layout); a RESHAPE goes back to the
file's NHWC order first, so outputs are exactly the TFLite outputs. Input: (N, H, W, C) float
like the TFLite model, or (N, C, H, W) with `nchw_input=True`.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pipeline.models.tflite import TfliteError

CONSTANT_OPS = {"DEQUANTIZE", "DENSIFY"}
SUPPORTED = {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "PAD", "RESHAPE", "DEPTH_TO_SPACE", "RESIZE_BILINEAR",
             "CONCATENATION", "MAX_POOL_2D", "LOGISTIC"} | CONSTANT_OPS
SAME, VALID = 0, 1
NHWC_TO_NCHW_AXIS = {0: 0, 1: 2, 2: 3, 3: 1}


def read_graph(path: str | os.PathLike):
    """(ops, tensor shapes, graph inputs, graph outputs, constants) of a single-subgraph .tflite file."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    path = Path(path)
    try:
        model = schema.ModelT.InitFromPackedBuf(bytearray(path.read_bytes()), 0)
        graph = model.subgraphs[0]
    except Exception as exc:  # noqa: BLE001 - any parse failure means "not a TFLite file"
        raise TfliteError(f"{path} is not a TFLite model this converter can read: {exc}") from exc
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    ops = []
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        name = names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "?")
        if name not in SUPPORTED:
            raise TfliteError(f"{path} uses the TFLite operator {name}, which the torch runtime does not "
                              f"implement; use the LiteRT runtime for this file")
        ops.append((name, [int(i) for i in op.inputs], [int(i) for i in op.outputs], op.builtinOptions))
    shapes = {i: tuple(int(v) for v in t.shape) for i, t in enumerate(graph.tensors)}
    produced = {o for name, _, outs, _ in ops if name not in CONSTANT_OPS for o in outs}
    inputs = [int(i) for i in graph.inputs]
    wanted = {i for name, ins, _, _ in ops if name not in CONSTANT_OPS for i in ins
              if i >= 0 and i not in produced and i not in inputs}
    # the constants as LiteRT itself computes them (densified, dequantized) after one plain run
    try:
        interp = Interpreter(model_path=os.fspath(path), experimental_preserve_all_tensors=True,
                             experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        interp.allocate_tensors()
        for d in interp.get_input_details():
            interp.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
        interp.invoke()
        constants = {i: np.array(interp.get_tensor(i)) for i in wanted}
    except (ValueError, RuntimeError) as exc:
        raise TfliteError(f"{path}: LiteRT could not run it to read its weights: {exc}") from exc
    return ops, shapes, inputs, [int(i) for i in graph.outputs], constants


def build_module(path: str | os.PathLike, nchw_input: bool = False):
    """The torch module (eval mode, fp32, CPU) equivalent to the .tflite file at `path`."""
    import torch
    import torch.nn.functional as F

    ops, shapes, inputs, outputs, constants = read_graph(path)
    if len(inputs) != 1:
        raise TfliteError(f"{path} has {len(inputs)} inputs; the torch runtime takes one image input")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.steps = []
            self.params = torch.nn.ParameterList()
            for name, ins, outs, opt in ops:
                if name in CONSTANT_OPS:
                    continue
                self.steps.append(self._prepare(name, ins, outs[0], opt))

        def _const(self, i, transform=None):
            value = torch.from_numpy(np.ascontiguousarray(constants[i]).astype(np.float32))
            if transform is not None:
                value = transform(value)
            self.params.append(torch.nn.Parameter(value, requires_grad=False))
            return len(self.params) - 1

        def _prepare(self, name, ins, out, opt):
            step = {"op": name, "ins": ins, "out": out, "act": getattr(opt, "fusedActivationFunction", 0)}
            if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                if name == "CONV_2D":   # OHWI -> OIHW
                    step["w"] = self._const(ins[1], lambda w: w.permute(0, 3, 1, 2).contiguous())
                    step["groups"] = 1
                else:                   # 1HW(C*m) -> (C*m)1HW, one group per input channel
                    step["w"] = self._const(ins[1], lambda w: w.permute(3, 0, 1, 2).contiguous())
                    step["groups"] = shapes[ins[0]][3]
                step["b"] = self._const(ins[2]) if len(ins) > 2 and ins[2] >= 0 else None
                step["stride"] = (opt.strideH, opt.strideW)
                step["dilation"] = (opt.dilationHFactor, opt.dilationWFactor)
                kh, kw = shapes[ins[1]][1:3]
                step["pad"] = _same_padding(shapes[ins[0]][1:3], (kh, kw), step["stride"], step["dilation"]) \
                    if opt.padding == SAME else (0, 0, 0, 0)
            elif name == "PAD":
                p = constants[ins[1]].astype(int)          # NHWC (before, after) per axis
                step["pad"] = (int(p[2, 0]), int(p[2, 1]), int(p[1, 0]), int(p[1, 1]), int(p[3, 0]), int(p[3, 1]))
                if p[0].any():
                    raise TfliteError(f"{path}: PAD on the batch axis is not supported")
            elif name == "RESHAPE":
                step["shape"] = shapes[out]
            elif name == "DEPTH_TO_SPACE":
                step["block"] = int(opt.blockSize)
            elif name == "RESIZE_BILINEAR":
                if opt.alignCorners or not opt.halfPixelCenters:
                    raise TfliteError(f"{path}: RESIZE_BILINEAR without half-pixel centres is not supported")
                step["size"] = tuple(shapes[out][1:3])
            elif name == "CONCATENATION":
                step["axis"] = opt.axis
            elif name == "MAX_POOL_2D":
                step["kernel"] = (opt.filterHeight, opt.filterWidth)
                step["stride"] = (opt.strideH, opt.strideW)
                step["pad"] = _same_padding(shapes[ins[0]][1:3], step["kernel"], step["stride"], (1, 1)) \
                    if opt.padding == SAME else (0, 0, 0, 0)
            return step

        def forward(self, x):
            if not nchw_input:
                x = x.permute(0, 3, 1, 2)
            t = {inputs[0]: x}
            rank4 = {inputs[0]: True}
            for s in self.steps:
                op, ins = s["op"], s["ins"]
                a = t[ins[0]]
                four = rank4[ins[0]]
                if op in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                    if any(s["pad"]):
                        a = F.pad(a, s["pad"])
                    y = F.conv2d(a, self.params[s["w"]], None if s["b"] is None else self.params[s["b"]],
                                 stride=s["stride"], dilation=s["dilation"], groups=s["groups"])
                elif op == "ADD":
                    y = a + t[ins[1]]
                elif op == "PAD":
                    y = F.pad(a, s["pad"])
                elif op == "RESHAPE":
                    if four:
                        a = a.permute(0, 2, 3, 1)
                    y = a.reshape((a.shape[0],) + s["shape"][1:])
                    four = len(s["shape"]) == 4
                    if four:
                        y = y.permute(0, 3, 1, 2)
                elif op == "DEPTH_TO_SPACE":
                    b = s["block"]
                    n, c, h, w = a.shape
                    y = a.reshape(n, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2).reshape(
                        n, c // (b * b), h * b, w * b)
                elif op == "RESIZE_BILINEAR":
                    y = F.interpolate(a, size=s["size"], mode="bilinear", align_corners=False)
                elif op == "MAX_POOL_2D":
                    if any(s["pad"]):   # TensorFlow's SAME pooling ignores the padded cells
                        a = F.pad(a, s["pad"], value=float("-inf"))
                    y = F.max_pool2d(a, s["kernel"], s["stride"])
                elif op == "LOGISTIC":
                    y = torch.sigmoid(a)
                else:  # CONCATENATION
                    axis = s["axis"] % (4 if four else a.dim())
                    y = torch.cat([t[i] for i in ins], dim=NHWC_TO_NCHW_AXIS[axis] if four else axis)
                if s["act"] == 1:
                    y = F.relu(y)
                elif s["act"] == 3:
                    y = F.relu6(y)
                elif s["act"] not in (0, None):
                    raise TfliteError(f"{path}: fused activation {s['act']} is not supported")
                t[s["out"]] = y
                rank4[s["out"]] = four
            return [t[o].permute(0, 2, 3, 1) if rank4[o] else t[o] for o in outputs]

    return Net().eval()


def _same_padding(size, kernel, stride, dilation):
    """TensorFlow's SAME padding as F.pad's (left, right, top, bottom)."""
    out = []
    for n, k, s, d in zip(size, kernel, stride, dilation):
        total = max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)
        out.append((total // 2, total - total // 2))
    (top, bottom), (left, right) = out
    return (left, right, top, bottom)
