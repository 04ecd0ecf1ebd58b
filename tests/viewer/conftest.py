"""Fixtures for the viewer tests."""
from __future__ import annotations

import pytest


@pytest.fixture
def viewer_factory():
    from pipeline.sinks.viewer import ViewerSink

    made = []

    def make(**kwargs):
        kwargs.setdefault("port", 0)
        sink = ViewerSink(**kwargs)
        made.append(sink)
        return sink

    yield make
    for sink in made:
        sink.close()
