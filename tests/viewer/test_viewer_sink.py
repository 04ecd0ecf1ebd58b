"""ViewerSink without a browser: nodes per track, panel values, errors, hot-path cost."""
import socket
import time

import numpy as np
import pytest

from pipeline.sinks import viewer_scene as vs
from pipeline.sinks.base import SinkError
from pipeline.sinks.viewer import CONDITIONS, SmplMeshData, ViewerSink
from viewer_helpers import make_frame, make_person, wait_for


def test_port_in_use_names_port_and_option():
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    port = blocker.getsockname()[1]
    try:
        sink = ViewerSink(port=port)
        with pytest.raises(SinkError) as err:
            sink.open()
        assert str(port) in str(err.value) and "sinks.viewer.port" in str(err.value)
        assert sink.server is None
        sink.close()  # idempotent on a sink that never opened
    finally:
        blocker.close()


@pytest.mark.parametrize("kwargs", [{"port": 70000}, {"max_hz": 0}, {"image_width": 3},
                                    {"uncertainty_range": (1.0, 0.0)}])
def test_bad_settings_are_rejected(kwargs):
    with pytest.raises(SinkError, match="sinks.viewer"):
        ViewerSink(**kwargs)


def test_tracks_get_nodes_and_lose_them(viewer_factory):
    sink = viewer_factory()
    sink.open()
    sink.send(make_frame(0, [make_person(1), make_person(2, transl=(1, 0, 4))]))
    assert wait_for(lambda: sink.person_node_names() == {"/persons/A/1", "/persons/A/2"})
    sink.send(make_frame(1, [make_person(2)]))
    assert wait_for(lambda: sink.person_node_names() == {"/persons/A/2"})
    sink.send_variant(make_frame(1, [make_person(7)]), variant="B")
    assert wait_for(lambda: sink.person_node_names("B") == {"/persons/B/7"})
    sink.send(make_frame(2, []))
    assert wait_for(lambda: sink.person_node_names() == set())
    assert sink.stats()["draw_errors"] == 0


def test_panel_shows_fps_latency_model_and_untrained(viewer_factory):
    sink = viewer_factory()
    sink.open()
    for i in range(20):
        sink.send(make_frame(i, [make_person(1)], latency_ms=25.0), np.zeros((480, 640, 3), np.uint8))
        time.sleep(0.02)
    gui = sink._gui
    assert wait_for(lambda: gui["fps"].value > 10 and gui["persons"].value == 1)
    assert gui["p50"].value == pytest.approx(25.0, abs=2.0)
    assert gui["model"].value == "poco-cliff / torch / fp32 / gen 0"
    assert gui["untrained"].visible
    assert wait_for(lambda: sink.stats()["images"] >= 1)


def test_bad_image_is_ignored_not_fatal(viewer_factory):
    sink = viewer_factory()
    sink.open()
    sink.send(make_frame(0, [make_person(1)]), np.zeros((10, 10), np.float32))
    assert wait_for(lambda: sink.stats()["drawn"] == 1)
    assert sink.stats()["draw_errors"] == 0 and sink.stats()["images"] == 0


def test_record_button_calls_back_and_shows_reply(viewer_factory):
    calls = []

    def on_record(condition, seconds):
        # called at the click (no 5 s wait): the panel says the last 5 s are being averaged
        assert sink._gui["record_status"].value == "averaging the last 5 s as Low Light..."
        calls.append((condition, seconds))
        if len(calls) > 1:
            raise RuntimeError("metrics worker not running")
        return "recording to metrics_Low_Light.csv"

    sink = viewer_factory(on_record=on_record)
    sink.open()
    sink._gui["condition"].value = "Low Light"
    assert sink.request_record() == "recording to metrics_Low_Light.csv"
    assert calls == [("Low Light", 5.0)]
    assert sink._gui["record_status"].value == "recording to metrics_Low_Light.csv"
    assert sink.request_record() == "error: metrics worker not running"
    assert sink._gui["record_status"].value.startswith("error:")


def test_record_without_callback_says_why(viewer_factory):
    sink = viewer_factory()
    sink.open()
    assert sink._gui["record"].disabled
    assert "not connected" in sink.request_record()
    assert list(sink._gui["condition"].options) == list(CONDITIONS)


def test_send_is_fast_even_when_drawing_is_slow(viewer_factory):
    sink = viewer_factory()
    sink.open()
    real_draw = sink._draw

    def slow_draw(pending, image):
        time.sleep(0.2)  # a stalled client / huge scene
        real_draw(pending, image)

    sink._draw = slow_draw
    image = np.zeros((1080, 1920, 3), np.uint8)
    frames = [make_frame(i, [make_person(1), make_person(2)]) for i in range(300)]
    durations = []
    for frame in frames:
        t0 = time.perf_counter()
        sink.send(frame, image)
        durations.append(time.perf_counter() - t0)
        time.sleep(0.002)
    durations_ms = np.array(durations) * 1e3
    assert np.percentile(durations_ms, 50) < 0.2
    assert np.percentile(durations_ms, 99) < 1.0, f"p99 {np.percentile(durations_ms, 99):.3f} ms"
    stats = sink.stats()
    assert stats["received"] == 300 and stats["dropped"] > 250  # frames it could not draw were dropped


def _box_smpl():
    verts, faces, weights, joints = vs.box_figure_mesh()
    return SmplMeshData(vertices=verts, faces=faces, skin_weights=weights, rest_joints=joints)


def test_skinned_mesh_sent_once_then_bones(viewer_factory):
    sink = viewer_factory(smpl=_box_smpl())
    sink.open()
    body_pose = np.zeros(69)
    sink.send(make_frame(0, [make_person(4, body_pose=body_pose)]))
    assert wait_for(lambda: sink.stats()["drawn"] == 1)
    mesh = sink._nodes["A"]["4"].mesh
    assert mesh is not None and len(mesh.bones) == 24
    body_pose[17 * 3 + 2] = np.pi / 2  # left elbow (joint 18) +90 deg about z
    sink.send(make_frame(1, [make_person(4, body_pose=body_pose, transl=(0.2, 0.0, 2.5))]))
    assert wait_for(lambda: sink.stats()["drawn"] == 2)
    assert sink._nodes["A"]["4"].mesh is mesh  # same node: mesh not re-sent
    world, pos = vs.forward_kinematics(vs.local_rotations([np.pi, 0, 0], body_pose),
                                       vs.offsets_from_rest_joints(vs.box_figure_mesh()[3]))
    # q and -q are the same rotation; near w = 0 float32 input may pick either sign.
    assert abs(np.dot(mesh.bones[18].wxyz, vs.matrix_to_wxyz(world[18]))) == pytest.approx(1.0, abs=1e-6)
    assert np.allclose(mesh.bones[20].position, pos[20], atol=1e-6)
    assert np.allclose(mesh.position, [0.2, 0.0, -2.5], atol=1e-6)


def test_malformed_smpl_data_is_rejected():
    verts, faces, weights, joints = vs.box_figure_mesh()
    with pytest.raises(SinkError, match="skin_weights"):
        SmplMeshData(vertices=verts, faces=faces, skin_weights=weights[:, :10], rest_joints=joints)
    with pytest.raises(SinkError, match="faces"):
        SmplMeshData(vertices=verts, faces=faces + 10_000, skin_weights=weights, rest_joints=joints)


def test_mesh_of_a_track_that_left_is_hidden_and_reused(viewer_factory):
    sink = viewer_factory(smpl=_box_smpl())
    sink.open()
    sink.send(make_frame(0, [make_person(1), make_person(2)]))
    assert wait_for(lambda: sink.stats()["drawn"] == 1)
    mesh_2 = sink._nodes["A"]["2"].mesh
    sink.send(make_frame(1, [make_person(1)]))
    assert wait_for(lambda: sink.person_node_names() == {"/persons/A/1"})
    assert not mesh_2.visible and not mesh_2._impl.removed
    sink.send(make_frame(2, [make_person(1), make_person(9)]))
    assert wait_for(lambda: sink.person_node_names() == {"/persons/A/1", "/persons/A/9"})
    assert sink._nodes["A"]["9"].mesh is mesh_2 and mesh_2.visible
