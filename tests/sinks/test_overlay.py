"""Overlay drawing, headless: skeleton and mesh land inside the person's box; video frame count."""
import numpy as np
import pytest

from pipeline.sinks.overlay import OverlayRenderer, OverlayVideoSink, OverlayVideoWriter
from pipeline.sinks.base import SinkError
from pipeline.pose.skeleton import forward_kinematics, project

W, H = 640, 480


def _person_and_box(make_person):
    p = make_person(4, global_orient=[np.pi, 0, 0], body_pose=np.zeros(69), transl=[0.1, 0.3, 4.0])
    pos, _ = forward_kinematics(p.global_orient, p.body_pose, p.transl)
    uv = project(pos, W, H)
    box = np.concatenate([uv.min(0) - 15, uv.max(0) + 15]).astype(np.float32)
    p.box = box
    return p, box


def _ink(before, after):
    return np.any(before != after, axis=2)


def test_skeleton_pixels_inside_box(make_frame, make_person):
    p, box = _person_and_box(make_person)
    blank = np.zeros((H, W, 3), np.uint8)
    r = OverlayRenderer(draw_boxes=False, draw_text=False)
    out = r.draw(blank, make_frame(0, [p], width=W, height=H))
    ys, xs = np.nonzero(_ink(blank, out))
    assert len(xs) > 200
    assert xs.min() >= box[0] and xs.max() <= box[2] and ys.min() >= box[1] and ys.max() <= box[3]
    assert np.all(blank == 0)  # the input is not modified
    # head above pelvis on screen: the camera-frame root makes the person upright
    pos, _ = forward_kinematics(p.global_orient, p.body_pose, p.transl)
    uv = project(pos, W, H)
    assert uv[15, 1] < uv[0, 1]


def test_joint_colour_follows_uncertainty(make_frame, make_person):
    p, _ = _person_and_box(make_person)
    p.joint_uncertainty = np.zeros(24, np.float32)
    p.joint_uncertainty[15] = 1.0  # head uncertain
    r = OverlayRenderer(draw_boxes=False, draw_text=False, rgb=True)
    out = r.draw(np.zeros((H, W, 3), np.uint8), make_frame(0, [p]))
    pos, _ = forward_kinematics(p.global_orient, p.body_pose, p.transl)
    u, v = np.round(project(pos, W, H)).astype(int)[15]
    assert out[v, u, 0] > 200 and out[v, u, 1] < 60  # red in RGB
    u, v = np.round(project(pos, W, H)).astype(int)[7]
    assert out[v, u, 1] > 200 and out[v, u, 0] < 60  # green


def _sphere(centre, radius, n=24):
    """Closed UV sphere with outward counter-clockwise faces."""
    th = np.linspace(0, np.pi, n)
    ph = np.linspace(0, 2 * np.pi, 2 * n, endpoint=False)
    verts = [[0, 0, 1]]
    for t in th[1:-1]:
        for f in ph:
            verts.append([np.sin(t) * np.cos(f), np.sin(t) * np.sin(f), np.cos(t)])
    verts.append([0, 0, -1])
    verts = np.array(verts) * radius + centre
    m = 2 * n
    faces = []
    for k in range(m):
        faces.append([0, 1 + k, 1 + (k + 1) % m])
    for r in range(n - 3):
        a, b = 1 + r * m, 1 + (r + 1) * m
        for k in range(m):
            k2 = (k + 1) % m
            faces += [[a + k, b + k, b + k2], [a + k, b + k2, a + k2]]
    last = len(verts) - 1
    base = 1 + (n - 3) * m
    for k in range(m):
        faces.append([base + k, last, base + (k + 1) % m])
    return verts, np.array(faces)


def test_mesh_pixels_inside_projected_box(make_frame, make_person):
    verts, faces = _sphere(np.array([0.2, -0.1, 3.0]), 0.4)
    uv = project(verts, W, H)
    box = np.concatenate([uv.min(0) - 2, uv.max(0) + 2])
    p = make_person(1, box=box)
    blank = np.full((H, W, 3), 40, np.uint8)
    r = OverlayRenderer(draw_boxes=False, draw_text=False)
    out = r.draw(blank, make_frame(0, [p]), vertices=[verts], faces=faces)
    ys, xs = np.nonzero(_ink(blank, out))
    assert len(xs) > 0.6 * np.pi * ((box[2] - box[0]) / 2) ** 2  # the disc is filled
    assert xs.min() >= box[0] and xs.max() <= box[2] and ys.min() >= box[1] and ys.max() <= box[3]
    # shaded: the centre (facing the camera) is brighter than the rim
    c = np.round(project([[0.2, -0.1, 2.6]], W, H)[0]).astype(int)
    assert out[c[1], c[0]].sum() > blank[0, 0].sum()
    print(f"mesh draw ({len(faces)} faces): {r.last_draw_ms:.1f} ms")


def test_text_and_no_detections(make_frame):
    r = OverlayRenderer(rgb=False)
    out = r.draw(np.zeros((H, W, 3), np.uint8), make_frame(0, []), fps=29.97, latency_ms=41.2)
    red = (out[..., 2] > 200) & (out[..., 1] < 50) & (out[..., 0] < 50)  # BGR red
    assert red.sum() > 50
    white = np.all(out > 200, axis=2)
    assert white[:70].sum() > 100  # FPS and latency lines at the top
    with pytest.raises(ValueError, match="uint8"):
        r.draw(np.zeros((H, W), np.float32), None)


def test_video_frame_count(tmp_path, make_frame, make_person):
    import cv2
    p, _ = _person_and_box(make_person)
    sink = OverlayVideoSink(tmp_path / "out.mp4", fps=25)
    sink.open()
    for i in range(12):
        img = np.full((H, W, 3), i * 10, np.uint8)
        sink.send(make_frame(i, [p] if i % 2 else []), image=img)
    sink.send(make_frame(99, []), image=None)  # no pixels: counted, not written
    sink.close()
    assert sink.stats()["frames"] == 12 and sink.stats()["no_image"] == 1
    cap = cv2.VideoCapture(str(tmp_path / "out.mp4"))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    assert n == 12
    with pytest.raises(SinkError, match="does not exist"):
        OverlayVideoSink(tmp_path / "nope" / "out.mp4").open()
    with pytest.raises(ValueError):
        OverlayVideoWriter(tmp_path / "x.mp4", fps=0)
