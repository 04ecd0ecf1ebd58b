"""Browser 3D viewer sink (architecture.md §7): a viser server inside the publisher process.

Every tracked person is drawn as a skinned SMPL mesh when SMPL arrays are given
(`SmplMeshData`: mesh and skin weights are sent once per track, then only 24 bone
rotations/positions and the root position per frame), else as a 24-joint skeleton with
joints coloured by `joint_uncertainty` (green confident -> red uncertain). A side panel shows
FPS, capture->publish latency p50/p99, person count, model/backend/precision/generation, an
untrained-weights warning, the camera image with boxes, a condition picker and a
"Record last 5 s" button wired to the `on_record` callback.

"Record last 5 s" does what `pipeline record` and the seed's record key do: at the click, the
metrics worker averages the 5 s of frames published *before* it (the seed's trailing window)
into one row for the chosen condition, at once. That is the behaviour users want from a live
panel: watch the numbers, and when the condition has held for a while, keep those seconds (a
button that started a 5 s recording would average whatever happens after the click, including
the user's walk back from the keyboard). It is also the page's only action with an effect on
a file: that row is appended to the metrics CSV, under the seed's file name, in the directory
the pipeline was started in. The page cannot name, read or delete a file: the condition comes
from a fixed list and is checked again here.

The viewer never slows the pipeline: `send()` only stores a reference to the newest frame and
returns; a background thread draws at most `max_hz` times a second and whatever arrived in
between is dropped (counted in `stats()`).

Scene node names: ``/persons/<variant>/<track>/{skeleton,joints}`` where `<track>` is the
track id, or ``u<index>`` for untracked persons; nodes of a track that is absent from the
newest frame are removed. Skinned meshes live at ``/meshes/<variant>/<n>``: a track's mesh is
hidden (not removed) when the track leaves and reused by the next new track, because removing
a skinned mesh can crash viser 1.1.1's browser client. Coordinates: see `pipeline.sinks.viewer_scene` (camera frame x right,
y down, z forward is shown in a y-up view frame, ``diag(1, -1, -1)``).
"""
from __future__ import annotations

import collections
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from pipeline.pose.frame import Person, PosesFrame
from pipeline.sinks.base import Sink, SinkError
from pipeline.sinks import viewer_scene as vs
log = logging.getLogger(__name__)

CONDITIONS = ("Optimal", "Low Light", "Partial Occlusion", "Fast Motion",
              "Static+Moving Occlusion", "Custom")
RECORD_SECONDS = 5.0

# RGB per A/B variant: bones of variant A are blue, variant B orange; meshes likewise.
VARIANT_COLORS = {"A": (70, 160, 255), "B": (255, 150, 40)}
_FALLBACK_COLOR = (200, 200, 200)

RecordCallback = Callable[[str, float], str]


@dataclass
class SmplMeshData:
    """What the viewer needs to draw a skinned SMPL body (all in the SMPL body frame, metres).

    `shapedirs` (V, 3, B) and `j_regressor` (24, V) are optional: with both, each track's mesh
    and rest joints are shaped by the betas of the first frame the track is seen in (the
    mesh is only sent once, so later shape changes are not shown).
    """
    vertices: np.ndarray      # (V, 3) template vertices
    faces: np.ndarray         # (F, 3) int
    skin_weights: np.ndarray  # (V, 24) linear-blend-skinning weights
    rest_joints: np.ndarray   # (24, 3) rest joint positions of the template
    parents: np.ndarray = field(default_factory=vs.SMPL_PARENTS.copy)
    shapedirs: np.ndarray | None = None
    j_regressor: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.vertices = np.asarray(self.vertices, dtype=np.float32)
        self.faces = np.asarray(self.faces)
        self.skin_weights = np.asarray(self.skin_weights, dtype=np.float32)
        self.rest_joints = np.asarray(self.rest_joints, dtype=np.float64)
        self.parents = np.asarray(self.parents, dtype=np.int64)
        v = self.vertices.shape[0] if self.vertices.ndim == 2 else -1
        problems = []
        if self.vertices.ndim != 2 or self.vertices.shape[1] != 3:
            problems.append(f"vertices must be (V, 3), got {self.vertices.shape}")
        if self.faces.ndim != 2 or self.faces.shape[1] != 3 or not np.issubdtype(self.faces.dtype, np.integer):
            problems.append(f"faces must be integer (F, 3), got {self.faces.dtype} {self.faces.shape}")
        elif self.faces.size and (self.faces.min() < 0 or self.faces.max() >= v):
            problems.append(f"faces index vertices outside 0..{v - 1}")
        if self.skin_weights.shape != (v, vs.NUM_JOINTS):
            problems.append(f"skin_weights must be ({v}, 24), got {self.skin_weights.shape}")
        if self.rest_joints.shape != (vs.NUM_JOINTS, 3):
            problems.append(f"rest_joints must be (24, 3), got {self.rest_joints.shape}")
        if not np.array_equal(self.parents, vs.SMPL_PARENTS):
            problems.append("parents must be the SMPL kinematic tree (24 joints)")
        if (self.shapedirs is None) != (self.j_regressor is None):
            problems.append("give both shapedirs and j_regressor, or neither")
        if self.shapedirs is not None:
            self.shapedirs = np.asarray(self.shapedirs, dtype=np.float32)
            self.j_regressor = np.asarray(self.j_regressor, dtype=np.float32)
            if self.shapedirs.ndim != 3 or self.shapedirs.shape[:2] != (v, 3):
                problems.append(f"shapedirs must be ({v}, 3, B), got {self.shapedirs.shape}")
            if self.j_regressor.shape != (vs.NUM_JOINTS, v):
                problems.append(f"j_regressor must be (24, {v}), got {self.j_regressor.shape}")
        if problems:
            raise SinkError("viewer SMPL data is malformed: " + "; ".join(problems)
                            + " (pass the arrays of an SMPL model file, or none for skeletons)")

    def shaped(self, betas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(vertices, rest joints) for these betas; the template when shape data is absent."""
        if self.shapedirs is None:
            return self.vertices, self.rest_joints
        b = np.zeros(self.shapedirs.shape[2], dtype=np.float32)
        given = np.asarray(betas, dtype=np.float32).reshape(-1)[: b.size]
        b[: given.size] = given
        verts = self.vertices + self.shapedirs @ b
        return verts, (self.j_regressor @ verts).astype(np.float64)


class _Rate:
    """Arrival times in a sliding window -> frames per second."""

    def __init__(self, window_s: float = 2.0):
        self.window_ns = int(window_s * 1e9)
        self.times: collections.deque[int] = collections.deque(maxlen=4096)

    def add(self, t_ns: int) -> None:
        self.times.append(t_ns)

    def fps(self, now_ns: int) -> float:
        while self.times and now_ns - self.times[0] > self.window_ns:
            self.times.popleft()
        if len(self.times) < 2:
            return 0.0
        span = self.times[-1] - self.times[0]
        return (len(self.times) - 1) * 1e9 / span if span > 0 else 0.0


class _PersonNodes:
    """Scene handles of one track."""

    def __init__(self):
        self.skeleton = None
        self.joints = None
        self.mesh = None
        self.mesh_rest_joints: np.ndarray | None = None

    def remove(self) -> None:
        """Remove the skeleton nodes; the mesh (if any) is left to the caller's pool."""
        for handle in (self.skeleton, self.joints):
            if handle is not None:
                handle.remove()


class ViewerSink(Sink):
    """viser-based live 3D viewer. Config key prefix: ``sinks.viewer``."""

    name = "viewer"
    wants_image = True

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        smpl: SmplMeshData | None = None,
        on_record: RecordCallback | None = None,
        max_hz: float = 30.0,
        image_hz: float = 5.0,
        image_width: int = 320,
        uncertainty_range: tuple[float, float] = (0.0, 1.0),
        rest_offsets: np.ndarray | None = None,
        latency_window: int = 600,
    ):
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise SinkError(f"sinks.viewer.port must be an integer 0..65535 (0 = any free port), got {port!r}")
        if not 0 < max_hz <= 240:
            raise SinkError(f"sinks.viewer.max_hz must be in (0, 240], got {max_hz!r}")
        if not 0 <= image_hz <= 60:
            raise SinkError(f"sinks.viewer.image_hz must be in [0, 60] (0 = no camera image), got {image_hz!r}")
        if not 16 <= image_width <= 1920:
            raise SinkError(f"sinks.viewer.image_width must be in 16..1920, got {image_width!r}")
        lo, hi = uncertainty_range
        if not hi > lo:
            raise SinkError(f"sinks.viewer.uncertainty_range must be (low, high) with high > low, got {uncertainty_range!r}")
        self.host = host
        self.requested_port = port
        self.smpl = smpl
        self.on_record = on_record
        self.max_hz = float(max_hz)
        self.image_hz = float(image_hz)
        self.image_width = int(image_width)
        self.uncertainty_range = (float(lo), float(hi))
        if rest_offsets is not None:
            rest_offsets = np.asarray(rest_offsets, dtype=np.float64)
            if rest_offsets.shape != (vs.NUM_JOINTS, 3):
                raise SinkError(f"viewer rest_offsets must be (24, 3), got {rest_offsets.shape}")
        elif smpl is not None:
            rest_offsets = vs.offsets_from_rest_joints(smpl.rest_joints)
        else:
            rest_offsets = vs.DEFAULT_REST_OFFSETS
        self.rest_offsets = rest_offsets

        self.server = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Newest frame per variant and newest camera image; the draw thread takes them.
        self._pending: dict[str, PosesFrame] = {}
        self._pending_image: tuple[np.ndarray, PosesFrame] | None = None
        self._last_image_accept_ns = 0
        self._rate = _Rate()
        self._latencies_ms: collections.deque[float] = collections.deque(maxlen=latency_window)
        self._nodes: dict[str, dict[str, _PersonNodes]] = {}
        self._node_streams: dict[str, dict[str, str]] = {}   # variant -> node key -> its stream
        self._gui: dict = {}
        self._counts = collections.Counter()
        self._warned: set[str] = set()
        # Skinned meshes are never removed while the server runs: viser 1.1.1's browser client
        # can crash ("Cannot read properties of null (reading 'remove')", blank page) when a
        # skinned mesh unmounts. A mesh whose track left is hidden and reused for the next
        # track of the same variant: (handle, rest joints) per variant.
        self._mesh_pool: dict[str, list[tuple[object, np.ndarray]]] = {}
        self._mesh_serial = 0

    # ---- lifecycle -------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (useful with port 0); the requested one before `open()`."""
        return self.server.get_port() if self.server is not None else self.requested_port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def open(self) -> None:
        if self.server is not None:
            return
        self._check_port_free()
        import viser  # heavy: only the publisher process that runs a viewer pays for it

        try:
            server = viser.ViserServer(host=self.host, port=self.requested_port, verbose=False)
        except OSError as exc:
            raise SinkError(f"viewer could not start on {self.host}:{self.requested_port}: {exc}; "
                            f"choose another port with sinks.viewer.port") from exc
        # viser silently moves to the next free port when the one asked for is taken; the
        # pipeline must be reachable where the config says, so treat that as an error.
        bound = server.get_port()
        if self.requested_port != 0 and bound != self.requested_port:
            server.stop()
            raise self._port_in_use_error()
        self.server = server
        self._build_scene()
        self._build_gui()
        self._stop.clear()
        self._thread = threading.Thread(target=self._draw_loop, name="viewer-draw", daemon=True)
        self._thread.start()
        log.info("viewer serving on %s", self.url)
        if self.host not in ("127.0.0.1", "localhost", "::1"):
            # architecture.md §12: loopback unless the user asked; say so, since anyone on the network can connect.
            log.warning("viewer listens on %s, reachable from other machines (set sinks.viewer.host=127.0.0.1 "
                        "to keep it local)", self.url)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            if self._thread.is_alive():
                log.warning("viewer draw thread did not stop within 5 s")
            self._thread = None
        if self.server is not None:
            try:
                self.server.stop()
            except Exception:  # a failing stop must not hide the rest of the shutdown
                log.exception("viewer server stop failed")
            self.server = None
        self._nodes.clear()
        self._node_streams.clear()
        self._mesh_pool.clear()
        self._gui.clear()

    def _check_port_free(self) -> None:
        if self.requested_port == 0:
            return
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((self.host, self.requested_port))
        except OSError as exc:
            raise self._port_in_use_error(exc) from exc
        finally:
            probe.close()

    def _port_in_use_error(self, exc: OSError | None = None) -> SinkError:
        why = f" ({exc.strerror})" if exc is not None and exc.strerror else ""
        return SinkError(f"viewer port {self.requested_port} on {self.host} is already in use{why}; "
                         f"stop the other program or set another port with sinks.viewer.port=<port>")

    # ---- hot path --------------------------------------------------------------------

    def send(self, frame: PosesFrame, image=None) -> None:
        self.send_variant(frame, image=image, variant="A")

    def send_variant(self, frame: PosesFrame, image=None, variant: str = "A") -> None:
        """Like `send`, for an A/B variant ("A" or "B"); each variant keeps its own nodes.

        `image` is read later on the draw thread, at most `image_hz` times a second, without a
        copy: pass an array that is not rewritten in place, or accept a torn preview.
        """
        now = time.monotonic_ns()
        publish = frame.stamps_ns.get("publish", now)
        capture = frame.stamps_ns.get("capture", frame.t_capture_ns)
        stream = getattr(frame, "stream", "main")
        with self._lock:
            # several sources: each stream's newest frame waits for the draw thread apart
            self._pending[variant if stream == "main" else (variant, stream)] = frame
            self._counts[f"received_{variant}"] += 1
            if variant == "A":
                self._rate.add(now)
                if capture > 0 and publish >= capture:
                    self._latencies_ms.append((publish - capture) / 1e6)
                if (image is not None and self.image_hz > 0
                        and now - self._last_image_accept_ns >= 1e9 / self.image_hz):
                    self._pending_image = (image, frame)
                    self._last_image_accept_ns = now
        self._wake.set()

    def person_node_names(self, variant: str = "A") -> set[str]:
        """Scene names of the person nodes currently drawn for a variant."""
        return {f"/persons/{variant}/{key}" for key in self._nodes.get(variant, {})}

    def stats(self) -> dict:
        with self._lock:
            counts = dict(self._counts)
        received = sum(v for k, v in counts.items() if k.startswith("received_"))
        drawn = sum(v for k, v in counts.items() if k.startswith("drawn_"))
        return {"received": received, "received_b": counts.get("received_B", 0),
                "drawn": drawn, "dropped": max(received - drawn, 0),
                "draw_errors": counts.get("draw_errors", 0), "images": counts.get("images", 0),
                "clients": len(self.server.get_clients()) if self.server is not None else 0}

    def set(self, key: str, value) -> None:
        if key == "max_hz":
            value = float(value)
            if not 0 < value <= 240:
                raise SinkError(f"sinks.viewer.max_hz must be in (0, 240], got {value!r}")
            self.max_hz = value
        elif key == "image_hz":
            value = float(value)
            if not 0 <= value <= 60:
                raise SinkError(f"sinks.viewer.image_hz must be in [0, 60], got {value!r}")
            self.image_hz = value
        else:
            raise SinkError(f"sink 'viewer' has no live setting {key!r}; live settings: max_hz, image_hz")

    # ---- draw thread -----------------------------------------------------------------

    def _draw_loop(self) -> None:
        next_draw = 0.0
        while not self._stop.is_set():
            self._wake.wait(timeout=0.5)
            self._wake.clear()
            if self._stop.is_set():
                break
            delay = next_draw - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
            next_draw = time.monotonic() + 1.0 / self.max_hz
            with self._lock:
                pending, self._pending = self._pending, {}
                image, self._pending_image = self._pending_image, None
            try:
                self._draw(pending, image)
            except Exception:
                # One bad frame (odd shapes, a client that went away) must not end the viewer.
                self._counts["draw_errors"] += 1
                if self._counts["draw_errors"] in (1, 10, 100) or self._counts["draw_errors"] % 1000 == 0:
                    log.exception("viewer failed to draw a frame (%d so far)", self._counts["draw_errors"])

    def _draw(self, pending: dict[str, PosesFrame], image) -> None:
        server = self.server
        if server is None:
            return
        with server.atomic():
            for key, frame in pending.items():
                variant = key if isinstance(key, str) else key[0]
                self._draw_persons(variant, frame)
                with self._lock:
                    self._counts[f"drawn_{variant}"] += 1
            if image is not None:
                self._draw_image(*image)
            self._update_panel(pending.get("A") or next((f for k, f in pending.items() if k[0] == "A"), None))

    def _draw_persons(self, variant: str, frame: PosesFrame) -> None:
        nodes = self._nodes.setdefault(variant, {})
        # Several sources: a person's node is named by its stream too ("cam1-3"), so the people
        # of two cameras never share a node, and a frame only removes its own stream's people.
        stream = getattr(frame, "stream", "main")
        prefix = "" if stream == "main" else f"{stream}-"
        streams = self._node_streams.setdefault(variant, {})
        seen = set()
        for index, person in enumerate(frame.persons):
            key = prefix + (str(person.track_id) if person.track_id >= 0 else f"u{index}")
            streams[key] = stream
            if key in seen:  # a duplicate id in one frame: keep the first, say so once
                self._warn_once(f"dup-{variant}-{key}", "viewer: track id %s appears twice in frame %d",
                                key, frame.frame_id)
                continue
            seen.add(key)
            person_nodes = nodes.get(key)
            if person_nodes is None:
                person_nodes = nodes[key] = _PersonNodes()
            self._draw_person(f"/persons/{variant}/{key}", variant, person, person_nodes)
            # Hand the GIL to the publisher loop between persons: this thread runs pure-Python
            # scene updates and would otherwise hold it for a whole switch interval (5 ms).
            time.sleep(0)
        for key in list(nodes):
            if key not in seen and streams.get(key, "main") == stream:
                streams.pop(key, None)
                gone = nodes.pop(key)
                gone.remove()
                if gone.mesh is not None:
                    gone.mesh.visible = False
                    self._mesh_pool.setdefault(variant, []).append((gone.mesh, gone.mesh_rest_joints))

    def _draw_person(self, base: str, variant: str, person: Person, nodes: _PersonNodes) -> None:
        scene = self.server.scene
        color = VARIANT_COLORS.get(variant, _FALLBACK_COLOR)
        pose = vs.person_skeleton(person, self.rest_offsets)
        joint_colors = vs.uncertainty_colors(person.joint_uncertainty, *self.uncertainty_range)

        if self.smpl is not None:
            self._draw_mesh(variant, color, person, nodes)
        else:
            segments = vs.bone_segments(pose.joints).astype(np.float32)
            if nodes.skeleton is None:
                nodes.skeleton = scene.add_line_segments(
                    f"{base}/skeleton", segments, color, thickness=0.02)
            else:
                nodes.skeleton.points = segments
        points = pose.joints.astype(np.float32)
        if nodes.joints is None:
            nodes.joints = scene.add_point_cloud(
                f"{base}/joints", points, joint_colors, point_size=0.05, point_shape="circle",
                precision="float32")
        else:
            nodes.joints.points = points
            nodes.joints.colors = joint_colors

    def _draw_mesh(self, variant: str, color, person: Person, nodes: _PersonNodes) -> None:
        root_position = vs.CAM_TO_VIEW @ np.asarray(person.transl, dtype=np.float64)
        pool = self._mesh_pool.get(variant)
        if nodes.mesh is None and pool:
            # Reused meshes keep the body shape of the track they were made for.
            nodes.mesh, nodes.mesh_rest_joints = pool.pop()
            nodes.mesh.position = root_position
            nodes.mesh.visible = True
        elif nodes.mesh is None:
            verts, rest_joints = self.smpl.shaped(person.betas)
            nodes.mesh_rest_joints = rest_joints
            self._mesh_serial += 1
            # Bind pose = rest joints with identity rotations; later frames move only bones.
            nodes.mesh = self.server.scene.add_mesh_skinned(
                f"/meshes/{variant}/{self._mesh_serial}", verts, self.smpl.faces.astype(np.uint32),
                bone_wxyzs=np.tile([1.0, 0.0, 0.0, 0.0], (vs.NUM_JOINTS, 1)),
                bone_positions=rest_joints,
                skin_weights=self.smpl.skin_weights,
                color=color, wxyz=vs.CAM_TO_VIEW_WXYZ, position=root_position)
        else:
            nodes.mesh.position = root_position
        world, pos = vs.forward_kinematics(
            vs.local_rotations(person.global_orient, person.body_pose),
            vs.offsets_from_rest_joints(nodes.mesh_rest_joints))
        quats = vs.matrix_to_wxyz(world)
        for j, bone in enumerate(nodes.mesh.bones):
            bone.wxyz = quats[j]
            bone.position = pos[j]

    def _draw_image(self, image, frame: PosesFrame) -> None:
        import cv2  # only for the preview

        if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
                and image.shape[2] == 3 and image.shape[0] > 0 and image.shape[1] > 0):
            self._warn_once("bad-image", "viewer: ignoring camera image that is not RGB uint8 HxWx3 (got %s %s)",
                            getattr(image, "dtype", type(image).__name__), getattr(image, "shape", ""))
            return
        h, w = image.shape[:2]
        scale = min(1.0, self.image_width / w)
        small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                           interpolation=cv2.INTER_AREA) if scale < 1.0 else image.copy()
        for index, person in enumerate(frame.persons):
            x1, y1, x2, y2 = (np.nan_to_num(np.asarray(person.box, dtype=np.float64)) * scale).round().astype(int)
            cv2.rectangle(small, (x1, y1), (x2, y2), (0, 255, 0), 1)
            label = str(person.track_id) if person.track_id >= 0 else f"u{index}"
            cv2.putText(small, label, (x1 + 2, max(y1 + 12, 12)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 255, 0), 1)
        handle = self._gui.get("image")
        if handle is not None:
            handle.image = small
            self._counts["images"] += 1

    def _update_panel(self, frame: PosesFrame | None) -> None:
        gui = self._gui
        if not gui:
            return
        now = time.monotonic_ns()
        with self._lock:
            fps = self._rate.fps(now)
            lat = np.array(self._latencies_ms) if self._latencies_ms else None
        gui["fps"].value = round(fps, 1)
        if lat is not None:
            gui["p50"].value = round(float(np.percentile(lat, 50)), 1)
            gui["p99"].value = round(float(np.percentile(lat, 99)), 1)
        if frame is not None:
            gui["persons"].value = len(frame.persons)
            model = f"{frame.model} / {frame.backend} / {frame.precision} / gen {frame.generation}"
            if gui["model"].value != model:
                gui["model"].value = model
            if gui["untrained"].visible != frame.untrained:
                gui["untrained"].visible = frame.untrained

    def _warn_once(self, key: str, msg: str, *args) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(msg, *args)

    # ---- scene and panel -------------------------------------------------------------

    def _build_scene(self) -> None:
        scene = self.server.scene
        scene.set_up_direction("+y")
        # The real camera: origin of the view frame, looking down -z.
        scene.add_frame("/camera", axes_length=0.1, axes_radius=0.005)
        self.server.initial_camera.position = (0.0, 0.5, 1.5)
        self.server.initial_camera.look_at = (0.0, 0.0, -3.0)

    def _build_gui(self) -> None:
        gui = self.server.gui
        g = self._gui
        g["untrained"] = gui.add_markdown(
            "**Untrained weights**: the model runs randomly initialised weights, poses are "
            "meaningless. Put a POCO checkpoint in `data/` for real poses.", visible=False)
        with gui.add_folder("Live"):
            g["fps"] = gui.add_number("FPS", 0.0, disabled=True, step=0.1)
            g["p50"] = gui.add_number("Latency p50 (ms)", 0.0, disabled=True, step=0.1)
            g["p99"] = gui.add_number("Latency p99 (ms)", 0.0, disabled=True, step=0.1)
            g["persons"] = gui.add_number("Persons", 0, disabled=True, step=1)
            g["model"] = gui.add_text("Model", "waiting for frames", disabled=True)
        if self.image_hz > 0:
            placeholder = np.zeros((max(1, self.image_width * 9 // 16), self.image_width, 3), np.uint8)
            g["image"] = gui.add_image(placeholder, label="Camera", format="jpeg", jpeg_quality=75)
        with gui.add_folder("Metrics recording"):
            g["condition"] = gui.add_dropdown("Condition", CONDITIONS, initial_value=CONDITIONS[0])
            g["record"] = gui.add_button(
                f"Record last {RECORD_SECONDS:g} s", disabled=self.on_record is None,
                hint=f"Appends one row to the metrics CSV: the averages of the {RECORD_SECONDS:g} s "
                     f"before the click, for the chosen condition")
            g["record_status"] = gui.add_text(
                "Record status",
                "ready" if self.on_record is not None
                else "unavailable: this viewer is not connected to the pipeline's control plane",
                disabled=True)
        g["record"].on_click(lambda _event: self.request_record())

    def request_record(self) -> str:
        """What the "Record last 5 s" button does: ask `on_record` (which averages the 5 s before
        now) and show its reply in the panel."""
        status = self._gui.get("record_status")
        condition = self._gui["condition"].value if "condition" in self._gui else CONDITIONS[0]
        if self.on_record is None:
            text = "unavailable: this viewer is not connected to the pipeline's control plane"
        elif condition not in CONDITIONS:
            text = f"error: unknown condition {condition!r}"
        else:
            if status is not None:
                status.value = f"averaging the last {RECORD_SECONDS:g} s as {condition}..."
            try:
                text = str(self.on_record(condition, RECORD_SECONDS))
            except Exception as exc:  # the reply goes to the panel, never up into viser
                log.warning("viewer record request failed: %s", exc)
                text = f"error: {exc}"
        if status is not None:
            status.value = text[:300]
        return text
