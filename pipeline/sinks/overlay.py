"""Overlay drawing for `--display` and `--output out.mp4` (the seed's display, done once).

`OverlayRenderer` is created once and reused for every frame (the seed rebuilt its renderer
each frame). Per person it draws the projected SMPL mesh when vertices and faces are given,
else the 24-joint skeleton: from `Person.joints` when the frame carries them, else from the
rotations by forward kinematics on the default rest skeleton (`pipeline.pose.skeleton`). Joints
are coloured by POCO's per-joint uncertainty (green = confident, red = uncertain, values
clipped to [0, 1]). Boxes carry the track id. The text is the seed's: `FPS: x.xx`,
`Latency: x.x ms` and a red `(No Detections)`.

Projection: the full-image pinhole camera POCO's `transl` is expressed in (architecture.md §6):
f = sqrt(W^2 + H^2) pixels, principal point at the image centre, camera frame x right,
y down, z forward.

Mesh drawing is a painter's algorithm in OpenCV (no GPU, works headless): back faces are
culled (SMPL faces wind counter-clockwise seen from outside), front faces are sorted far
to near, cut into depth slabs, and each slab is filled with a few `fillPoly` calls grouped
by Lambert shade, then alpha-blended over the image. Triangles inside one slab are not
depth-ordered against each other: fine for a body, cheap enough for the publisher.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from pipeline.pose.frame import Person, PosesFrame
from pipeline.sinks.base import Sink, SinkError
from pipeline.pose.skeleton import BONES, forward_kinematics, full_image_focal, project

log = logging.getLogger(__name__)

# Colours are written BGR and flipped for RGB images.
_WHITE = (255, 255, 255)
_RED = (0, 0, 255)
_BOX = (255, 200, 0)
_BONE = (230, 230, 230)
_MESH = (200, 170, 140)
_SHADE_LEVELS = 12
_DEPTH_SLABS = 12


class OverlayRenderer:
    def __init__(self, rgb: bool = True, mesh_alpha: float = 0.65, joint_radius: int = 4,
                 thickness: int = 2, font_scale: float = 0.7, draw_boxes: bool = True,
                 draw_text: bool = True, rest_joints=None, cull: str = "back"):
        if cull not in ("back", "front", "none"):
            raise ValueError(f"cull must be 'back', 'front' or 'none', got {cull!r}")
        import cv2  # heavy-ish; only the display/output path needs it
        self._cv2 = cv2
        self.rgb = rgb
        self.mesh_alpha = float(mesh_alpha)
        self.joint_radius = joint_radius
        self.thickness = thickness
        self.font_scale = font_scale
        self.draw_boxes = draw_boxes
        self.draw_text = draw_text
        self.rest_joints = rest_joints
        self.cull = cull  # "front" if a mesh's faces wind clockwise seen from outside
        self.last_draw_ms = 0.0

    def _c(self, bgr):
        return tuple(reversed(bgr)) if self.rgb else tuple(bgr)

    def draw(self, image: np.ndarray, frame: PosesFrame | None, fps: float | None = None,
             latency_ms: float | None = None, vertices=None, faces=None, copy: bool = True) -> np.ndarray:
        """Draw onto `image` (H, W, 3 uint8; RGB unless rgb=False). `vertices`: per person
        (list aligned with frame.persons, or dict by track_id) (V, 3) camera-frame metres
        including `transl`; `faces`: (F, 3) int. Returns the drawn image."""
        t0 = time.perf_counter()
        if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8):
            raise ValueError(f"overlay needs an (H, W, 3) uint8 image, got "
                             f"{getattr(image, 'shape', None)} {getattr(image, 'dtype', type(image))}")
        out = image.copy() if copy else image
        h, w = out.shape[:2]
        persons = frame.persons if frame is not None else []
        for i, p in enumerate(persons):
            verts = _pick(vertices, i, p.track_id)
            if verts is not None and faces is not None:
                self._draw_mesh(out, np.asarray(verts, np.float64), np.asarray(faces), w, h)
            else:
                self._draw_skeleton(out, p, w, h)
            if self.draw_boxes:
                self._draw_box(out, p)
        if self.draw_text:
            self._draw_text(out, fps, latency_ms, no_detections=not persons)
        self.last_draw_ms = (time.perf_counter() - t0) * 1e3
        return out

    # --- pieces ---------------------------------------------------------------------------
    def _joints_cam(self, p: Person) -> np.ndarray:
        if p.joints is not None:
            return np.asarray(p.joints, np.float64)
        pos, _ = forward_kinematics(p.global_orient, p.body_pose, p.transl, self.rest_joints)
        return pos

    def _draw_skeleton(self, img, p: Person, w: int, h: int) -> None:
        cv2 = self._cv2
        uv = project(self._joints_cam(p), w, h)
        ok = np.all(np.isfinite(uv), axis=1) & np.all(np.abs(uv) < 1e5, axis=1)
        pts = np.round(np.nan_to_num(uv)).astype(np.int32)
        for a, b in BONES:
            if ok[a] and ok[b]:
                cv2.line(img, tuple(pts[a]), tuple(pts[b]), self._c(_BONE), self.thickness, cv2.LINE_AA)
        unc = np.clip(np.nan_to_num(np.asarray(p.joint_uncertainty, np.float64)), 0.0, 1.0)
        for j in np.nonzero(ok)[0]:
            u = unc[j] if j < len(unc) else 0.0
            colour = (0, int(255 * (1 - u)), int(255 * u))  # BGR: green -> red
            cv2.circle(img, tuple(pts[j]), self.joint_radius, self._c(colour), -1, cv2.LINE_AA)

    def _draw_mesh(self, img, verts: np.ndarray, faces: np.ndarray, w: int, h: int) -> None:
        cv2 = self._cv2
        if faces.ndim != 2 or faces.shape[1] != 3 or verts.ndim != 2 or verts.shape[1] != 3:
            raise ValueError(f"mesh needs vertices (V, 3) and faces (F, 3), got {verts.shape} and {faces.shape}")
        tri = verts[faces]                                     # (F, 3, 3)
        centre = tri.mean(axis=1)
        normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        facing = -(normal * centre).sum(axis=1)               # > 0: towards the camera at the origin
        visible = {"back": facing > 0, "front": facing < 0, "none": np.ones(len(facing), bool)}[self.cull]
        keep = visible & np.all(tri[:, :, 2] > 1e-3, axis=1)
        if not np.any(keep):
            return
        tri, centre, normal, facing = tri[keep], centre[keep], normal[keep], facing[keep]
        cos = np.abs(facing) / (np.linalg.norm(normal, axis=1) * np.linalg.norm(centre, axis=1) + 1e-12)
        shade = np.clip((0.35 + 0.65 * cos) * _SHADE_LEVELS, 0, _SHADE_LEVELS - 1).astype(np.int32)
        uv = project(tri, w, h)
        # Work only in the mesh's bounding rectangle: full-frame copies and blends cost more
        # than the triangles themselves at 1080p.
        x0, y0 = np.floor(np.clip(uv.reshape(-1, 2).min(0), 0, [w, h])).astype(int)
        x1, y1 = np.ceil(np.clip(uv.reshape(-1, 2).max(0), 0, [w, h])).astype(int) + 1
        x1, y1 = min(x1, w), min(y1, h)
        if x1 <= x0 or y1 <= y0:
            return
        roi = img[y0:y1, x0:x1]
        pts = np.round((uv - [x0, y0]) * 4).astype(np.int32)  # 2 bits of sub-pixel precision
        order = np.argsort(-centre[:, 2])                      # far to near
        layer = roi.copy()
        base = np.array(self._c(_MESH), np.float64)
        for slab in np.array_split(order, min(_DEPTH_SLABS, len(order))):
            for level in np.unique(shade[slab]):
                sel = slab[shade[slab] == level]
                colour = tuple(int(c) for c in base * (level + 1) / _SHADE_LEVELS)
                cv2.fillPoly(layer, list(pts[sel]), colour, cv2.LINE_8, shift=2)
        mask = np.zeros(roi.shape[:2], np.uint8)
        cv2.fillPoly(mask, list(pts), 255, cv2.LINE_8, shift=2)
        blended = cv2.addWeighted(layer, self.mesh_alpha, roi, 1.0 - self.mesh_alpha, 0.0)
        cv2.copyTo(blended, mask, roi)

    def _draw_box(self, img, p: Person) -> None:
        cv2 = self._cv2
        x1, y1, x2, y2 = (int(round(float(v))) for v in p.box)
        cv2.rectangle(img, (x1, y1), (x2, y2), self._c(_BOX), self.thickness)
        if p.track_id >= 0:
            cv2.putText(img, f"id {p.track_id}", (x1, max(12, y1 - 6)), cv2.FONT_HERSHEY_SIMPLEX,
                        self.font_scale * 0.8, self._c(_BOX), max(1, self.thickness - 1), cv2.LINE_AA)

    def _draw_text(self, img, fps, latency_ms, no_detections: bool) -> None:
        cv2 = self._cv2
        y = 30
        font = cv2.FONT_HERSHEY_SIMPLEX
        if fps is not None:
            cv2.putText(img, f"FPS: {fps:.2f}", (10, y), font, self.font_scale, self._c(_WHITE), 2, cv2.LINE_AA)
            y += 30
        if latency_ms is not None:
            cv2.putText(img, f"Latency: {latency_ms:.1f} ms", (10, y), font, self.font_scale,
                        self._c(_WHITE), 2, cv2.LINE_AA)
            y += 30
        if no_detections:
            cv2.putText(img, "(No Detections)", (10, y), font, self.font_scale, self._c(_RED), 2, cv2.LINE_AA)


def _pick(vertices, index: int, track_id: int):
    if vertices is None:
        return None
    if isinstance(vertices, dict):
        return vertices.get(track_id)
    return vertices[index] if index < len(vertices) else None


class OverlayVideoWriter:
    """Writes overlay frames to an .mp4 (mp4v). The folder is checked when it is created."""

    def __init__(self, path, fps: float, rgb: bool = True):
        import cv2
        self._cv2 = cv2
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise OSError(f"cannot write video {str(self.path)!r}: folder {str(self.path.parent)!r} does not exist")
        if not fps > 0:
            raise ValueError(f"video fps must be > 0, got {fps!r}")
        self.fps = float(fps)
        self.rgb = rgb
        self._writer = None
        self._size = None
        self.frames_written = 0

    def write(self, image: np.ndarray) -> None:
        cv2 = self._cv2
        h, w = image.shape[:2]
        if self._writer is None:
            self._size = (w, h)
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self._size)
            if not self._writer.isOpened():
                self._writer = None
                raise OSError(f"OpenCV cannot open {str(self.path)!r} for writing with the mp4v codec; "
                              f"check the path and that this OpenCV build has video writing")
        if (w, h) != self._size:  # the source changed size: keep the file playable
            image = cv2.resize(image, self._size)
        self._writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if self.rgb else image)
        self.frames_written += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None


class OverlayVideoSink(Sink):
    """`--output out.mp4` as a publisher sink: draws each frame and appends it to the video."""
    name = "overlay-video"
    wants_image = True

    def __init__(self, path, fps: float = 30.0, rgb: bool = True, **renderer_kw):
        self.path, self.fps, self.rgb = path, fps, rgb
        self._renderer_kw = renderer_kw
        self.renderer = None
        self.writer = None
        self._counts = dict(frames=0, no_image=0, errors=0)
        self._fps_ema = None
        self._last_t = None

    def open(self) -> None:
        try:
            self.writer = OverlayVideoWriter(self.path, self.fps, self.rgb)
        except (OSError, ValueError) as e:
            raise SinkError(f"overlay video: {e} (set --output to a writable .mp4 path)") from None
        self.renderer = OverlayRenderer(rgb=self.rgb, **self._renderer_kw)

    def send(self, frame: PosesFrame, image=None) -> None:
        if image is None:
            self._counts["no_image"] += 1
            return
        now = frame.t_capture_ns
        if self._last_t is not None and now > self._last_t:
            inst = 1e9 / (now - self._last_t)
            self._fps_ema = inst if self._fps_ema is None else 0.9 * self._fps_ema + 0.1 * inst
        self._last_t = now
        pub = frame.stamps_ns.get("publish")
        latency = (pub - frame.t_capture_ns) / 1e6 if pub and pub >= frame.t_capture_ns else None
        try:
            self.writer.write(self.renderer.draw(image, frame, fps=self._fps_ema, latency_ms=latency))
            self._counts["frames"] += 1
        except (OSError, ValueError) as e:
            self._counts["errors"] += 1
            if self._counts["errors"] == 1:
                log.error("overlay video: frame not written (%s)", e)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def stats(self) -> dict:
        return dict(self._counts, draw_ms=self.renderer.last_draw_ms if self.renderer else 0.0)



__all__ = ["OverlayRenderer", "OverlayVideoWriter", "OverlayVideoSink", "full_image_focal"]
