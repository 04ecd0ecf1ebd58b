"""Fuzz a running pipeline's control socket (issue 9, architecture.md §3, §12).

    python tools/fuzz_control.py --count 10000 --seed 1     # against `pipeline start --detach`

Sends a seeded mix of hostile traffic to the supervisor's ROUTER, from one DEALER like any
client: random bytes, oversized frames (over the 1 MiB limit), multi-part messages, msgpack
values that are not maps, and -- most of all -- well-formed envelopes (`command`, `reply`,
`event`, `hello`, `heartbeat`, ...) whose fields are wrong: bad types, unknown fields, huge
or negative numbers, NaN/inf, deep nesting, unknown commands and workers, `set` of unknown
or invalid live settings (forwarded to the workers, so their side is fuzzed as well), and
impersonations of real workers (`fatal`/`finished` events, heartbeats) from a foreign identity.

Commands that a legitimate user may send and that change the pipeline on purpose (`stop`,
`pause`, a valid `swap`) are never sent: the point is that nothing *invalid* does any harm. Afterwards the
pipeline must still answer `status`, with the same worker pids, and keep publishing.

The main run carries the run's control token (read from control.json, as the CLI does), so
the hostile messages reach the decoder and the command handlers. A second run sends traffic
without a valid token (none, empty, wrong, and a real `status`/`stop`): every command must
get the refusal reply and nothing else may happen. Exit code 0 when all holds, 1 otherwise.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from dataclasses import dataclass, field

import msgpack

OVERSIZED = (1 << 20) + 64          # just over the supervisor's MAXMSGSIZE / MAX_MESSAGE_BYTES
MESSAGE_TYPES = ("hello", "ready", "heartbeat", "bye", "command", "reply", "event")
SAFE_COMMANDS = ("status", "ping", "set", "resume", "swap", "ab", "record", "", "STATUS", "status\x00",
                 "x" * 300, "__init__", "_shutdown")


def _junk(rng: random.Random, depth: int = 0):
    """A random msgpack-able value of any type."""
    kind = rng.randrange(12 if depth < 3 else 8)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 1, 2**31, -(2**63), 2**64 - 1, rng.randrange(-1000, 1000)])
    if kind == 3:
        return rng.choice([0.0, -0.0, math.nan, math.inf, -math.inf, 1e308, rng.uniform(-1e6, 1e6)])
    if kind == 4:
        return rng.choice(["", "a", "\x00", "é☃", "../../etc/passwd", "%s%n", "x" * rng.randrange(1, 2000)])
    if kind == 5:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 64)))
    if kind == 6:
        return rng.choice(["capture", "detection", "inference", "publisher", "metrics", "supervisor"])
    if kind == 7:
        return rng.randrange(-5, 5)
    if kind in (8, 9):
        return [_junk(rng, depth + 1) for _ in range(rng.randrange(0, 5))]
    return {rng.choice(["worker", "key", "value", "id", "cmd", "args", "kind", "data", "x", ""]):
            _junk(rng, depth + 1) for _ in range(rng.randrange(0, 5))}


def _deep(levels: int) -> bytes:
    """msgpack bytes of `levels` nested one-element arrays (deeper than msgpack packs itself)."""
    return b"\x91" * levels + b"\xc0"


def _envelope(rng: random.Random, workers: list[str]) -> dict:
    """A map with a valid `type` tag and fields that are (mostly) wrong."""
    kind = rng.choice(MESSAGE_TYPES + ("command", "command", "command", "event"))
    msg: dict = {"type": kind}
    if kind == "command":
        cmd = rng.choice(SAFE_COMMANDS) if rng.random() < 0.85 else _junk(rng)
        msg["id"] = rng.randrange(1, 10**6) if rng.random() < 0.8 else \
            rng.choice([-1, 0, 2**63 - 1, "1", 1.5, None, True])
        msg["cmd"] = cmd
        if cmd == "set":
            args = {"worker": rng.choice(workers + ["", "nobody", 7, None, ["inference"]]),
                    "key": rng.choice(["", "fz_" + str(rng.randrange(100)), "__class__", "params", 5, None,
                                       "delay_ms", "key"]),
                    "value": _junk(rng)}
            if args["key"] == "delay_ms":  # the one real live setting: only invalid values
                args["value"] = rng.choice([-1, math.nan, math.inf, -math.inf, "fast", None, True, [1], {"a": 1}])
        elif cmd == "resume":
            args = {"worker": rng.choice(workers + ["nobody", 3, None])}
        elif cmd == "swap":  # a real swap is a legitimate change: only invalid ones
            args = {"worker": rng.choice(workers + ["nobody", 3, None]),
                    "params": rng.choice([{"fz_" + str(rng.randrange(9)): _junk(rng)}, "x", 5, [1], None])}
        else:
            args = {rng.choice(["worker", "key", "value", "seconds", "x"]): _junk(rng) for _ in range(3)} \
                if rng.random() < 0.7 else _junk(rng)
        if rng.random() < 0.9:
            msg["args"] = args
    elif kind == "event":
        msg["kind"] = rng.choice(["fatal", "finished", "progress", "ready", "restarted", _junk(rng)])
        msg["data"] = rng.choice([
            {"worker": rng.choice(workers), "generation": rng.randrange(0, 4), "error": "fuzz",
             "reason": "fuzz"},
            _junk(rng)])
    elif kind in ("hello", "ready", "heartbeat", "bye"):
        msg["name"] = rng.choice(workers + [_junk(rng)])
        msg["generation"] = rng.randrange(0, 4) if rng.random() < 0.7 else rng.choice([-1, "1", None])
        if kind == "hello":
            msg["pid"] = rng.choice([1, 0, -1, 2**40, "self"])
        elif kind == "ready":
            msg["info"] = _junk(rng)
        elif kind == "heartbeat":
            msg["stats"] = rng.choice([{"frames_in": _junk(rng), "extras": _junk(rng)}, _junk(rng),
                                       {"fps": math.nan, "nope": 1}])
        else:
            msg["reason"] = _junk(rng)
    else:  # reply
        msg.update(id=rng.choice([rng.randrange(0, 100), -1, "x"]), ok=_junk(rng), result=_junk(rng),
                   error=_junk(rng))
    # Sometimes: an unknown field, or a required field removed.
    if rng.random() < 0.1:
        msg[rng.choice(["extra", "", "type2"])] = _junk(rng)
    if rng.random() < 0.1 and len(msg) > 1:
        msg.pop(rng.choice([k for k in msg if k != "type"]))
    return msg


def generate(rng: random.Random, workers: list[str]):
    """One fuzz message: bytes (one frame) or a list of bytes (several frames), and its class."""
    r = rng.random()
    if r < 0.08:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 256))), "random-bytes"
    if r < 0.09:
        return b"\x00" * OVERSIZED, "oversized"
    if r < 0.12:
        return [msgpack.packb({"type": "command", "id": 1, "cmd": "status", "args": {}})] * rng.randrange(2, 5), \
            "multipart"
    if r < 0.18:
        if rng.random() < 0.2:
            return _deep(rng.randrange(10, 100000)), "deep-nesting"
        return msgpack.packb(rng.choice([_junk(rng), [1, 2], 5, "status", None]), use_bin_type=True), "not-a-map"
    if r < 0.20:
        return msgpack.packb({"type": _junk(rng), "id": 1}, use_bin_type=True), "bad-type-tag"
    if r < 0.22:
        return msgpack.packb({1: "int key", "type": "command"}, use_bin_type=True), "non-str-key"
    return msgpack.packb(_envelope(rng, workers), use_bin_type=True), "envelope"


@dataclass
class FuzzResult:
    sent: int = 0
    replies: int = 0
    error_replies: int = 0
    refused_replies: int = 0                    # error replies that say the token was missing
    seconds: float = 0.0
    by_class: dict = field(default_factory=dict)
    valid: dict = field(default_factory=dict)   # messages that pass schema decoding, by type


def fuzz(endpoint: str, count: int = 10000, seed: int = 0, workers: list[str] | None = None,
         max_seconds: float = 60.0, token: str | None = None) -> FuzzResult:
    """Send `count` fuzz messages to the ROUTER at `endpoint` (stops early after max_seconds).

    With `token` every message carries it (the hostile content reaches the decoder); without,
    the messages carry no token, an empty one or a wrong one in turn (`unauthenticated`)."""
    import zmq

    rng = random.Random(seed)
    workers = list(workers or ["capture", "detection", "inference", "publisher"])
    result = FuzzResult()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 100000)
    sock.setsockopt(zmq.IDENTITY, f"c:fuzz{seed}".encode())
    sock.connect(endpoint)
    t0 = time.monotonic()
    try:
        for _ in range(count):
            if time.monotonic() - t0 > max_seconds:
                break
            msg, cls = generate(rng, workers)
            if token is None and rng.random() < 0.05:
                # The most tempting commands an intruder could send: refused like the rest.
                msg, cls = msgpack.packb({"type": "command", "id": rng.randrange(1, 10**6),
                                          "cmd": rng.choice(["status", "stop", "pause"]),
                                          "args": {"worker": "capture"}}), "real-command"
            frames = _with_token(msg, token, rng)
            if cls == "oversized":
                # ZeroMQ drops the connection of a peer that exceeds MAXMSGSIZE; a throw-away
                # socket keeps the main one (and the replies queued for it) connected.
                big = ctx.socket(zmq.DEALER)
                big.setsockopt(zmq.LINGER, 200)
                big.connect(endpoint)
                big.send_multipart(frames)
                big.close()
            else:
                sock.send_multipart(frames)
            result.sent += 1
            result.by_class[cls] = result.by_class.get(cls, 0) + 1
            if isinstance(msg, bytes):
                kind = _decodes_as(msg)
                if kind:
                    result.valid[kind] = result.valid.get(kind, 0) + 1
            _drain(sock, result)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            if not sock.poll(100):
                continue
            _drain(sock, result)
    finally:
        sock.close(0)
        ctx.term()
    result.seconds = round(time.monotonic() - t0, 2)
    return result


def _with_token(msg, token: str | None, rng: random.Random) -> list[bytes]:
    """The frames to send: [token, *msg] with the token; else no token, an empty or a wrong one."""
    frames = list(msg) if isinstance(msg, list) else [msg]
    if token is not None:
        return [token.encode(), *frames]
    way = rng.randrange(3)
    if way == 0:
        return frames
    return [b"" if way == 1 else rng.randbytes(32).hex().encode(), *frames]


def _decodes_as(data: bytes) -> str:
    """The message type the receiver will see ('' when it drops the message as malformed)."""
    from pipeline.runtime.messages import MessageError, decode

    try:
        msg = decode(data)
    except MessageError:
        return ""
    name = type(msg).__name__.lower()
    return f"{name}:{msg.cmd}" if name == "command" and isinstance(msg.cmd, str) and len(msg.cmd) < 20 else name


def _drain(sock, result: FuzzResult) -> None:
    import zmq

    from pipeline.runtime.control import REFUSED
    from pipeline.runtime.messages import MessageError, Reply, decode

    while True:
        try:
            data = sock.recv(zmq.NOBLOCK)
        except zmq.Again:
            return
        try:
            msg = decode(data)
        except MessageError:
            continue
        if isinstance(msg, Reply):
            result.replies += 1
            result.error_replies += not msg.ok
            result.refused_replies += msg.error == REFUSED


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--unauthenticated", type=int, default=1000,
                    help="messages without a valid token, after the main run (all must be refused)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-seconds", type=float, default=120.0)
    args = ap.parse_args(argv)
    from pipeline.runtime import rundir
    from pipeline.runtime.control import ControlClient, ControlError

    try:
        _, endpoints = rundir.current_run()
    except rundir.NotRunning as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    endpoint, token = endpoints["router"], endpoints["token"]
    with ControlClient(endpoint, token) as client:
        before = client.request("status")
    names = [w["name"] for w in before["workers"]]
    result = fuzz(endpoint, args.count, args.seed, names, args.max_seconds, token=token)
    intruder = fuzz(endpoint, args.unauthenticated, args.seed + 1, names, args.max_seconds, token=None)
    print(json.dumps({"authenticated": result.__dict__, "unauthenticated": intruder.__dict__}))
    try:
        with ControlClient(endpoint, token) as client:
            after = client.request("status")
    except ControlError as exc:
        print(f"FAIL: the supervisor no longer answers status: {exc}", file=sys.stderr)
        return 1
    if intruder.replies != intruder.refused_replies or not intruder.refused_replies:
        print(f"FAIL: {intruder.replies - intruder.refused_replies} commands without a valid token were "
              f"answered with something other than the refusal", file=sys.stderr)
        return 1
    changed = {w["name"]: (w["pid"], w["state"]) for w in after["workers"]} != \
        {w["name"]: (w["pid"], w["state"]) for w in before["workers"]}
    if changed:
        print("FAIL: worker pids/states changed during the fuzz run", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
