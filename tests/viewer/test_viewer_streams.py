"""The viewer keeps the people of several streams apart (issue 20): node names carry the stream,
and a frame of one stream never removes another stream's people."""
from __future__ import annotations

import dataclasses

from viewer_helpers import make_frame, make_person, wait_for


def test_streams_get_their_own_nodes_and_keep_them(viewer_factory):
    sink = viewer_factory()
    sink.open()
    a = dataclasses.replace(make_frame(0, [make_person(1)]), stream="cam0")
    b = dataclasses.replace(make_frame(0, [make_person(1), make_person(2, transl=(1, 0, 4))]), stream="cam1")
    sink.send(a)
    sink.send(b)
    assert wait_for(lambda: sink.person_node_names() == {"/persons/A/cam0-1", "/persons/A/cam1-1",
                                                         "/persons/A/cam1-2"})
    sink.send(dataclasses.replace(make_frame(1, []), stream="cam0"))  # cam0 is empty now; cam1 stays
    assert wait_for(lambda: sink.person_node_names() == {"/persons/A/cam1-1", "/persons/A/cam1-2"})
    sink.send(make_frame(2, [make_person(5)]))  # the one stream of a single-source pipeline: plain ids
    assert wait_for(lambda: "/persons/A/5" in sink.person_node_names())
    assert sink.stats()["draw_errors"] == 0
