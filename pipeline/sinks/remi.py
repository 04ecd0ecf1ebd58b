"""Seed relay sink (`--publish remi`): the legacy TCP wire format for the existing relay.

Wire format, one message per processed frame (architecture.md §7, §9)::

    b"SMPL" + struct.pack(">I I", len(payload), zlib.crc32(payload) & 0xFFFFFFFF) + payload

`payload` is a pickle of a dict with, in this insertion order, ``poses_body`` float32
(1, 69), ``poses_root`` float32 (1, 3), ``betas`` float32 (1, 10), ``trans`` float32 (1, 3).
The seed called plain ``pickle.dumps(d)``: on the Python 3.8-3.13 it ran on, the default
protocol is 4, so we write protocol 4 with the same key order. A pickled ndarray names the
function that rebuilds it; NumPy 1.x writes ``numpy.core.multiarray._reconstruct`` while
NumPy 2 writes ``numpy._core.multiarray._reconstruct``, which NumPy 1.x receivers cannot
import. By default (`numpy_pickle="legacy"`) we write the NumPy 1.x name, which is what the
seed produced and which both NumPy 1.x and 2.x relays load; `"native"` writes whatever the
installed NumPy writes.

Content (seed behaviour): the root rotation is pre-multiplied by diag(1, -1, -1) (180 deg
about X: camera frame, y down, to the relay's y-up frame); ``trans = [tx, ty + 0.8, 0]``
from the crop camera ``pred_cam = [s, tx, ty]``. With ``translation="full"`` the real
full-image translation is sent instead, expressed in the same flipped frame so body and
position stay consistent: SMPL rotates about the rest pelvis J0, so the exact flipped
translation is ``F @ transl + (F - I) @ J0`` with F = diag(1, -1, -1) and J0 the default
rest pelvis (`pipeline.pose.skeleton`). Nobody detected (or the chosen track absent): a T-pose
(all zeros) at the origin.

Unlike the seed, a background thread owns the socket: it connects and reconnects with
exponential backoff, discards anything the relay sends back (never unpickled), and `send`
only enqueues into a small bounded queue (oldest message dropped and counted when full), so
an absent, slow or broken relay never blocks or crashes the publisher. This module is the
only place in posepipe that writes pickle; nothing ever unpickles socket data.
"""
from __future__ import annotations

import io
import logging
import pickle
import select
import socket
import struct
import threading
import zlib
from collections import deque

import numpy as np

from pipeline.pose.frame import PosesFrame
from pipeline.pose.rotations import FLIP_YZ, axis_angle_to_rotmat, rotmat_to_axis_angle
from pipeline.sinks.base import Sink, SinkError
from pipeline.sinks.person_select import check_policy, choose_person
from pipeline.pose.skeleton import DEFAULT_REST_JOINTS

log = logging.getLogger(__name__)

MAGIC = b"SMPL"
HEADER = struct.Struct(">II")
PICKLE_PROTOCOL = 4
TRANSLATIONS = ("crop", "full")
CROP_Y_OFFSET = 0.8  # the seed lifts the body by 0.8 so it stands on the relay's floor


def relay_arrays(frame: PosesFrame, translation: str = "crop", person: str = "largest",
                 track_id: int | None = None) -> dict[str, np.ndarray]:
    """The four arrays the relay expects for this frame (see the module docstring)."""
    p = choose_person(frame, person, track_id)
    if p is None:
        return {
            "poses_body": np.zeros((1, 69), np.float32),
            "poses_root": np.zeros((1, 3), np.float32),
            "betas": np.zeros((1, 10), np.float32),
            "trans": np.zeros((1, 3), np.float32),
        }
    root = rotmat_to_axis_angle(FLIP_YZ @ axis_angle_to_rotmat(np.asarray(p.global_orient, np.float64)))
    if translation == "full":
        j0 = DEFAULT_REST_JOINTS[0]
        trans = FLIP_YZ @ np.asarray(p.transl, np.float64) + (FLIP_YZ - np.eye(3)) @ j0
    else:
        trans = np.array([p.pred_cam[1], p.pred_cam[2] + CROP_Y_OFFSET, 0.0])
    return {
        "poses_body": np.asarray(p.body_pose, np.float32).reshape(1, 69).copy(),
        "poses_root": root.astype(np.float32).reshape(1, 3),
        "betas": np.asarray(p.betas, np.float32).reshape(1, 10).copy(),
        "trans": trans.astype(np.float32).reshape(1, 3),
    }


class _LegacyNumpyPickler(pickle._Pickler):
    """Protocol-4 pickler that names NumPy's array rebuilder the NumPy 1.x way.

    Uses the pure-Python pickler because only it lets us choose the module name written
    for one global; the output is otherwise the same opcodes the C pickler writes.
    """

    _reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]

    def save_global(self, obj, name=None):
        if obj is self._reconstruct:
            self.save("numpy.core.multiarray")
            self.save("_reconstruct")
            self.write(pickle.STACK_GLOBAL)
            self.memoize(obj)
            return
        super().save_global(obj, name)


_NATIVE_NAME = b"\x8c" + bytes([len("numpy._core.multiarray")]) + b"numpy._core.multiarray"
_LEGACY_NAME = b"\x8c" + bytes([len("numpy.core.multiarray")]) + b"numpy.core.multiarray"
_FRAME_PREFIX = b"\x80\x04\x95"  # PROTO 4, then FRAME with an 8-byte little-endian length


def encode_payload(arrays: dict[str, np.ndarray], numpy_pickle: str = "legacy") -> bytes:
    native = pickle.dumps(arrays, protocol=PICKLE_PROTOCOL)
    if numpy_pickle == "native":
        return native
    # Fast path (~3x cheaper than the pure-Python pickler): the C pickler's output with the
    # module name swapped and the single frame's length fixed is byte-identical to what
    # _LegacyNumpyPickler writes (tested). Any other layout takes the slow, general path.
    if native.startswith(_FRAME_PREFIX) and native.count(_NATIVE_NAME) == 1:
        frame_len = int.from_bytes(native[3:11], "little")
        if frame_len == len(native) - 11:
            body = native[11:].replace(_NATIVE_NAME, _LEGACY_NAME)
            return native[:3] + len(body).to_bytes(8, "little") + body
    buf = io.BytesIO()
    _LegacyNumpyPickler(buf, protocol=PICKLE_PROTOCOL).dump(arrays)
    return buf.getvalue()


def encode_message(payload: bytes) -> bytes:
    return MAGIC + HEADER.pack(len(payload), zlib.crc32(payload) & 0xFFFFFFFF) + payload


class RemiSink(Sink):
    name = "remi"

    def __init__(self, host: str = "localhost", port: int = 9999, translation: str = "crop",
                 person: str = "largest", track_id: int | None = None, queue_size: int = 4,
                 connect_timeout: float = 1.0, send_timeout: float = 2.0,
                 backoff_initial: float = 0.25, backoff_max: float = 5.0,
                 numpy_pickle: str = "legacy", smoothing: str = "off"):
        self.host, self.port = host, port
        self.translation, self.person, self.track_id = translation, person, track_id
        self.queue_size = queue_size
        self.connect_timeout, self.send_timeout = connect_timeout, send_timeout
        self.backoff_initial, self.backoff_max = backoff_initial, backoff_max
        self.numpy_pickle = numpy_pickle
        self._smoothing = smoothing
        self._smoother = None
        self._queue: deque[bytes] = deque()
        self._cv = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._counts = dict(sent=0, dropped=0, errors=0, connects=0, bytes_sent=0, ignored_bytes=0)
        self._connected = False

    # --- configuration --------------------------------------------------------------------
    def _validate(self) -> None:
        if not isinstance(self.host, str) or not self.host:
            raise SinkError(f"remi: host must be a non-empty host name, got {self.host!r}")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 1 <= self.port <= 65535:
            raise SinkError(f"remi: port must be an integer in 1..65535, got {self.port!r} (set sinks.remi.port)")
        if self.translation not in TRANSLATIONS:
            raise SinkError(f"remi: translation must be one of {TRANSLATIONS}, got {self.translation!r}")
        if self.numpy_pickle not in ("legacy", "native"):
            raise SinkError(f"remi: numpy_pickle must be 'legacy' or 'native', got {self.numpy_pickle!r}")
        if not isinstance(self.queue_size, int) or self.queue_size < 1:
            raise SinkError(f"remi: queue_size must be a positive integer, got {self.queue_size!r}")
        for key in ("connect_timeout", "send_timeout", "backoff_initial", "backoff_max"):
            if not getattr(self, key) > 0:
                raise SinkError(f"remi: {key} must be > 0, got {getattr(self, key)!r}")
        try:
            check_policy(self.person, self.track_id)
        except ValueError as e:
            raise SinkError(f"remi: {e}") from None

    def open(self) -> None:
        self._validate()
        try:
            socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        except socket.gaierror as e:
            raise SinkError(f"remi: cannot resolve relay host {self.host!r} ({e}); set sinks.remi.host") from None
        self._set_smoothing(self._smoothing)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="remi-sink", daemon=True)
        self._thread.start()
        log.info("remi sink: sending to %s:%d (translation=%s)", self.host, self.port, self.translation)

    def _set_smoothing(self, preset: str) -> None:
        from pipeline.pose.smoothing import Smoother  # only when asked for
        try:
            if self._smoother is None:
                self._smoother = Smoother(preset)
            else:
                self._smoother.set("smoothing", preset)
        except ValueError as e:
            raise SinkError(f"remi: {e}") from None
        self._smoothing = preset

    def set(self, key: str, value) -> None:
        if key == "smoothing":
            self._set_smoothing(str(value))
        elif key == "translation" and value in TRANSLATIONS:
            self.translation = value
        elif key == "person" and value in ("largest", "first"):
            self.person = value
        elif key == "track_id":
            tid = None if value in (None, "", "none", "None") else int(value)
            try:
                check_policy(self.person, tid)
            except ValueError as e:
                raise SinkError(f"remi: {e}") from None
            self.track_id = tid
        else:
            raise SinkError(f"remi: cannot set {key}={value!r}; live settings: smoothing=off|moderate|smooth, "
                            f"translation=crop|full, person=largest|first, track_id=<int>|none")

    # --- publisher side (never blocks) ----------------------------------------------------
    def send(self, frame: PosesFrame, image=None) -> None:
        if self._smoother is not None and self._smoothing != "off":
            frame = self._smoother.apply(frame)
        arrays = relay_arrays(frame, self.translation, self.person, self.track_id)
        msg = encode_message(encode_payload(arrays, self.numpy_pickle))
        with self._cv:
            if len(self._queue) >= self.queue_size:
                self._queue.popleft()
                self._counts["dropped"] += 1
            self._queue.append(msg)
            self._cv.notify()

    def stats(self) -> dict:
        with self._cv:
            out = dict(self._counts, queued=len(self._queue), connected=self._connected,
                       reconnects=max(0, self._counts["connects"] - 1))
        if self._smoother is not None:
            # flat scalars: the publisher forwards only those (metrics builds filter rows from them)
            out.update({f"smoothing_{k}": v for k, v in self._smoother.stats().items()})
        return out

    def close(self) -> None:
        self._stop.set()
        with self._cv:
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=self.send_timeout + 1.0)
            self._thread = None
        self._close_socket()

    # --- background thread ----------------------------------------------------------------
    def _run(self) -> None:
        backoff = self.backoff_initial
        warned = False
        while not self._stop.is_set():
            try:
                sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
            except OSError as e:
                if not warned:
                    log.warning("remi sink: relay %s:%d not reachable (%s); retrying with backoff up to %.1f s",
                                self.host, self.port, e, self.backoff_max)
                    warned = True
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.backoff_max)
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(self.send_timeout)
            self._sock = sock
            with self._cv:
                self._counts["connects"] += 1
                self._connected = True
                # Poses queued while nobody listened are stale; the relay wants the newest.
                while len(self._queue) > 1:
                    self._queue.popleft()
                    self._counts["dropped"] += 1
            log.info("remi sink: connected to relay %s:%d", self.host, self.port)
            backoff, warned = self.backoff_initial, False
            try:
                self._pump(sock)
            except OSError as e:
                with self._cv:
                    self._counts["errors"] += 1
                log.warning("remi sink: relay connection lost (%s); reconnecting", e)
            finally:
                with self._cv:
                    self._connected = False
                self._close_socket()
                # A relay that accepts and immediately drops us must not make us spin.
                self._stop.wait(backoff)

    def _pump(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            with self._cv:
                if not self._queue:
                    self._cv.wait(timeout=0.2)
                msg = self._queue.popleft() if self._queue else None
            self._drain(sock)
            if msg is not None:
                sock.sendall(msg)
                with self._cv:
                    self._counts["sent"] += 1
                    self._counts["bytes_sent"] += len(msg)

    def _drain(self, sock: socket.socket) -> None:
        """Read and discard whatever the relay sent; notice when it closed the connection."""
        while select.select([sock], [], [], 0)[0]:
            data = sock.recv(65536)
            if not data:
                raise ConnectionResetError("relay closed the connection")
            with self._cv:
                self._counts["ignored_bytes"] += len(data)

    def _close_socket(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
