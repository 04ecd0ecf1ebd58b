"""Interface every output sink implements (architecture.md §7). The publisher worker owns the sinks.

A sink must never block or crash the pipeline: `send` is called once per published frame
from the publisher loop, so a slow network peer is handled by dropping (and counting), and
a broken peer by reconnecting with backoff.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

from pipeline.pose.frame import PosesFrame


class SinkError(RuntimeError):
    """A sink cannot start (port in use, path not writable, ...); the message says how to fix it."""


class Sink(ABC):
    name: str = "sink"

    def open(self) -> None:
        """Acquire sockets/files. Raise SinkError with a clear message on a bad setting."""

    @abstractmethod
    def send(self, frame: PosesFrame, image=None) -> None:
        """Publish one frame. `image` is the frame's RGB pixels when the sink asked for them
        (`wants_image = True`), else None. Must return quickly."""

    def close(self) -> None:
        """Flush and release everything. Idempotent."""

    def stats(self) -> dict:
        """Counters for status/metrics: sent, dropped, errors, reconnects, ..."""
        return {}

    def set(self, key: str, value) -> None:
        """Live setting change (`pipeline set publisher key=value`)."""
        raise SinkError(f"sink {self.name!r} has no live setting {key!r}")

    wants_image: bool = False
