"""Test-side decoding of the seed relay's wire payload, and a test relay written from the wire
format alone (tests only: posepipe itself never unpickles socket data)."""
from __future__ import annotations

import io
import pickle
import socket
import struct
import threading
import time
import warnings
import zlib

import numpy as np

# What the seed relay receives per packet: these keys in this order, float32 of these shapes.
RELAY_SHAPES = {"poses_body": (1, 69), "poses_root": (1, 3), "betas": (1, 10), "trans": (1, 3)}


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Decodes the relay payload and nothing else: every global but what a float32 ndarray
    needs is refused."""
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused global {module}.{name}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return super().find_class(module, name)


def read_exact(conn, n: int) -> bytes:
    """Exactly n bytes from a socket (the relay header is 12 bytes, then `length` payload bytes)."""
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


# ---------------------------------------------------------------------------------------------
# The seed's wire bytes, written by hand from the documented format (docs/architecture.md §9):
# b"SMPL" + struct.pack(">I I", len(payload), crc32(payload)) + payload, where payload is what
# the seed's `pickle.dumps(d)` gave on CPython with NumPy 1.x: pickle protocol 4 (one FRAME) of
# the dict {poses_body, poses_root, betas, trans} of float32 C-contiguous arrays. Each array
# pickles as numpy.core.multiarray._reconstruct(numpy.ndarray, (0,), b"b") + BUILD with the
# state (1, shape, dtype("float32"), False, raw little-endian bytes); the dtype as
# numpy.dtype("f4", False, True) + BUILD (3, "<", None, None, None, -1, -1, 0). The pickler
# memoizes every object it writes and writes a BINGET for one it has seen: the _reconstruct
# function, the ndarray class, the one-byte b"b" (a CPython singleton), the float32 dtype (a
# NumPy singleton) and the interned "numpy" string recur; each array's (0,) and shape tuples
# are new objects. Written opcode by opcode here, with no pickler involved.

SEED_KEYS = ("poses_body", "poses_root", "betas", "trans")


class _Opcodes:
    def __init__(self):
        self.out = bytearray()
        self.memo = {}

    def op(self, code: bytes, arg: bytes = b"") -> None:
        self.out += code + arg

    def memoize(self, key) -> None:
        self.memo[key] = len(self.memo)
        self.out += b"\x94"                                  # MEMOIZE

    def seen(self, key) -> bool:
        if key not in self.memo:
            return False
        self.out += b"h" + bytes([self.memo[key]])           # BINGET (memo index < 256)
        return True

    def text(self, s: str, key=None) -> None:
        raw = s.encode()
        if key is not None and self.seen(key):
            return
        self.op(b"\x8c", bytes([len(raw)]) + raw)            # SHORT_BINUNICODE
        self.memoize(key if key is not None else object())

    def global_(self, module: str, name: str, key) -> None:
        if self.seen(key):
            return
        self.text(module, key=("str", module) if module == "numpy" else None)
        self.text(name)
        self.op(b"\x93")                                     # STACK_GLOBAL
        self.memoize(key)

    def small_int(self, n: int) -> None:
        if 0 <= n < 256:
            self.op(b"K", bytes([n]))                        # BININT1
        else:
            self.op(b"J", struct.pack("<i", n))              # BININT

    def raw_bytes(self, data: bytes, key=None) -> None:
        if key is not None and self.seen(key):
            return
        if len(data) < 256:
            self.op(b"C", bytes([len(data)]) + data)         # SHORT_BINBYTES
        else:
            self.op(b"B", struct.pack("<I", len(data)) + data)  # BINBYTES
        self.memoize(key if key is not None else object())

    def float32_dtype(self) -> None:
        if self.seen("dtype f4"):
            return
        self.global_("numpy", "dtype", key="numpy.dtype")
        self.text("f4")
        self.op(b"\x89\x88\x87")                             # NEWFALSE NEWTRUE TUPLE3
        self.memoize(object())
        self.op(b"R")                                        # REDUCE
        self.memoize("dtype f4")
        self.op(b"(")                                        # MARK
        self.small_int(3)
        self.text("<")
        self.op(b"NNN")                                      # NONE x3
        self.small_int(-1)
        self.small_int(-1)
        self.small_int(0)
        self.op(b"t")                                        # TUPLE
        self.memoize(object())
        self.op(b"b")                                        # BUILD

    def float32_array(self, arr) -> None:
        self.global_("numpy.core.multiarray", "_reconstruct", key="_reconstruct")
        self.global_("numpy", "ndarray", key="numpy.ndarray")
        self.small_int(0)
        self.op(b"\x85")                                     # TUPLE1
        self.memoize(object())
        self.raw_bytes(b"b", key="b'b'")
        self.op(b"\x87")                                     # TUPLE3
        self.memoize(object())
        self.op(b"R")                                        # REDUCE
        self.memoize(object())
        self.op(b"(")                                        # MARK: the 5-tuple state
        self.small_int(1)
        for dim in arr.shape:
            self.small_int(dim)
        self.op(b"\x86")                                     # TUPLE2 (the shapes here are 2-D)
        self.memoize(object())
        self.float32_dtype()
        self.op(b"\x89")                                     # NEWFALSE: C order
        self.raw_bytes(arr.astype("<f4").tobytes())
        self.op(b"t")                                        # TUPLE
        self.memoize(object())
        self.op(b"b")                                        # BUILD


def seed_payload(arrays: dict) -> bytes:
    """The seed's pickle bytes for these four (1, n) float32 arrays, by hand."""
    w = _Opcodes()
    w.op(b"}")                                               # EMPTY_DICT
    w.memoize("dict")
    w.op(b"(")                                               # MARK
    for key in SEED_KEYS:
        assert arrays[key].ndim == 2
        w.text(key)
        w.float32_array(arrays[key])
    w.op(b"u")                                               # SETITEMS
    w.op(b".")                                               # STOP
    body = bytes(w.out)
    return b"\x80\x04" + b"\x95" + struct.pack("<Q", len(body)) + body   # PROTO 4, one FRAME


def seed_message(arrays: dict) -> bytes:
    payload = seed_payload(arrays)
    return b"SMPL" + struct.pack(">I I", len(payload), zlib.crc32(payload) & 0xFFFFFFFF) + payload


class FakeRelay:
    """Listens on an ephemeral port; decodes packets; optionally talks garbage back."""

    def __init__(self, port=0, garbage=False):
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", port))
        self.srv.listen(1)
        self.srv.settimeout(0.2)
        self.port = self.srv.getsockname()[1]
        self.packets, self.errors, self.garbage = [], [], garbage
        self.messages = []   # every message's raw bytes, header included
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.srv.accept()
            except socket.timeout:
                continue
            conn.settimeout(0.2)
            with conn:
                while not self.stop.is_set():
                    try:
                        if self.garbage:
                            conn.sendall(b"\x80\x04garbage-not-for-unpickling" * 50)
                        header = read_exact(conn, 12)
                    except socket.timeout:
                        continue
                    except (EOFError, OSError):
                        break
                    try:
                        conn.settimeout(2.0)
                        assert header[:4] == b"SMPL", header[:4]
                        length, crc = struct.unpack(">II", header[4:])
                        payload = read_exact(conn, length)
                        conn.settimeout(0.2)
                        assert zlib.crc32(payload) & 0xFFFFFFFF == crc
                        self.packets.append((payload, NumpyOnlyUnpickler(io.BytesIO(payload)).load()))
                        self.messages.append(header + payload)
                    except Exception as e:  # recorded and asserted on by the test
                        self.errors.append(e)
                        break

    def wait_packets(self, n, timeout=5.0):
        end = time.monotonic() + timeout
        while len(self.packets) < n and time.monotonic() < end:
            time.sleep(0.01)
        return len(self.packets) >= n

    def close(self):
        self.stop.set()
        self.thread.join(2)
        self.srv.close()

    def assert_packets(self, n, timeout):
        """At least `n` packets within `timeout` s, none malformed, each exactly the seed's arrays."""
        assert self.wait_packets(n, timeout), (len(self.packets), self.errors)
        assert not self.errors, self.errors
        for _, arrays in self.packets:
            assert list(arrays) == list(RELAY_SHAPES)
            assert all(arrays[k].dtype == np.float32 and arrays[k].shape == s for k, s in RELAY_SHAPES.items())
