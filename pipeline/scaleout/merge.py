"""The head's merged native stream: one SUB per pipeline in, one PUB out.

Every message is validated (`pipeline.client.decode_with_header`) before it is passed on; the buffer part
goes out untouched, the header gets four keys (still a version-1 header: clients ignore keys
they do not know):

* `stream`: the pipeline's name (`p0`), or `p0/<stream>` when the node runs several named streams;
* `pipeline`, `node`: the pipeline and the node address it runs on;
* `node_frame_id`: the frame id the node gave; `frame_id` is the head's, strictly increasing
  per stream across restarts of the pipeline.

Why ids are rewritten: a pipeline that Ray restarts is a new run whose capture counts from 0
again, so (stream, node frame id) pairs would repeat. Each run of a stream is a *segment*
(header key `segment`, from 1): the head follows one run per feed (a new run id reported by the
actor means a new feed, and the old feed's queued messages are discarded with its socket), and
the first frame of a new feed is shifted to follow the last id the head sent. Within a segment
an id not above the last one is a duplicate and is dropped (counted). So every
(stream, frame_id) pair leaves the head once, whatever ids the runs use.

Latency per stream is measured on the node's clock only (publish stamp - capture stamp, both
`time.monotonic_ns` of that node); the head never subtracts its own clock from a node's.
"""
from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgpack

from pipeline.client import StreamError, decode_with_header
from pipeline.config import is_loopback
from pipeline.config_streams import DEFAULT_STREAM

log = logging.getLogger(__name__)

FPS_WINDOW_S = 2.0


@dataclass
class StreamState:
    feed: int | None = None       # serial of the feed (one run of the pipeline) the segment came from
    last_node_id: int = -1
    offset: int = 0
    last_out: int = -1
    frames: int = 0
    segments: int = 0
    duplicates: int = 0
    arrivals: collections.deque = field(default_factory=lambda: collections.deque(maxlen=512))
    latency_ms: collections.deque = field(default_factory=lambda: collections.deque(maxlen=256))

    def next_id(self, node_id: int, feed: int) -> int | None:
        """The head's frame id for `node_id` from feed `feed`, or None for a duplicate."""
        if feed != self.feed:
            self.feed = feed
            self.segments += 1
            self.offset = self.last_out + 1 - node_id
        elif node_id <= self.last_node_id:
            self.duplicates += 1
            return None
        self.last_node_id = node_id
        self.last_out = node_id + self.offset
        return self.last_out


@dataclass
class _Feed:
    name: str
    endpoint: str
    node: str
    run_id: str | None
    sock: object
    serial: int


class Merger:
    def __init__(self, endpoint: str, hwm: int = 100, record_path: str | Path | None = None):
        import zmq

        if not isinstance(endpoint, str) or not endpoint.startswith(("tcp://", "ipc://")):
            raise ValueError(f"merged stream endpoint {endpoint!r} — expected tcp://HOST:PORT or ipc://PATH")
        self._zmq = zmq
        self._ctx = zmq.Context()
        self._pub = self._ctx.socket(zmq.PUB)
        self._pub.setsockopt(zmq.LINGER, 0)
        self._pub.setsockopt(zmq.SNDHWM, hwm)
        try:
            self._pub.bind(endpoint)
        except zmq.ZMQError as exc:
            self.close()
            raise ValueError(f"the merged stream cannot bind {endpoint}: {exc}; set sinks.native.endpoint "
                             f"(e.g. tcp://127.0.0.1:5561)") from exc
        self.endpoint = self._pub.getsockopt(zmq.LAST_ENDPOINT).decode()
        host = self.endpoint[len("tcp://"):].rsplit(":", 1)[0].strip("[]") if self.endpoint.startswith("tcp://") else ""
        if host and not is_loopback(host):
            log.warning("the merged stream listens on %s, reachable from other machines", self.endpoint)
        self._poller = zmq.Poller()
        self.feeds: dict[str, _Feed] = {}
        self.streams: dict[str, StreamState] = {}
        self.sent = self.dropped = self.malformed = 0
        self._serial = 0
        self._record_path = Path(record_path) if record_path else None
        self._recorders: dict = {}
        log.info("merged native stream on %s", self.endpoint)

    def follow(self, name: str, endpoint: str, node: str, run_id: str | None) -> None:
        """Subscribe to pipeline `name` at `endpoint`; a new endpoint or run replaces the old feed."""
        feed = self.feeds.get(name)
        if feed is not None and feed.endpoint == endpoint and feed.run_id == run_id:
            return
        self.forget(name)
        sock = self._ctx.socket(self._zmq.SUB)
        sock.setsockopt(self._zmq.LINGER, 0)
        sock.setsockopt(self._zmq.RCVHWM, 100)
        sock.setsockopt(self._zmq.MAXMSGSIZE, 64 << 20)
        sock.setsockopt(self._zmq.SUBSCRIBE, b"")
        sock.connect(endpoint)
        self._poller.register(sock, self._zmq.POLLIN)
        self._serial += 1
        self.feeds[name] = _Feed(name, endpoint, node, run_id, sock, self._serial)
        log.info("following pipeline %s on %s (run %s)", name, endpoint, run_id)

    def forget(self, name: str) -> None:
        feed = self.feeds.pop(name, None)
        if feed is not None:
            self._poller.unregister(feed.sock)
            feed.sock.close(0)

    def pump(self, timeout_s: float) -> int:
        """Move what arrives within `timeout_s` to the merged stream; the number of frames sent."""
        sent = 0
        by_sock = {f.sock: f for f in self.feeds.values()}
        for sock, _ in self._poller.poll(int(timeout_s * 1000)) if by_sock else _sleep(timeout_s):
            feed = by_sock.get(sock)
            if feed is None:
                continue
            for _ in range(100):  # bounded: one busy pipeline must not starve the others
                try:
                    parts = sock.recv_multipart(self._zmq.NOBLOCK)
                except self._zmq.Again:
                    break
                sent += self._forward(feed, parts)
        return sent

    def _forward(self, feed: _Feed, parts: list) -> int:
        try:
            header, frame = decode_with_header(parts)
        except StreamError as exc:
            self.malformed += 1
            log.warning("pipeline %s sent a malformed frame: %s", feed.name, exc)
            return 0
        inner = header.get("stream")
        # A single-source pipeline's one stream ("main") adds nothing to the pipeline's name.
        named = isinstance(inner, str) and inner and inner != DEFAULT_STREAM
        stream = f"{feed.name}/{inner}" if named else feed.name
        state = self.streams.setdefault(stream, StreamState())
        frame_id = state.next_id(frame.frame_id, feed.serial)
        if frame_id is None:
            return 0
        header.update(stream=stream, pipeline=feed.name, node=feed.node, node_frame_id=frame.frame_id,
                      frame_id=frame_id, segment=state.segments)
        now = time.monotonic()
        state.frames += 1
        state.arrivals.append(now)
        publish = frame.stamps_ns.get("publish")
        if publish:
            state.latency_ms.append((publish - frame.t_capture_ns) / 1e6)
        try:
            self._pub.send_multipart([msgpack.packb(header, use_bin_type=True), bytes(parts[1])],
                                     self._zmq.NOBLOCK, copy=False)
            self.sent += 1
        except self._zmq.Again:
            self.dropped += 1
        if self._record_path is not None:
            frame.frame_id = frame_id
            self._recorder(stream).send(frame)
        return 1

    def _recorder(self, stream: str):
        rec = self._recorders.get(stream)
        if rec is None:
            from pipeline.sinks.recording import RecordingSink

            p = self._record_path
            path = p.with_name(f"{p.stem}.{stream.replace('/', '.')}{p.suffix or '.npz'}")
            rec = self._recorders[stream] = RecordingSink(path)
            rec.open()
            log.info("recording stream %s to %s", stream, path)
        return rec

    def stream_stats(self) -> dict:
        now = time.monotonic()
        out = {}
        for name, s in self.streams.items():
            recent = [t for t in s.arrivals if now - t <= FPS_WINDOW_S]
            lat = sorted(s.latency_ms)
            out[name] = {"frames": s.frames, "fps": round(len(recent) / FPS_WINDOW_S, 2),
                         "segments": s.segments, "duplicates": s.duplicates, "last_frame_id": s.last_out,
                         "node_latency_p50_ms": round(lat[len(lat) // 2], 1) if lat else None}
        return out

    def recordings(self) -> list[str]:
        return [str(r.path) for r in self._recorders.values()]

    def close(self) -> None:
        for name in list(self.feeds):
            self.forget(name)
        for rec in self._recorders.values():
            rec.close()
        if self._pub is not None:
            self._pub.close(0)
            self._pub = None
        self._ctx.term()


def _sleep(seconds: float) -> list:
    time.sleep(seconds)
    return []
