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
