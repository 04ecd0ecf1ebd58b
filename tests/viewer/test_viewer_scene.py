"""Geometry of the viewer: forward kinematics, frames, colours (no server, no browser)."""
import numpy as np

from pipeline.sinks import viewer_scene as vs
from viewer_helpers import make_person


def test_zero_pose_skeleton_equals_rest_offsets():
    world, pos = vs.forward_kinematics(vs.local_rotations(np.zeros(3), np.zeros(69)))
    assert np.allclose(world, np.eye(3))
    assert np.allclose(pos[0], vs.DEFAULT_REST_OFFSETS[0])
    for j in range(1, 24):
        assert np.allclose(pos[j] - pos[vs.SMPL_PARENTS[j]], vs.DEFAULT_REST_OFFSETS[j])
    assert np.allclose(pos, vs.rest_joints_from_offsets(vs.DEFAULT_REST_OFFSETS))


def test_left_elbow_bent_90_degrees_moves_wrist_and_hand():
    elbow, wrist, hand = 18, 20, 22
    body_pose = np.zeros(69)
    body_pose[(elbow - 1) * 3:(elbow - 1) * 3 + 3] = [0.0, 0.0, np.pi / 2]  # +90 deg about z
    _, rest = vs.forward_kinematics(vs.local_rotations(np.zeros(3), np.zeros(69)))
    _, pos = vs.forward_kinematics(vs.local_rotations(np.zeros(3), body_pose))
    # Joints up to the elbow do not move; the forearm (+x in the T-pose) now points +y.
    assert np.allclose(pos[:elbow + 1], rest[:elbow + 1])
    assert np.allclose(pos[wrist], pos[elbow] + [0.0, 0.25, 0.0])
    assert np.allclose(pos[hand], pos[wrist] + [0.01, 0.09, -0.01])
    assert np.allclose(pos[19:20], rest[19:20]) and np.allclose(pos[21], rest[21])


def test_person_skeleton_camera_to_view_frame():
    # Identity root: SMPL y-up lands on camera y (down); the view frame flips y and z back.
    person = make_person(global_orient=(0.0, 0.0, 0.0), transl=(0.5, 0.2, 3.0))
    pose = vs.person_skeleton(person)
    cam = vs.rest_joints_from_offsets(vs.DEFAULT_REST_OFFSETS) + [0.5, 0.2, 3.0]
    assert np.allclose(pose.joints, cam * [1, -1, -1], atol=1e-6)
    # POCO's usual upright root (pi about x): the head ends up above the pelvis in the view.
    upright = vs.person_skeleton(make_person(global_orient=(np.pi, 0.0, 0.0)))
    assert upright.joints[15, 1] > upright.joints[0, 1] > upright.joints[10, 1]
    assert np.all(upright.joints[:, 2] < 0)  # in front of the camera = -z in the view frame


def test_person_joints_are_used_when_present():
    person = make_person()
    person.joints = np.arange(72, dtype=np.float32).reshape(24, 3)
    pose = vs.person_skeleton(person)
    assert np.allclose(pose.joints, person.joints * [1, -1, -1])


def test_quaternion_round_trip():
    rng = np.random.default_rng(0)
    rots = vs.axis_angle_to_matrix(rng.normal(size=(64, 3)) * 2.0)
    q = vs.matrix_to_wxyz(rots)
    w, x, y, z = q.T
    back = np.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], axis=1).reshape(-1, 3, 3)
    assert np.allclose(back, rots, atol=1e-9)
    assert np.allclose(vs.matrix_to_wxyz(vs.CAM_TO_VIEW), vs.CAM_TO_VIEW_WXYZ)


def test_uncertainty_colours_go_green_to_red():
    c = vs.uncertainty_colors(np.array([0.0, 0.5, 1.0, np.nan]))
    assert c[0, 1] > 200 and c[0, 0] < 30        # confident: green
    assert c[2, 0] > 200 and c[2, 1] < 30        # uncertain: red
    assert c[1, 0] > 200 and c[1, 1] > 200       # midway: yellow
    assert np.array_equal(c[3], c[2])            # NaN counts as uncertain


def test_box_figure_mesh_is_consistent():
    verts, faces, weights, joints = vs.box_figure_mesh()
    assert verts.shape == (23 * 8, 3) and faces.shape == (23 * 12, 3) and weights.shape == (23 * 8, 24)
    assert faces.max() < len(verts) and np.allclose(weights.sum(1), 1.0)
    assert joints.shape == (24, 3)
