"""ZeroMQ control plane (docs/architecture.md §3, §12).

* `ControlServer` — the supervisor's side: a ROUTER for commands/heartbeats from workers and
  the CLI, and a PUB for lifecycle events.
* `WorkerLink` — a worker's DEALER to that ROUTER.
* `ControlClient` — the CLI's request/reply helper (a DEALER with a timeout, so a dead
  supervisor never hangs the CLI).

Endpoints are ``ipc://`` paths inside the private run directory (0700; socket files 0600), or
``tcp://`` on a loopback address when asked (``control.transport: tcp``); never another host,
and never tcp as a silent fallback. Every message to the ROUTER travels as two frames,
``[token, body]``: the token is a random secret the supervisor writes into the run's
``control.json`` (0600) and hands its workers in the environment (never on a command line,
which other users can read). Traffic without it is refused before it is decoded: a command
gets an error reply saying why, anything else is dropped and counted. Malformed messages are
logged and dropped. The events PUB carries lifecycle news only (no commands, no token).
"""
from __future__ import annotations

import hmac
import itertools
import logging
import os
import secrets
import uuid

import zmq

from pipeline.config import is_loopback
from pipeline.runtime.messages import Command, Event, MessageError, Reply, decode, encode

log = logging.getLogger(__name__)

TOKEN_ENV = "POSEPIPE_CONTROL_TOKEN"   # how the supervisor hands the token to its workers
REFUSED = ("refused: this message carries no valid control token; clients read it from control.json "
           "in the pipeline's run directory (the `pipeline` command does this for you)")
_REFUSALS_LOGGED = 100                 # distinct peers whose refusal is logged at WARNING


class ControlError(RuntimeError):
    """The supervisor did not answer or answered with an error."""


IPC_PATH_MAX = 100  # sockaddr_un.sun_path is 108 bytes on Linux


def new_token() -> str:
    return secrets.token_hex(32)


def make_endpoints(run_dir, transport: str = "ipc", host: str = "127.0.0.1") -> dict:
    if transport == "ipc":
        paths = [str(run_dir.socket_path("control")), str(run_dir.socket_path("events"))]
        longest = max(map(len, paths))
        if longest > IPC_PATH_MAX:
            raise ValueError(f"the run directory {run_dir.path} is too long for ipc sockets ({longest} > "
                             f"{IPC_PATH_MAX} characters); set POSEPIPE_RUNTIME_DIR to a shorter folder "
                             f"(e.g. /tmp/pp), or choose control.transport=tcp (loopback, token-authenticated)")
        return {"router": f"ipc://{paths[0]}", "events": f"ipc://{paths[1]}"}
    if transport == "tcp":
        if not is_loopback(host):
            raise ValueError(f"control.host = {host!r}: the control socket only listens on loopback "
                             f"(127.0.0.1 or ::1)")
        shown = f"[{host}]" if ":" in host else host
        return {"router": f"tcp://{shown}:*", "events": f"tcp://{shown}:*"}
    raise ValueError(f"control transport {transport!r} — allowed: ipc, tcp")


class ControlServer:
    def __init__(self, endpoints: dict, token: str):
        if not token:
            raise ValueError("ControlServer needs a control token (control.new_token())")
        self.token = token
        self._token = token.encode()
        self.ctx = zmq.Context()
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.router.setsockopt(zmq.MAXMSGSIZE, 1 << 20)
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.setsockopt(zmq.SNDHWM, 1000)
        old_umask = os.umask(0o177)  # ipc socket files are created 0600
        try:
            self.router.bind(endpoints["router"])
            self.pub.bind(endpoints["events"])
        finally:
            os.umask(old_umask)
        self.endpoints = {"router": self.router.getsockopt(zmq.LAST_ENDPOINT).decode(),
                          "events": self.pub.getsockopt(zmq.LAST_ENDPOINT).decode()}
        self.poller = zmq.Poller()
        self.poller.register(self.router, zmq.POLLIN)
        self.dropped = 0
        self.refused = 0
        self._refused_from: set = set()

    def poll(self, timeout_s: float) -> list[tuple[bytes, object]]:
        """Wait up to timeout_s, then return every decoded (sender identity, message)."""
        out = []
        events = dict(self.poller.poll(max(0, int(timeout_s * 1000))))
        if self.router not in events:
            return out
        while True:
            try:
                frames = self.router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return out
            if len(frames) not in (2, 3):
                self.dropped += 1
                log.warning("dropped control message with %d frames (expected identity + token + body)",
                            len(frames))
                continue
            identity, token, body = frames if len(frames) == 3 else (frames[0], b"", frames[1])
            if not hmac.compare_digest(token, self._token):
                self._refuse(identity, body)
                continue
            try:
                out.append((identity, decode(body)))
            except MessageError as exc:
                self.dropped += 1
                log.warning("dropped malformed control message from %r: %s", frames[0][:32], exc)

    def _refuse(self, identity: bytes, body: bytes) -> None:
        self.refused += 1
        if identity not in self._refused_from and len(self._refused_from) < _REFUSALS_LOGGED:
            self._refused_from.add(identity)
            log.warning("refused control traffic from %r: no valid control token", identity[:32])
        try:
            msg = decode(body)
        except MessageError:
            return
        if isinstance(msg, Command):
            self.send(identity, Reply(msg.id, False, error=REFUSED))

    def send(self, identity: bytes, msg) -> bool:
        try:
            self.router.send_multipart([identity, encode(msg)], zmq.NOBLOCK)
            return True
        except (zmq.Again, zmq.ZMQError) as exc:
            # Peer gone (EHOSTUNREACH) or its queue is full: a command it will never see.
            log.debug("could not send %s to %r: %s", type(msg).__name__, identity, exc)
            return False

    def publish(self, kind: str, **data) -> None:
        try:
            self.pub.send(encode(Event(kind, data)), zmq.NOBLOCK)
        except (zmq.Again, MessageError) as exc:
            log.debug("event %s not published: %s", kind, exc)

    def close(self) -> None:
        self.router.close(0)
        self.pub.close(0)
        self.ctx.term()


class WorkerLink:
    """A worker's DEALER. Not thread-safe: one thread owns it."""

    def __init__(self, endpoint: str, name: str, generation: int, token: str):
        self._token = token.encode()
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 500)
        self.sock.setsockopt(zmq.SNDHWM, 100)
        self.sock.setsockopt(zmq.IDENTITY, f"w:{name}:{generation}:{os.getpid()}".encode())
        self.sock.connect(endpoint)

    def send(self, msg) -> None:
        try:
            self.sock.send_multipart([self._token, encode(msg)], zmq.NOBLOCK)
        except zmq.Again:
            log.debug("control queue full; %s dropped", type(msg).__name__)

    def recv(self, timeout_s: float):
        """The next valid message within timeout_s, else None (malformed ones are dropped)."""
        if not self.sock.poll(int(timeout_s * 1000)):
            return None
        data = self.sock.recv()
        try:
            return decode(data)
        except MessageError as exc:
            log.warning("dropped malformed control message: %s", exc)
            return None

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()


class ControlClient:
    """Request/reply to the supervisor, e.g. ``ControlClient(ep, token).request("status")``, or
    ``ControlClient.of(endpoints)`` with the endpoints of `rundir.current_run()`."""

    _ids = itertools.count(1)

    def __init__(self, endpoint: str, token: str):
        self._token = token.encode()
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.IDENTITY, f"c:{uuid.uuid4().hex[:12]}".encode())
        self.sock.connect(endpoint)

    def request(self, cmd: str, args: dict | None = None, timeout_s: float = 5.0):
        cid = next(self._ids)
        self.sock.send_multipart([self._token, encode(Command(cid, cmd, args or {}))])
        deadline_ms = int(timeout_s * 1000)
        while self.sock.poll(deadline_ms):
            try:
                msg = decode(self.sock.recv())
            except MessageError as exc:
                log.warning("dropped malformed reply: %s", exc)
                continue
            if isinstance(msg, Reply) and msg.id == cid:
                if not msg.ok:
                    raise ControlError(msg.error or f"{cmd} failed")
                return msg.result
        raise ControlError(f"the supervisor did not answer {cmd!r} within {timeout_s:g} s")

    @classmethod
    def of(cls, endpoints: dict) -> "ControlClient":
        """A client for the run whose control.json holds `endpoints` (router + token)."""
        return cls(endpoints["router"], endpoints["token"])

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def request_current(cmd: str, args: dict | None = None, timeout_s: float = 5.0):
    """One request to the pipeline running now (`rundir.current_run()`): its result, else
    rundir.NotRunning when none runs, or ControlError when it refuses or does not answer."""
    from pipeline.runtime import rundir

    _, endpoints = rundir.current_run()
    with ControlClient.of(endpoints) as client:
        return client.request(cmd, args, timeout_s=timeout_s)
