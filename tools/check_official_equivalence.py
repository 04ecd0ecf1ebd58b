"""Numerical equivalence check of posepipe's POCO models against the OFFICIAL POCO code.

The official implementation is not part of this repository (licence). You provide a checkout
of it (https://github.com/saidwivedi/POCO) and this script imports it from there at run time;
nothing of it is copied here. The weights are random (no released checkpoint is needed): the
official network is built from its own demo configs, its BatchNorm statistics are calibrated
on real image crops, its `state_dict()` is saved exactly as the official demo/trainer saves it
and loaded into ours with `load_poco(..., checkpoint=...)`; then both run on identical inputs.

    python tools/check_official_equivalence.py --official-src /path/to/POCO
    python tools/check_official_equivalence.py --official-src /path/to/POCO --variants cliff \
        --no-fp64 --json /tmp/equivalence.json

What is compared (max abs difference; the script exits non-zero when a check fails):
  1. checkpoint layout: the official state dict (raw, as `torch.save(model.state_dict())`, and
     Lightning-style `{'state_dict': {'model.<key>': ...}}`) loads strictly; the only official
     backbone/head/uncert_head keys we do not use are listed (CLIFF: the unused classifier).
  2. network outputs pred_pose (rotation matrices), pred_shape, pred_cam, var_pose and the
     backbone features, batch 1 and 3, fp32 (tolerance 1e-4) and fp64 (1e-10).
  3. preprocessing on a real image (ultralytics' bus.jpg or --image) with boxes incl. one partly
     outside the frame: 224 crops (uint8 and normalised) of the official demo crop
     (`get_single_image_crop_demo`, boxes as [cx, cy, max(w,h), max(w,h)] like its tracker,
     bbox_scale 1.0) against `crop_batch(..., scale=1.0)` and `crop_torch`; bbox_info, focal
     length and the full-image camera translation.
  4. rotation matrix -> axis-angle (official `rotation_matrix_to_angle_axis`) and 6D -> matrix
     on random rotations and rotations near 0 and near pi.

Third-party modules the official package imports but the forward pass does not need (loguru,
yacs, pytorch_lightning, skimage, trimesh, jpeg4py, pytube, ...) are replaced by inert stand-ins
when they are not installed. SMPL files are synthetic (pipeline.testing). Runs on CPU in a few
minutes on 2 cores (HRNet-W48 in float64 is the slow part; --no-fp64 skips it).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import logging
import os
import sys
import tempfile
import types
from pathlib import Path

import numpy as np

# Run as a script, tools/ is sys.path[0]; import `pipeline` from the repository root instead, and
# keep tools/ off the path so no tool's name can shadow a stdlib module torchvision imports.
_TOOLS = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _TOOLS]
sys.path.insert(0, str(_TOOLS.parent))

log = logging.getLogger("check_official_equivalence")

TOL = {"float32": 1e-4, "float64": 1e-10}
OUTPUT_KEYS = ("pred_pose", "pred_shape", "pred_cam", "var_pose")


# ----------------------------------------------------------------------------------------------
# importing the official package without its training/rendering dependencies


class _Inert:
    """Stand-in for anything of a module that is not installed; using it says so."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, item):
        if item.startswith("__"):
            raise AttributeError(item)
        return _Inert(f"{self._name}.{item}")

    def __call__(self, *args, **kwargs):
        raise RuntimeError(f"{self._name} was replaced by an inert stand-in because it is not "
                           f"installed; install it to use this part of the official code")


def _inert_module(name: str) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__path__ = []  # lets `import a.b.c` find children we also register

    def __getattr__(item, _n=name):
        if item.startswith("__"):  # keep inspect/pickle/import machinery away from stand-ins
            raise AttributeError(item)
        return _Inert(f"{_n}.{item}")

    mod.__getattr__ = __getattr__
    return mod


class _LoguruLogger:
    """loguru's `logger` API used by the official code, routed to std logging."""

    def __getattr__(self, level):
        target = {"success": "info", "trace": "debug"}.get(level, level)
        fn = getattr(logging.getLogger("official"), target, None)
        return fn if fn is not None else (lambda *a, **k: None)

    def add(self, *args, **kwargs):
        return 0


class _CfgNode(dict):
    """Minimal yacs CfgNode: a dict with attribute access (all the official model code uses)."""

    def __getattr__(self, item):
        try:
            return self[item]
        except KeyError as exc:
            raise AttributeError(item) from exc

    def __setattr__(self, key, value):
        self[key] = value


def _register(name: str, module: types.ModuleType) -> None:
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent and parent in sys.modules:
        setattr(sys.modules[parent], child, module)


def _ensure(name: str, factory) -> None:
    """Keep the installed module when importable, else register `factory(name)`."""
    try:
        importlib.import_module(name)
    except Exception:  # noqa: BLE001  (ImportError and broken installs alike)
        parts = name.split(".")
        for i in range(1, len(parts)):
            pname = ".".join(parts[:i])
            if pname not in sys.modules:
                try:
                    importlib.import_module(pname)
                except Exception:  # noqa: BLE001
                    _register(pname, _inert_module(pname))
        _register(name, factory(name))
        log.debug("using a stand-in for %s", name)


def _loguru(name):
    mod = types.ModuleType(name)
    mod.logger = _LoguruLogger()
    return mod


def _yacs_config(name):
    mod = types.ModuleType(name)
    mod.CfgNode = _CfgNode
    return mod


def _tv_models_utils(name):
    import torch.hub

    mod = types.ModuleType(name)
    mod.load_state_dict_from_url = torch.hub.load_state_dict_from_url
    return mod


def setup_official(src: Path, workdir: Path) -> None:
    """Make `pocolib` importable from `src`, with synthetic SMPL/mean-parameter files."""
    from pipeline.testing.smpl_files import make_j_regressor_extra, make_mean_params, make_synthetic_smpl

    if not (src / "pocolib" / "models" / "poco.py").is_file():
        raise SystemExit(f"--official-src {src} does not look like a POCO checkout "
                         f"(pocolib/models/poco.py missing); clone https://github.com/saidwivedi/POCO")
    _ensure("loguru", _loguru)
    _ensure("yacs.config", _yacs_config)
    _ensure("torchvision.models.utils", _tv_models_utils)
    for name in ("pytorch_lightning", "skimage.util.shape", "skimage.transform", "trimesh.visual",
                 "jpeg4py", "pytube", "joblib", "scipy.misc", "flatten_dict"):
        _ensure(name, _inert_module)

    smpl_dir = workdir / "smpl"
    make_synthetic_smpl(smpl_dir)
    mean_params = make_mean_params(workdir / "smpl_mean_params.npz")
    regressor = make_j_regressor_extra(workdir / "J_regressor_extra.npy")

    sys.path.insert(0, str(src))
    # The official config module pulls in cluster/yaml tooling and points at data/ files; the
    # model code only reads these three paths from it.
    importlib.import_module("pocolib.core")
    config = types.ModuleType("pocolib.core.config")
    config.SMPL_MEAN_PARAMS = str(mean_params)
    config.SMPL_MODEL_DIR = str(smpl_dir)
    config.JOINT_REGRESSOR_TRAIN_EXTRA = str(regressor)
    _register("pocolib.core.config", config)


@contextlib.contextmanager
def _cwd(path: Path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def official_kwargs(src: Path, variant: str) -> dict:
    """POCO(...) arguments from the official demo config, as its tester passes them."""
    import yaml

    cfg = yaml.safe_load((src / "configs" / f"demo_poco_{variant}.yaml").read_text())["POCO"]
    return dict(
        backbone=cfg["BACKBONE"], img_res=224, uncert_layer=cfg["UNCERT_LAYER"],
        activation_type=cfg["ACTIVATION_TYPE"], uncert_type=cfg["UNCERT_TYPE"],
        uncert_inp_type=cfg["UNCERT_INP_TYPE"], loss_ver=cfg["LOSS_VER"], num_neurons=cfg["NUM_NEURONS"],
        num_flow_layers=cfg["NUM_FLOW_LAYERS"], sigma_dim=cfg["SIGMA_DIM"], num_nf_rv=cfg["NUM_NF_RV"],
        mask_params_id=cfg["MASK_PARAMS_ID"], nflow_mask_type=cfg["NFLOW_MASK_TYPE"],
        exclude_uncert_idx=cfg["EXCLUDE_UNCERT_IDX"], use_dropout=cfg["USE_DROPOUT"],
        use_iter_feats=cfg["USE_ITER_FEATS"], cond_nflow=cfg["COND_NFLOW"], context_dim=cfg["CONTEXT_DIM"],
        gt_pose_cond=cfg.get("GT_POSE_COND", False), gt_pose_cond_ratio=cfg.get("GT_POSE_COND_RATIO", 0.25),
        pretrained=None,
    )


def build_official(src: Path, workdir: Path, variant: str, seed: int):
    import torch

    from pocolib.models.poco import POCO

    torch.manual_seed(seed)
    with _cwd(workdir):  # the backbones look for optional ImageNet/COCO weights under ./data
        model = POCO(**official_kwargs(src, variant))
    return model


def perturb_affine(model, seed: int) -> None:
    """Trained networks have non-trivial BN affine parameters; random init has 1/0. Make them
    random so that BN placement differences cannot hide."""
    import torch
    from torch import nn

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=gen))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))


def official_forward(model, img, bbox_info) -> dict:
    """POCO.forward without its SMPL and flow steps (neither changes the compared outputs;
    the CLIFF SMPL step also hard-codes .cuda())."""
    features = model.backbone(img)
    if "cliff" in model.head_name:
        head_out = model.head(features, {"bbox_info": bbox_info})
    else:
        head_out = model.head(features)
    unc = model.uncert_head(head_out, {}, {})
    return {"features": features, "pred_pose": head_out["pred_pose"], "pred_shape": head_out["pred_shape"],
            "pred_cam": head_out["pred_cam"], "var_pose": unc["var_pose"]}


# ----------------------------------------------------------------------------------------------
# inputs


def find_image(path: str | None) -> Path:
    if path:
        return Path(path)
    spec = importlib.util.find_spec("ultralytics")
    if spec is None or not spec.origin:
        raise SystemExit("no --image given and ultralytics (which ships assets/bus.jpg) is not installed")
    return Path(spec.origin).parent / "assets" / "bus.jpg"


def read_rgb(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path))
    if img is None:
        raise SystemExit(f"cannot read image {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def test_boxes(w: int, h: int) -> np.ndarray:
    """x1,y1,x2,y2 boxes on a WxH frame: inside, tall, wide, partly outside (left/bottom)."""
    return np.array([
        [0.06 * w, 0.27 * h, 0.30 * w, 0.90 * h],
        [0.30 * w + 0.37, 0.25 * h + 0.61, 0.52 * w + 0.19, 0.85 * h + 0.77],
        [0.10 * w, 0.10 * h, 0.95 * w, 0.55 * h],
        [-0.12 * w, 0.55 * h, 0.20 * w, 1.15 * h],
    ], np.float64)


def realistic_batch(frame: np.ndarray, n: int, seed: int):
    """(img (n,3,224,224) float32 tensor, bbox_info (n,3)) from random boxes on a real frame."""
    from pipeline.models.preprocess import crop_batch

    rng = np.random.default_rng(seed)
    h, w = frame.shape[:2]
    cx, cy = rng.uniform(0.2 * w, 0.8 * w, n), rng.uniform(0.2 * h, 0.8 * h, n)
    bw, bh = rng.uniform(0.1 * w, 0.5 * w, n), rng.uniform(0.2 * h, 0.7 * h, n)
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
    img, info, _, _ = crop_batch(frame, boxes)
    return img, info


# ----------------------------------------------------------------------------------------------
# checks


class Report:
    def __init__(self):
        self.rows: list[dict] = []

    def add(self, section: str, name: str, value: float, tol: float | None, note: str = "") -> bool:
        ok = tol is None or (np.isfinite(value) and value <= tol)
        self.rows.append({"section": section, "name": name, "max_abs_diff": float(value),
                          "tolerance": tol, "ok": bool(ok), "note": note})
        mark = "ok  " if ok else "FAIL"
        tol_s = "" if tol is None else f" (tol {tol:g})"
        print(f"[{mark}] {section:<13} {name:<46} {value:.3e}{tol_s} {note}", flush=True)
        return ok

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.rows if not r["ok"]]


def _maxabs(a, b) -> float:
    import torch

    a = torch.as_tensor(a).detach().double()
    b = torch.as_tensor(b).detach().double()
    if a.shape != b.shape:
        raise AssertionError(f"shape mismatch {tuple(a.shape)} vs {tuple(b.shape)}")
    return float((a - b).abs().max()) if a.numel() else 0.0


def check_variant(src: Path, workdir: Path, variant: str, frame: np.ndarray, rep: Report,
                  fp64: bool, seed: int) -> None:
    import torch
    from torch import nn

    from pipeline.models import load_poco

    official = build_official(src, workdir, variant, seed)
    perturb_affine(official, seed)
    # BN statistics from real crops (cumulative average, as a trained network has them)
    bns = [m for m in official.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    official.train()
    with torch.no_grad():
        for i in range(3):
            img, info = realistic_batch(frame, 4, seed=100 + i)
            official_forward(official, img, info)
    for m in bns:
        m.momentum = 0.1
    official.eval()

    state = official.state_dict()
    parts = sorted({k.split(".")[0] for k in state})
    print(f"\nPOCO-{variant.upper()}: official state dict has {len(state)} keys in parts {parts}")
    ckpt_raw = workdir / f"official_{variant}_raw.pt"
    torch.save(state, ckpt_raw)  # what the official demo writes (best_model.pt)
    ckpt_pl = workdir / f"official_{variant}_lightning.pt"
    torch.save({"state_dict": {**{f"model.{k}": v for k, v in state.items()},
                               "loss_fn.dummy": torch.zeros(1)}, "epoch": 1}, ckpt_pl)

    ours = load_poco(variant, checkpoint=ckpt_raw, device="cpu")
    load_poco(variant, checkpoint=ckpt_pl, device="cpu")  # raises on any missing/unexpected key
    ours_keys = {f"{part}.{k}" for part in ("backbone", "head", "uncert_head")
                 for k in getattr(ours, part).state_dict()}
    off_keys = {k for k in state if k.split(".")[0] in ("backbone", "head", "uncert_head")}
    unused = sorted(off_keys - ours_keys)
    missing = sorted(ours_keys - off_keys)
    rep.add("checkpoint", f"{variant}: our keys absent from official", len(missing), 0,
            ", ".join(missing[:4]))
    expected_unused = {"backbone.classifier.weight", "backbone.classifier.bias"} if variant == "cliff" else set()
    rep.add("checkpoint", f"{variant}: official keys we do not use", len(set(unused) - expected_unused), 0,
            f"(ignored on purpose: {', '.join(sorted(expected_unused)) or 'none'})")
    n_params = sum(v.numel() for k, v in state.items() if k.split(".")[0] in ("backbone", "head", "uncert_head")
                   and not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    print(f"  official backbone+head+uncert_head: {n_params / 1e6:.2f} M parameters")

    dtypes = [torch.float32] + ([torch.float64] if fp64 else [])
    for dtype in dtypes:
        official.to(dtype)
        ours.to(dtype)
        tname = str(dtype).replace("torch.", "")
        for b in (1, 3):
            img, info = realistic_batch(frame, b, seed=7 + b)
            if b == 3:  # one input that is not an image crop at all
                img[2] = torch.randn(3, 224, 224, generator=torch.Generator().manual_seed(seed))
            img, info = img.to(dtype), info.to(dtype)
            with torch.no_grad():
                ref = official_forward(official, img, info)
                got = ours(img, info)
                feats = ours.backbone(img)
            tol = TOL[tname]
            rep.add("network", f"{variant} {tname} B={b} backbone features", _maxabs(feats, ref["features"]),
                    tol * 10, f"(|ref| max {float(ref['features'].abs().max()):.2g})")
            for key in OUTPUT_KEYS:
                rep.add("network", f"{variant} {tname} B={b} {key}", _maxabs(got[key], ref[key]), tol)
    official.float()


def check_preprocessing(frame: np.ndarray, rep: Report) -> None:
    import torch

    from pocolib.models.head.smplcam_head import convert_pare_to_full_img_cam
    from pocolib.utils.image_utils import calculate_bbox_info, calculate_focal_length
    from pocolib.utils.vibe_image_utils import get_single_image_crop_demo

    from pipeline.models.geometry import full_image_translation
    from pipeline.models.postprocess import to_smpl_params
    from pipeline.models.preprocess import IMG_MEAN, IMG_STD, crop_batch, crop_torch, focal_length

    h, w = frame.shape[:2]
    boxes = test_boxes(w, h)
    print(f"\npreprocessing on a {w}x{h} image, {len(boxes)} boxes (last one partly outside)")
    rep.add("preprocess", "focal length", abs(focal_length(w, h) - calculate_focal_length(h, w)), 1e-9)
    img, info, centres, sides = crop_batch(frame, boxes, scale=1.0)
    frame_t = torch.from_numpy(frame).permute(2, 0, 1).contiguous()
    img_t = crop_torch(frame_t, centres, sides)
    mean, std = IMG_MEAN.reshape(3, 1, 1), IMG_STD.reshape(3, 1, 1)
    for i, box in enumerate(boxes):
        bw, bh = box[2] - box[0], box[3] - box[1]
        s = max(bw, bh)
        # the official tracker's detection format: centre and the square side max(w, h)
        det = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2, s, s])
        norm_off, raw_off, _ = get_single_image_crop_demo(frame, det, kp_2d=None, scale=1.0, crop_size=224)
        ours_u8 = np.clip(np.rint((img[i].numpy() * std + mean) * 255.0), 0, 255).astype(np.uint8).transpose(1, 2, 0)
        rep.add("preprocess", f"box {i}: crop uint8 (cv2 path)",
                float(np.abs(ours_u8.astype(int) - raw_off.astype(int)).max()), 0)
        rep.add("preprocess", f"box {i}: crop normalised (cv2 path)", _maxabs(img[i], norm_off), 1e-6)
        rep.add("preprocess", f"box {i}: crop normalised (torch path)", _maxabs(img_t[i], norm_off), None,
                "(grid_sample vs cv2 fixed point; informational)")
        ref_info = calculate_bbox_info(det[:2], s / 200.0, (h, w))
        rep.add("preprocess", f"box {i}: bbox_info", _maxabs(info[i], torch.from_numpy(ref_info)), 0,
                f"{ref_info.tolist()}")

    gen = torch.Generator().manual_seed(3)
    cam = torch.stack([0.5 + torch.rand(len(boxes), generator=gen),
                       0.2 * torch.randn(len(boxes), generator=gen),
                       0.2 * torch.randn(len(boxes), generator=gen)], 1).double()
    c = torch.from_numpy(centres)
    sd = torch.from_numpy(sides)
    f = torch.full((len(boxes),), focal_length(w, h), dtype=torch.float64)
    ref_t = convert_pare_to_full_img_cam(cam, sd, c, torch.full_like(sd, w), torch.full_like(sd, h), f)
    ours_t = full_image_translation(cam, c, sd, torch.tensor([w, h], dtype=torch.float64), f)
    rep.add("postprocess", "full-image translation (fp64)", _maxabs(ours_t, ref_t), 1e-9)
    out = {"pred_pose": torch.eye(3).expand(len(boxes), 24, 3, 3), "pred_cam": cam.float(),
           "pred_shape": torch.zeros(len(boxes), 10), "var_pose": torch.zeros(len(boxes), 24)}
    params = to_smpl_params(out, centres, sides, (w, h))
    rep.add("postprocess", "to_smpl_params transl (float32 out)", _maxabs(params["transl"], ref_t), 1e-4)


def _random_rotations(n: int, gen, angles=None):
    import torch

    from pipeline.models.geometry import axis_angle_to_rotmat

    axis = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    axis = axis / axis.norm(dim=1, keepdim=True)
    if angles is None:
        angles = torch.rand(n, generator=gen, dtype=torch.float64) * np.pi
    return axis_angle_to_rotmat(axis * angles[:, None])


def check_rotations(rep: Report) -> None:
    import torch

    from pocolib.utils.geometry import rot6d_to_rotmat as off_rot6d
    from pocolib.utils.geometry import rotation_matrix_to_angle_axis

    from pipeline.models.geometry import axis_angle_to_rotmat, rot6d_to_rotmat, rotmat_to_axis_angle

    print("\nrotations")
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(480, 6, generator=gen, dtype=torch.float64)
    rep.add("rotation", "6D -> matrix (fp64)", _maxabs(rot6d_to_rotmat(x), off_rot6d(x)), 1e-12)
    rep.add("rotation", "6D -> matrix (fp32)", _maxabs(rot6d_to_rotmat(x.float()), off_rot6d(x.float())), 1e-6)
    n = 2000
    groups = {
        "random": None,
        "near 0 (1e-7..1e-3 rad)": 10 ** (-7 + 4 * torch.rand(n, generator=gen, dtype=torch.float64)),
        "near pi (pi - 1e-3..pi)": np.pi - 1e-3 * torch.rand(n, generator=gen, dtype=torch.float64),
        "exactly pi": torch.full((n,), np.pi, dtype=torch.float64),
    }
    for label, angles in groups.items():
        for dtype in (torch.float64, torch.float32):
            rot = _random_rotations(n, gen, angles).to(dtype)
            ours = rotmat_to_axis_angle(rot)
            ref = rotation_matrix_to_angle_axis(rot.float()).to(dtype)  # the official one builds a float32 row
            tname = str(dtype).replace("torch.", "")
            # near pi, aa and -aa are the same rotation: compare the rotations they describe
            d_rot_ours = _maxabs(axis_angle_to_rotmat(ours.double()), rot.double())
            d_rot_ref = _maxabs(axis_angle_to_rotmat(ref.double()), rot.double())
            d_vec = _maxabs(ours, ref)
            tol = 2e-3 if dtype == torch.float32 else 1e-6
            rep.add("rotation", f"{label} {tname}: ours -> back to matrix", d_rot_ours, tol)
            rep.add("rotation", f"{label} {tname}: official -> back to matrix", d_rot_ref, None, "(informational)")
            rep.add("rotation", f"{label} {tname}: ours vs official vector", d_vec, None, "(informational)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official-src", required=True, type=Path,
                        help="checkout of https://github.com/saidwivedi/POCO (imported at run time)")
    parser.add_argument("--variants", nargs="+", default=["cliff", "pare"], choices=["cliff", "pare"])
    parser.add_argument("--image", help="image for preprocessing checks (default: ultralytics bus.jpg)")
    parser.add_argument("--no-fp64", action="store_true", help="skip the float64 network comparison")
    parser.add_argument("--skip-network", action="store_true", help="only preprocessing and rotations")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    parser.add_argument("--json", type=Path, help="write every comparison to this JSON file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    src = args.official_src.resolve()
    rep = Report()
    with tempfile.TemporaryDirectory(prefix="poco-equivalence-") as tmp:
        workdir = Path(tmp)
        setup_official(src, workdir)
        frame = read_rgb(find_image(args.image))
        check_preprocessing(frame, rep)
        check_rotations(rep)
        if not args.skip_network:
            for variant in args.variants:
                check_variant(src, workdir, variant, frame, rep, fp64=not args.no_fp64, seed=args.seed)
    if args.json:
        args.json.write_text(json.dumps(rep.rows, indent=1))
    failed = rep.failed
    print(f"\n{len(rep.rows) - len(failed)}/{len(rep.rows)} checks passed")
    for row in failed:
        print(f"  FAILED {row['section']}: {row['name']} = {row['max_abs_diff']:.3e} (tol {row['tolerance']})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
