"""Subscribe to the native stream (architecture.md §7) and get `PosesFrame` objects.

    from pipeline.client import NativeClient
    with NativeClient("tcp://127.0.0.1:5560") as client:
        frame = client.receive(timeout=1.0)   # PosesFrame or None

Every message is validated (header schema, array offsets inside the buffer); a malformed
one raises `StreamError` from `decode()` and is skipped and counted by `receive()`.
"""
from __future__ import annotations

import logging

import msgpack
import numpy as np

from pipeline.pose.frame import Person, PosesFrame

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5560"
_SHAPES = {"global_orient": (3,), "body_pose": (69,), "betas": (10,), "transl": (3,), "pred_cam": (3,),
           "joint_uncertainty": (24,), "joints": (24, 3)}
_HEADER_TYPES = {"frame_id": int, "t_capture_ns": int, "generation": int, "source_epoch": int,
                 "frame_height": int, "frame_width": int, "model": str, "backend": str, "precision": str,
                 "untrained": bool, "n_found": int, "stamps": dict, "persons": list}


class StreamError(ValueError):
    """A native-stream message did not match the format."""


def decode(parts: list) -> PosesFrame:
    return decode_with_header(parts)[1]


def decode_with_header(parts: list) -> tuple[dict, PosesFrame]:
    """The checked header map (unknown keys kept, for a relay that passes it on) and the frame."""
    if len(parts) != 2:
        raise StreamError(f"expected 2 message parts (header, buffer), got {len(parts)}")
    try:
        header = msgpack.unpackb(bytes(parts[0]), raw=False)
    except Exception as exc:
        raise StreamError(f"header is not msgpack: {exc}") from exc
    if not isinstance(header, dict) or header.get("v") != 1:
        raise StreamError("header is not a version-1 native-stream map")
    for key, tp in _HEADER_TYPES.items():
        if not isinstance(header.get(key), tp):
            raise StreamError(f"header field {key!r} must be {tp.__name__}")
    # `stream` (several sources in one pipeline) is newer than v1's other fields: absent = main
    stream = header.get("stream", "main")
    if not isinstance(stream, str) or not 0 < len(stream) <= 64:
        raise StreamError("header field 'stream' must be a short string")
    buf = bytes(parts[1])
    persons = []
    for i, p in enumerate(header["persons"]):
        if not isinstance(p, dict) or not isinstance(p.get("arrays"), dict):
            raise StreamError(f"person {i} is malformed")
        arrays = {}
        for name, spec in p["arrays"].items():
            if name not in _SHAPES or not isinstance(spec, list) or len(spec) != 2:
                raise StreamError(f"person {i}: unknown or malformed array {name!r}")
            offset, shape = spec
            if tuple(shape) != _SHAPES[name] or not isinstance(offset, int) or offset < 0:
                raise StreamError(f"person {i}: array {name} has shape {shape}, expected {_SHAPES[name]}")
            n = int(np.prod(shape)) * 4
            if offset + n > len(buf):
                raise StreamError(f"person {i}: array {name} lies outside the buffer")
            arrays[name] = np.frombuffer(buf, "<f4", n // 4, offset).reshape(shape).copy()
        missing = {"global_orient", "body_pose", "betas", "transl"} - set(arrays)
        if missing:
            raise StreamError(f"person {i}: missing arrays {sorted(missing)}")
        persons.append(Person(
            track_id=int(p.get("track_id", -1)), box=np.asarray(p.get("box", [0, 0, 0, 0]), np.float32),
            score=float(p.get("score", 0.0)), global_orient=arrays["global_orient"],
            body_pose=arrays["body_pose"], betas=arrays["betas"], transl=arrays["transl"],
            pred_cam=arrays.get("pred_cam", np.zeros(3, np.float32)),
            joint_uncertainty=arrays.get("joint_uncertainty", np.zeros(24, np.float32)),
            joints=arrays.get("joints")))
    return header, PosesFrame(
        frame_id=header["frame_id"], t_capture_ns=header["t_capture_ns"], generation=header["generation"],
        source_epoch=header["source_epoch"], frame_height=header["frame_height"],
        frame_width=header["frame_width"], model=header["model"], backend=header["backend"],
        precision=header["precision"], untrained=header["untrained"], n_found=header["n_found"],
        stamps_ns={str(k): int(v) for k, v in header["stamps"].items()}, persons=persons, stream=stream)


class NativeClient:
    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, conflate: bool = False):
        import zmq

        self._zmq = zmq
        self.endpoint = endpoint
        self.malformed = 0
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.RCVHWM, 100)
        self._sock.setsockopt(zmq.MAXMSGSIZE, 64 << 20)
        self._sock.setsockopt(zmq.SUBSCRIBE, b"")
        self._sock.connect(endpoint)

    def receive(self, timeout: float | None = 1.0) -> PosesFrame | None:
        """The next valid frame, or None when nothing valid arrived within `timeout` seconds."""
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._sock.poll(None if remaining is None else int(remaining * 1000)):
                return None
            parts = self._sock.recv_multipart()
            try:
                return decode(parts)
            except StreamError as exc:
                self.malformed += 1
                log.warning("skipped malformed native-stream message: %s", exc)
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def close(self) -> None:
        self._sock.close(0)
        self._ctx.term()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
