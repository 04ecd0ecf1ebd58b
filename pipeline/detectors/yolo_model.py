"""Loading an ultralytics YOLO file for the person detector, and checking it is one.

`load_yolo` is the one place a weights file is opened, in ultralytics' safe-load mode unless
the user opts in (docs/architecture.md §12); everything else takes the loaded object. `check_detector` refuses
classification, pose, segmentation and oriented-box models with one line naming the file.
`build_untrained` makes a detector from an ultralytics yaml with random weights, for speed
measurements where no weights exist (its boxes mean nothing; callers say so).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from pipeline.detectors.base import DetectorError

log = logging.getLogger(__name__)

# ultralytics' name of a model's job -> what to tell the user
NOT_A_DETECTOR = {"classify": "an image classifier", "pose": "a pose (keypoint) model",
                  "segment": "a segmentation model", "obb": "an oriented-box model"}


SAFE_LOAD_ENV = "ULTRALYTICS_SAFE_LOAD"


def load_yolo(path: str | Path, allow_unsafe: bool = False):
    """Open a YOLO weights (.pt), yaml or exported engine file with ultralytics, without
    unpickling unless `allow_unsafe` (--allow-unsafe-checkpoint).

    A .pt file is a pickle: ultralytics loads it with torch.load(weights_only=False) by default,
    so a planted data/yolo*.pt (which the `auto` detector picks up by itself) could run code. Its
    own switch, ULTRALYTICS_SAFE_LOAD (ultralytics >= 8.4, torch >= 2.6; read once, when ultralytics
    is first imported), makes it load with weights_only=True and an allow-list of its layer classes.
    We set it before that import and refuse to load when it did not take effect (ultralytics was
    imported earlier without it, or is too old to have it)."""
    os.environ[SAFE_LOAD_ENV] = "0" if allow_unsafe else "1"
    try:
        from ultralytics import YOLO, __version__
        from ultralytics.nn import tasks
    except ImportError as e:
        raise DetectorError(f"the yolo detector needs ultralytics ({e}): pip install 'ultralytics>=8.4,<9'") from e
    safe = bool(getattr(tasks, "SAFE_LOAD", False)) and bool(getattr(getattr(tasks, "_SafeLoad", None),
                                                                        "SUPPORTED", False))
    if not safe and not allow_unsafe:
        raise DetectorError(
            f"refusing to load {str(path)!r}: this ultralytics {__version__} would fully unpickle it, which can "
            f"run code from the file (its safe loading, {SAFE_LOAD_ENV}=1, needs ultralytics >= 8.4 and torch "
            f">= 2.6, and must be on before ultralytics is imported). Upgrade, set {SAFE_LOAD_ENV}=1, or pass "
            f"--allow-unsafe-checkpoint if you trust the file")
    if allow_unsafe and safe:
        log.warning("%s: ultralytics was imported with safe loading on; loading it safely anyway", path)
    return YOLO(str(path))


def check_detector(model, path: str | Path) -> None:
    """Raise DetectorError unless `model` is a plain ultralytics detect model."""
    task = getattr(model, "task", None)
    if task in NOT_A_DETECTOR:
        raise DetectorError(f"{str(path)!r} is {NOT_A_DETECTOR[task]} (YOLO task {task!r}), not a detector; "
                            f"give a YOLO detect model such as yolo11n.pt (detection.model / --weights)")
    if task != "detect":
        raise DetectorError(f"{str(path)!r} is a YOLO {task!r} model; the person detector needs a detect model "
                            f"(detection.model / --weights)")
    net = getattr(model, "model", None)
    head = net.model[-1] if net is not None and hasattr(net, "model") else None
    if head is not None and type(head).__name__ not in ("Detect", "v10Detect"):
        raise DetectorError(f"{str(path)!r} ends in a {type(head).__name__} head, not a plain Detect head; "
                            f"give a YOLO detect model (detection.model / --weights)")


def build_untrained(yaml_name: str, out: str | Path, person_bias: float | None = None) -> Path:
    """A detect model built from an ultralytics yaml with random weights, saved to `out`.

    person_bias: set the class-0 logit bias of every head branch, so the random network reports
    'persons' everywhere (e.g. 8.0: scores ~1), which benchmarks and tests use to get boxes at
    all; they are still meaningless."""
    out = Path(out)
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        model = load_yolo(yaml_name)
        if person_bias is not None:
            import torch
            with torch.no_grad():
                for branch in model.model.model[-1].cv3:
                    branch[-1].bias[0] = float(person_bias)
        model.save(str(out))
        log.warning("%s: UNTRAINED %s (random weights): boxes and person counts are meaningless", out, yaml_name)
    return out
