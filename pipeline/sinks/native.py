"""The native stream (architecture.md §7): ZeroMQ PUB, one two-part message per published frame.

Part 1 is a msgpack header::

    {"v": 1, "frame_id", "t_capture_ns", "generation", "source_epoch", "stream", "frame_height",
     "frame_width", "model", "backend", "precision", "untrained", "n_found",
     "stamps": {stage: ns}, "persons": [{"track_id", "box", "score",
                                        "arrays": {field: [byte offset, shape]}}]}

Part 2 is one buffer of little-endian float32 arrays; every person's arrays (smplx names:
global_orient, body_pose, betas, transl, plus pred_cam, joint_uncertainty and joints when
present) sit at the offsets the header gives. No pickle. `pipeline.client` decodes it.

PUB never blocks: a subscriber that falls behind by `hwm` frames loses frames (counted by
ZeroMQ, not by us); a send that would block is dropped and counted here.
"""
from __future__ import annotations

import logging

import msgpack
import numpy as np

from pipeline.pose.frame import PosesFrame
from pipeline.sinks.base import Sink, SinkError

log = logging.getLogger(__name__)

VERSION = 1
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
ARRAY_FIELDS = ("global_orient", "body_pose", "betas", "transl", "pred_cam", "joint_uncertainty", "joints")


def encode_frame(frame: PosesFrame) -> tuple[bytes, bytes]:
    chunks = []
    offset = 0
    persons = []
    for p in frame.persons:
        arrays = {}
        for name in ARRAY_FIELDS:
            value = getattr(p, name)
            if value is None:
                continue
            arr = np.ascontiguousarray(value, dtype="<f4")
            arrays[name] = [offset, list(arr.shape)]
            chunks.append(arr.tobytes())
            offset += arr.nbytes
        persons.append({"track_id": int(p.track_id), "box": [float(x) for x in p.box],
                        "score": float(p.score), "arrays": arrays})
    header = {
        "v": VERSION, "frame_id": frame.frame_id, "t_capture_ns": frame.t_capture_ns,
        "generation": frame.generation, "source_epoch": frame.source_epoch, "stream": frame.stream,
        "frame_height": frame.frame_height, "frame_width": frame.frame_width,
        "model": frame.model, "backend": frame.backend, "precision": frame.precision,
        "untrained": bool(frame.untrained), "n_found": frame.n_found,
        "stamps": dict(frame.stamps_ns), "persons": persons,
    }
    return msgpack.packb(header, use_bin_type=True), b"".join(chunks)


class NativeSink(Sink):
    name = "native"

    def __init__(self, endpoint: str = "tcp://127.0.0.1:5560", hwm: int = 20):
        if not isinstance(endpoint, str) or not endpoint.startswith(("tcp://", "ipc://")):
            raise SinkError(f"config error: sinks.native.endpoint = {endpoint!r} — expected tcp://HOST:PORT or ipc://PATH")
        if not isinstance(hwm, int) or hwm < 1:
            raise SinkError(f"config error: sinks.native.hwm = {hwm!r} — expected an integer >= 1")
        self.requested = endpoint
        self.endpoint = endpoint
        self.hwm = hwm
        self._ctx = self._sock = None
        self._counts = {"sent": 0, "dropped": 0, "errors": 0}

    def open(self) -> None:
        import zmq

        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.PUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SNDHWM, self.hwm)
        if self.requested.startswith("tcp://["):
            self._sock.setsockopt(zmq.IPV6, 1)  # an IPv6 literal endpoint, e.g. tcp://[::1]:5560
        try:
            self._sock.bind(self.requested)
        except zmq.ZMQError as exc:
            self.close()
            raise SinkError(f"native stream cannot bind {self.requested}: {exc}; another pipeline may be "
                            f"running — set sinks.native.endpoint (e.g. tcp://127.0.0.1:5561)") from exc
        self.endpoint = self._sock.getsockopt(zmq.LAST_ENDPOINT).decode()
        log.info("native stream on %s", self.endpoint)
        host = self.endpoint[len("tcp://"):].rsplit(":", 1)[0].strip("[]") if self.endpoint.startswith("tcp://") else ""
        if host and host not in LOOPBACK_HOSTS:
            # architecture.md §12: loopback unless the user asked; say so, since anyone on the network can subscribe.
            log.warning("native stream listens on %s, reachable from other machines (set sinks.native.endpoint "
                        "to tcp://127.0.0.1:PORT to keep it local)", self.endpoint)

    def send(self, frame: PosesFrame, image=None) -> None:
        import zmq

        try:
            header, body = encode_frame(frame)
            self._sock.send_multipart([header, body], zmq.NOBLOCK, copy=False)
            self._counts["sent"] += 1
        except zmq.Again:
            self._counts["dropped"] += 1
        except (zmq.ZMQError, ValueError, TypeError) as exc:
            self._counts["errors"] += 1
            log.warning("native stream send failed: %s", exc)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(0)
            self._sock = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    def stats(self) -> dict:
        return {**self._counts, "endpoint": self.endpoint}
