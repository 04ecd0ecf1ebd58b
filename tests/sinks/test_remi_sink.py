"""Seed relay sink against a test relay written from the wire format alone."""
import io
import time

import numpy as np
import pytest

from pipeline.pose.rotations import axis_angle_to_rotmat
from pipeline.sinks.base import SinkError
from pipeline.sinks.remi import RemiSink, encode_payload, relay_arrays
from pipeline_helpers import free_port
from relay_wire import RELAY_SHAPES as SHAPES, SEED_KEYS, FakeRelay, NumpyOnlyUnpickler, seed_message


def _fast_sink(port, **kw):
    return RemiSink(host="127.0.0.1", port=port, backoff_initial=0.05, backoff_max=0.2, **kw)


def _wait_connected(sink, timeout=5.0):
    """Poses queued before the connection are stale and dropped by design: send once connected."""
    deadline = time.monotonic() + timeout
    while not sink.stats()["connected"] and time.monotonic() < deadline:
        time.sleep(0.01)


def _send_until_received(sink, relay, frame, timeout=5.0):
    """Keep sending `frame` until the relay got a packet (the sink reconnects on its own backoff)."""
    deadline = time.monotonic() + timeout
    while not relay.packets and time.monotonic() < deadline:
        sink.send(frame)
        time.sleep(0.02)


def test_packets_well_formed(make_frame, make_person):
    relay = FakeRelay()
    sink = _fast_sink(relay.port)
    sink.open()
    try:
        person = make_person(3, global_orient=[np.pi, 0, 0], pred_cam=[0.9, 0.1, -0.2])
        _wait_connected(sink)
        for i in range(5):
            sink.send(make_frame(i, [person]))
            time.sleep(0.02)
        sink.send(make_frame(6, []))
        assert relay.wait_packets(6), (relay.packets, relay.errors, sink.stats())
        assert not relay.errors
        for payload, d in relay.packets:
            assert list(d) == ["poses_body", "poses_root", "betas", "trans"]
            for k, shape in SHAPES.items():
                assert d[k].dtype == np.float32 and d[k].shape == shape
            assert payload[:2] == b"\x80\x04"  # protocol 4, the seed's default
            assert b"numpy.core.multiarray" in payload  # NumPy-1.x-loadable name
        d = relay.packets[0][1]
        # root: diag(1,-1,-1) @ R(pi about X) = identity
        assert np.allclose(d["poses_root"], 0, atol=1e-5)
        assert np.allclose(d["trans"], [[0.1, -0.2 + 0.8, 0.0]], atol=1e-6)
        assert np.allclose(d["poses_body"], person.body_pose[None])
        last = relay.packets[-1][1]  # nobody detected: T-pose at the origin
        assert all(np.all(last[k] == 0) for k in SHAPES)
        assert sink.stats()["sent"] == 6
    finally:
        sink.close()
        relay.close()


def test_messages_are_byte_identical_to_the_seed_format_written_by_hand(make_frame, make_person):
    """What the sink puts on the wire equals, byte for byte, the seed's message assembled in
    tests/relay_wire.py from the documented format without any pickler: magic, big-endian
    length and CRC32, protocol-4 pickle with NumPy 1.x's _reconstruct name."""
    relay = FakeRelay()
    sink = _fast_sink(relay.port)
    sink.open()
    try:
        person = make_person(3, global_orient=[0.3, -1.2, 2.0], pred_cam=[0.9, 0.1, -0.2],
                             body_pose=np.linspace(-1, 1, 69), betas=np.arange(10) * 0.1)
        _wait_connected(sink)
        sink.send(make_frame(0, []))
        sink.send(make_frame(1, [person]))
        assert relay.wait_packets(2), (relay.errors, sink.stats())
        zeros = {k: np.zeros(SHAPES[k], np.float32) for k in SEED_KEYS}
        assert relay.messages[0] == seed_message(zeros)           # nobody: T-pose at the origin
        sent = relay.packets[1][1]
        # the content by the seed's rules, then the bytes of exactly those values
        expect_root = np.diag([1, -1, -1]) @ axis_angle_to_rotmat(np.array([0.3, -1.2, 2.0]))
        assert np.allclose(axis_angle_to_rotmat(sent["poses_root"][0].astype(np.float64)), expect_root, atol=1e-5)
        assert np.array_equal(sent["poses_body"][0], np.linspace(-1, 1, 69).astype(np.float32))
        assert np.array_equal(sent["betas"][0], (np.arange(10) * 0.1).astype(np.float32))
        assert np.allclose(sent["trans"], [[0.1, -0.2 + 0.8, 0.0]], atol=1e-6)
        assert relay.messages[1] == seed_message(sent)
    finally:
        sink.close()
        relay.close()


def test_full_translation_and_track_choice(make_frame, make_person):
    small = make_person(1, box=(0, 0, 10, 10), transl=[0.5, 0.2, 4.0])
    big = make_person(2, box=(0, 0, 300, 300), transl=[0.1, 0.2, 5.0])
    fr = make_frame(0, [small, big])
    assert np.allclose(relay_arrays(fr, "crop", "largest")["betas"], big.betas[None])
    assert np.allclose(relay_arrays(fr, "crop", "first")["betas"], small.betas[None])
    assert np.allclose(relay_arrays(fr, "crop", track_id=1)["betas"], small.betas[None])
    assert np.all(relay_arrays(fr, "crop", track_id=9)["trans"] == 0)
    full = relay_arrays(fr, "full", "largest")["trans"][0]
    # the same rigid flip applied to the body: pelvis at F @ (transl + J0)
    from pipeline.pose.skeleton import DEFAULT_REST_JOINTS
    pelvis_cam = big.transl + DEFAULT_REST_JOINTS[0]
    assert np.allclose(full + DEFAULT_REST_JOINTS[0], np.diag([1, -1, -1]) @ pelvis_cam, atol=1e-5)


def test_root_flip_matches_matrix_product(make_frame, make_person):
    go = np.array([0.3, -1.2, 2.0])
    d = relay_arrays(make_frame(0, [make_person(0, global_orient=go)]))
    expect = np.diag([1, -1, -1]) @ axis_angle_to_rotmat(go)
    assert np.allclose(axis_angle_to_rotmat(d["poses_root"][0]), expect, atol=1e-5)


def test_legacy_and_native_payloads_decode_to_the_same_arrays(make_frame, make_person):
    arrays = relay_arrays(make_frame(0, [make_person(0)]))
    for mode in ("legacy", "native"):
        d = NumpyOnlyUnpickler(io.BytesIO(encode_payload(arrays, mode))).load()
        for k in SHAPES:
            assert np.array_equal(d[k], arrays[k])


def test_no_relay_send_is_fast_then_resumes_when_relay_appears(make_frame, make_person):
    port = free_port()
    sink = _fast_sink(port, queue_size=4)
    sink.open()
    try:
        fr = make_frame(0, [make_person(0)])
        t0 = time.perf_counter()
        for i in range(300):
            sink.send(fr)
        per_send_ms = (time.perf_counter() - t0) / 300 * 1e3
        assert per_send_ms < 5, per_send_ms
        st = sink.stats()
        assert st["sent"] == 0 and st["dropped"] >= 296 and st["queued"] <= 4
        relay = FakeRelay(port=port)
        try:
            _send_until_received(sink, relay, fr)
            assert relay.packets and not relay.errors
        finally:
            relay.close()
        # relay gone again: sink keeps accepting frames and reconnects later
        for i in range(20):
            sink.send(fr)
        relay2 = FakeRelay(port=port)
        try:
            _send_until_received(sink, relay2, fr)
            assert relay2.packets
            assert sink.stats()["reconnects"] >= 1
        finally:
            relay2.close()
    finally:
        t0 = time.perf_counter()
        sink.close()
        assert time.perf_counter() - t0 < 3


def test_relay_sending_garbage_back_is_ignored(make_frame, make_person):
    relay = FakeRelay(garbage=True)
    sink = _fast_sink(relay.port)
    sink.open()
    try:
        for i in range(10):
            sink.send(make_frame(i, [make_person(0)]))
            time.sleep(0.02)
        assert relay.wait_packets(5)
        assert not relay.errors
        assert sink.stats()["ignored_bytes"] > 0
    finally:
        sink.close()
        relay.close()


def test_bad_settings_are_clear_errors():
    with pytest.raises(SinkError, match="port"):
        RemiSink(port=70000).open()
    with pytest.raises(SinkError, match="translation"):
        RemiSink(translation="weird").open()
    with pytest.raises(SinkError, match="track_id"):
        RemiSink(track_id=-3).open()
    with pytest.raises(SinkError, match="resolve"):
        RemiSink(host="no-such-host.invalid").open()
    sink = RemiSink()
    with pytest.raises(SinkError, match="live settings"):
        sink.set("colour", "red")


def test_fast_legacy_path_matches_general_pickler(make_frame, make_person):
    from pipeline.sinks.remi import PICKLE_PROTOCOL, _LegacyNumpyPickler
    for fr in (make_frame(0, [make_person(0)]), make_frame(1, [])):
        arrays = relay_arrays(fr)
        buf = io.BytesIO()
        _LegacyNumpyPickler(buf, protocol=PICKLE_PROTOCOL).dump(arrays)
        assert encode_payload(arrays, "legacy") == buf.getvalue()


def test_live_smoothing_switch_and_flat_stats(make_frame, make_person):
    sink = _fast_sink(free_port(), smoothing="moderate")
    sink.open()
    try:
        for i in range(5):
            sink.send(make_frame(i, [make_person(0)]))
        sink.set("smoothing", "smooth")
        sink.send(make_frame(6, [make_person(0)]))
        st = sink.stats()
        assert st["smoothing_preset"] == "smooth" and st["smoothing_frames"] == 6
        assert all(isinstance(v, (int, float, str, bool)) for v in st.values())
        with pytest.raises(SinkError, match="choose one of"):
            sink.set("smoothing", "jelly")
    finally:
        sink.close()
