"""Test-side decoding of the seed relay's wire payload (tests only: posepipe itself never
unpickles socket data)."""
from __future__ import annotations

import pickle
import warnings


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
