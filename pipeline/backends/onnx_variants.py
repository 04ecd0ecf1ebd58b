"""Variants of the exported fp32 ONNX graph for the CPU, and the crops that check them
(docs/architecture.md §6).

- `session`: an onnxruntime session with a graph optimisation level, a thread count and no
  spinning (the pipeline's CPU budget, pipeline/runtime/cpu.py).
- `to_fp16`: weights and activations in fp16, inputs/outputs kept fp32.
- `quantize_int8_dynamic`: int8 weights, activations quantised per call (ConvInteger).
- `quantize_int8_static`: QDQ int8 for every convolution (per-channel weights, activation
  ranges calibrated on `calibration_crops`), which onnxruntime runs as QLinearConv.
- `calibration_crops`: person-sized crops of the photos bundled with ultralytics (the same the
  `sample` source shows), so quantisation ranges come from real image statistics; a second
  seed gives held-out crops for the accuracy check.
- `max_rotation_error`: the acceptance number, max abs difference of rotation-matrix entries
  against fp32 (bound 3e-2, as for fp16 on the GPU).

tools/bench_model.py measures them all; the onnx backend builds int8 with `precision: int8`.
Heavy imports (onnxruntime, onnx, its quantisation tools) stay inside the functions.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

ROTATION_TOLERANCE = 3e-2
LEVELS = ("disable", "basic", "extended", "all")


def session(path, level: str = "all", threads: int = 0, providers=("CPUExecutionProvider",),
            spin: bool | None = None):
    """An onnxruntime session for `path` at graph optimisation `level` (one of LEVELS) with
    `threads` intra-op threads (0: onnxruntime's choice). `spin`: let idle pool threads spin
    (default: the CPU budget's setting, off)."""
    import onnxruntime as ort

    from pipeline.runtime import cpu

    names = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
             "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}
    if level not in names:
        raise ValueError(f"graph optimisation level must be one of {LEVELS}, got {level!r}")
    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, names[level])
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1  # the graph runs sequentially: no second pool
    for entry, value in cpu.ort_spinning_entries(spin).items():
        so.add_session_config_entry(entry, value)
    return ort.InferenceSession(str(path), sess_options=so, providers=list(providers))


def run_batch(sess, img: np.ndarray, bbox_info: np.ndarray) -> np.ndarray:
    """(B, 253) flat outputs of one call. POCO-PARE does not use bbox_info, and the exporter
    drops an unused input from the graph: only the inputs the graph has are fed."""
    names = {i.name for i in sess.get_inputs()}
    feed = {k: v for k, v in (("img", img), ("bbox_info", bbox_info)) if k in names}
    return sess.run(["flat"], feed)[0]


def run(sess, img: np.ndarray, bbox_info: np.ndarray) -> np.ndarray:
    """(B, 253) flat outputs, one person at a time (what batch-1 serving does)."""
    return np.concatenate([run_batch(sess, img[i:i + 1], bbox_info[i:i + 1]) for i in range(len(img))])


def calibration_crops(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n network inputs (img (n,3,224,224), bbox_info (n,3)) cut from the bundled photos at
    random person-sized boxes; different seeds give different crops."""
    from pipeline.models.preprocess import bbox_info, crop_cv2, normalise
    from pipeline.sources.sample import load_photos

    photos = load_photos()
    rng = np.random.default_rng(seed)
    crops, infos = [], []
    for i in range(n):
        img = photos[i % len(photos)]
        h, w = img.shape[:2]
        side = rng.uniform(0.35, 0.95) * min(h, w)
        centre = rng.uniform([0.25 * w, 0.3 * h], [0.75 * w, 0.7 * h])
        crops.append(crop_cv2(img, centre, side))
        infos.append(bbox_info(centre[None], np.array([side]), (w, h))[0])
    return normalise(np.stack(crops)), np.stack(infos).astype(np.float32)


def max_rotation_error(flat: np.ndarray, reference: np.ndarray) -> float:
    """Max abs difference of the 24x3x3 rotation-matrix entries (the first 216 columns)."""
    from pipeline.backends.layout import OUTPUT_SHAPES

    width = int(np.prod(OUTPUT_SHAPES["pred_pose"]))
    d = np.abs(flat[:, :width].astype(np.float64) - reference[:, :width])
    return float(d.max()) if np.isfinite(d).all() else float("inf")


def to_fp16(src: Path, dst: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    onnx.save(convert_float_to_float16(onnx.load(str(src)), keep_io_types=True), str(dst))


def quantize_int8_dynamic(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)


def quantize_int8_static(src: Path, dst: Path, crops: int = 32, seed: int = 0) -> None:
    """QDQ int8 convolutions, weights per channel, activation ranges from `crops` calibration
    crops. The head and the uncertainty head (fully connected, tiny) stay fp32: that is
    where int8 error would land directly on the rotations."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    import onnx

    img, info = calibration_crops(crops, seed)
    names = {i.name for i in onnx.load(str(src), load_external_data=False).graph.input}

    class Crops(CalibrationDataReader):
        def __init__(self):
            self.i = 0

        def get_next(self):
            if self.i >= len(img):
                return None
            self.i += 1
            feed = {"img": img[self.i - 1:self.i], "bbox_info": info[self.i - 1:self.i]}
            return {k: v for k, v in feed.items() if k in names}

    quantize_static(str(src), str(dst), Crops(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["Conv"])


BUILDERS = {"fp16": to_fp16, "int8-dynamic": quantize_int8_dynamic, "int8": quantize_int8_static}


def check_against_fp32(fp32_path: Path, variant_path: Path, crops: int = 8, seed: int = 1,
                       threads: int = 0) -> float:
    """Max rotation-matrix error of `variant_path` against `fp32_path` on held-out crops."""
    img, info = calibration_crops(crops, seed)
    ref = run(session(fp32_path, threads=threads), img, info)
    return max_rotation_error(run(session(variant_path, threads=threads), img, info), ref)
