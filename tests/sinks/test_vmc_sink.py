"""VMC sink against a python-osc server on an ephemeral loopback port."""
import threading
import time

import numpy as np
import pytest

from pipeline.pose.rotations import quat_to_rotmat
from pipeline.sinks.base import SinkError
from pipeline.sinks.vmc import BONE_NAMES, VmcSink, vmc_bones


@pytest.fixture
def osc_server():
    from pythonosc.dispatcher import Dispatcher
    from pythonosc.osc_server import ThreadingOSCUDPServer

    got = []
    disp = Dispatcher()
    disp.set_default_handler(lambda address, *args: got.append((address, args)))
    server = ThreadingOSCUDPServer(("127.0.0.1", 0), disp)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server.server_address[1], got
    server.shutdown()
    server.server_close()
    thread.join(2)


def _wait(got, pred, timeout=3.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred(list(got)):
            return True
        time.sleep(0.01)
    return False


def test_bone_messages_with_unit_quaternions(osc_server, make_frame, make_person):
    port, got = osc_server
    sink = VmcSink(port=port)
    sink.open()
    try:
        sink.send(make_frame(0, [make_person(0)]))
        assert _wait(got, lambda g: any(a == "/VMC/Ext/OK" for a, _ in g))
    finally:
        sink.close()
    bones = {args[0]: args[1:] for a, args in got if a == "/VMC/Ext/Bone/Pos"}
    assert set(bones) == set(BONE_NAMES.values())
    for name, vals in bones.items():
        assert len(vals) == 7
        assert abs(np.linalg.norm(vals[3:]) - 1) < 1e-5, name
    addresses = [a for a, _ in got]
    assert "/VMC/Ext/Root/Pos" in addresses and "/VMC/Ext/T" in addresses
    root = next(args for a, args in got if a == "/VMC/Ext/Root/Pos")
    assert root[0] == "root" and len(root) == 8


def test_right_elbow_bent_90_degrees(osc_server, make_frame, make_person):
    port, got = osc_server
    bp = np.zeros(69)
    bp[(19 - 1) * 3 + 1] = np.pi / 2  # SMPL joint 19 = right_elbow, +90 deg about SMPL y
    sink = VmcSink(port=port)
    sink.open()
    try:
        sink.send(make_frame(0, [make_person(0, global_orient=[np.pi, 0, 0], body_pose=bp)]))
        assert _wait(got, lambda g: any(a == "/VMC/Ext/OK" for a, _ in g))
    finally:
        sink.close()
    bones = {args[0]: np.array(args[1:]) for a, args in got if a == "/VMC/Ext/Bone/Pos"}
    q = bones["RightLowerArm"][3:]
    assert np.allclose(q, [0, -np.sqrt(0.5), 0, np.sqrt(0.5)], atol=1e-6)
    # geometric check in Unity axes: the forearm's rest direction (+x, the avatar's right)
    # now points forward (+z), as the SMPL forearm (-x -> +z) does
    assert np.allclose(quat_to_rotmat(q) @ [1, 0, 0], [0, 0, 1], atol=1e-6)
    # a person facing the camera: identity hips (avatar faces +z)
    assert np.allclose(np.abs(bones["Hips"][3:]), [0, 0, 0, 1], atol=1e-6)
    # rest offsets mirrored: the left upper arm sits on Unity's -x side
    assert bones["LeftUpperArm"][0] < 0 < bones["RightUpperArm"][0]


def test_empty_frame_hold_and_tpose(make_frame):
    root, bones = vmc_bones(None)
    assert np.allclose(root, 0) and all(np.allclose(q, [0, 0, 0, 1]) for _, q in bones.values())
    sink = VmcSink(port=9, on_empty="hold")
    sink.open()
    try:
        from pythonosc.osc_bundle import OscBundle
        b = OscBundle(sink.build_bundle(make_frame(0, [])))
        assert [m.address for m in b] == ["/VMC/Ext/T", "/VMC/Ext/OK"]
    finally:
        sink.close()


def test_no_receiver_never_raises(make_frame, make_person):
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nobody listens there now
    sink = VmcSink(port=port)
    sink.open()
    try:
        t0 = time.perf_counter()
        for i in range(100):
            sink.send(make_frame(i, [make_person(0)]))
        per_ms = (time.perf_counter() - t0) * 10
        assert per_ms < 20
        assert sink.stats()["sent"] + sink.stats()["errors"] == 100
    finally:
        sink.close()


def test_bad_settings():
    with pytest.raises(SinkError, match="port"):
        VmcSink(port=0).open()
    with pytest.raises(SinkError, match="resolve"):
        VmcSink(host="no-such-host.invalid").open()
    with pytest.raises(SinkError, match="on_empty"):
        VmcSink(on_empty="vanish").open()
    with pytest.raises(SinkError, match="smoothing"):
        VmcSink(smoothing="silky").open()
