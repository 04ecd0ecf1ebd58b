"""The `landmarks-ik` model (pipeline/models/landmarks_ik.py): MediaPipe's landmark network on
the photos that ship with ultralytics, camera geometry, SMPL shape fit, bad crops."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.models import landmarks_ik as lik
from pipeline.models.preprocess import focal_length, square_boxes
from pipeline.pose import landmark_ik as ik
from pipeline.pose.skeleton import project
from pipeline.testing.landmarks import landmarks_from_pose, random_poses

# persons in the bundled photos (x1, y1, x2, y2): two whole ones, and one cut by the right border
BUS_PERSONS = [(50, 400, 245, 905), (220, 405, 345, 860)]
BUS_CUT_PERSON = (665, 380, 810, 880)
BUS_NOBODY = (300, 60, 500, 260)       # the building's facade
ZIDANE_PERSONS = [(130, 195, 1150, 720), (740, 40, 1150, 720)]


def photo(name):
    from pipeline.sources.sample import PHOTOS, load_photos

    return load_photos()[PHOTOS.index(name)]


@pytest.fixture(scope="module")
def model():
    m = lik.LandmarksIk()
    m.load()
    m.warmup()
    return m


def run(model, img, boxes):
    centres, sides = square_boxes(np.asarray(boxes, np.float64), model.box_scale)
    crops = model.crop(img, centres, sides)
    h, w = img.shape[:2]
    lm = model.network(crops, centres, sides)
    return lm, model.smpl_params(lm, centres, sides, (w, h)), centres, sides


def test_real_photos_give_found_finite_people_in_front_of_the_camera(model):
    img = photo("bus.jpg")
    lm, out, _, _ = run(model, img, BUS_PERSONS + [BUS_NOBODY])
    assert list(out["found"]) == [True, True, False]
    assert lm.person[:2].min() > 0.9 and lm.person[2] < 0.01
    for key, width in (("global_orient", 3), ("body_pose", 69), ("betas", 10), ("transl", 3), ("pred_cam", 3),
                       ("joint_uncertainty", 24)):
        assert out[key].shape == (3, width) and out[key].dtype == np.float32 and np.isfinite(out[key]).all(), key
    assert out["joints"].shape == (3, 24, 3)
    # both persons stand 3-8 m away, upright: head above pelvis above ankles in the image
    t = out["transl"][:2]
    assert np.all((t[:, 2] > 3) & (t[:, 2] < 8)), t
    uv = project(out["joints"][0], img.shape[1], img.shape[0])
    assert uv[15, 1] < uv[0, 1] < uv[7, 1]
    # the skeleton lies on the person: the joints project inside (a slightly grown) box
    for i, (x1, y1, x2, y2) in enumerate(BUS_PERSONS):
        uv = project(out["joints"][i], img.shape[1], img.shape[0])
        assert np.all((uv[:, 0] > x1 - 30) & (uv[:, 0] < x2 + 30) & (uv[:, 1] > y1 - 30) & (uv[:, 1] < y2 + 30))
    assert np.all(out["betas"] == 0)   # no SMPL model: the template skeleton, mean shape


def test_forward_kinematics_reproduces_the_landmarks_on_the_photos(model):
    """Self-consistency (issue 19): the 12 limb joints within 2 cm of MediaPipe's world
    landmarks after root alignment, on the skeleton used."""
    for name, boxes in (("bus.jpg", BUS_PERSONS), ("zidane.jpg", ZIDANE_PERSONS)):
        img = photo(name)
        lm, out, centres, _ = run(model, img, boxes)
        h, w = img.shape[:2]
        world = lm.world @ np.swapaxes(lik.ray_rotation(centres, (w, h)), 1, 2)
        t = lik.fit_translation(world, lm.image, lik.landmark_confidence(lm, (w, h)), (w, h))
        joints = out["joints"] - t[:, None].astype(np.float32)   # back into the landmark frame
        err = np.linalg.norm(joints[:, ik.LIMB_JOINTS] - world[:, [ik.LIMB_LANDMARKS[j] for j in ik.LIMB_JOINTS]],
                             axis=-1)
        assert err.mean() < 0.02 and err.max() < 0.05, (name, err)


def test_person_cut_by_the_border_is_kept_with_every_joint_uncertain(model):
    img = photo("bus.jpg")
    lm, out, _, _ = run(model, img, [BUS_CUT_PERSON, BUS_PERSONS[1]])
    assert 0.1 < lm.person[0] < 0.5 and out["found"][0]
    unc = out["joint_uncertainty"]
    assert unc[0].min() >= 1.0 - lm.person[0] / lik.PRESENT - 1e-6
    assert unc[0].mean() > unc[1].mean() + 0.3
    assert np.isfinite(out["body_pose"]).all()


def test_black_crop_and_crop_outside_the_frame_are_nobody(model):
    img = photo("zidane.jpg")
    black = np.zeros_like(img)
    for frame, box in ((black, (100, 100, 400, 500)), (img, (5000, 5000, 5400, 5600))):
        lm, out, _, _ = run(model, frame, [box])
        assert not out["found"][0] and lm.person[0] < 0.01
        for key in ("global_orient", "body_pose", "transl", "joint_uncertainty"):
            assert np.isfinite(out[key]).all()
        assert out["joint_uncertainty"].min() >= 0.98


def test_landmark_decoding_matches_mediapipe_conventions(model):
    """Image landmarks map back into the frame; world landmarks are metres, hip-centred, y down,
    the person's left on the image's right (a person facing the camera)."""
    img = photo("bus.jpg")
    lm, _, _, _ = run(model, img, BUS_PERSONS[1:])
    hip_mid = 0.5 * (lm.world[0, ik.L_HIP] + lm.world[0, ik.R_HIP])
    np.testing.assert_allclose(hip_mid, 0.0, atol=0.02)
    assert lm.world[0, ik.NOSE, 1] < -0.4 and lm.world[0, ik.L_ANKLE, 1] > 0.4
    assert lm.world[0, ik.L_SHOULDER, 0] > lm.world[0, ik.R_SHOULDER, 0]
    assert lm.image[0, ik.L_SHOULDER, 0] > lm.image[0, ik.R_SHOULDER, 0]
    x1, y1, x2, y2 = BUS_PERSONS[1]
    body = lm.image[0, [ik.NOSE, ik.L_HIP, ik.R_HIP, ik.L_ANKLE, ik.R_ANKLE]]
    assert np.all((body[:, 0] > x1) & (body[:, 0] < x2) & (body[:, 1] > y1) & (body[:, 1] < y2)), body
    assert np.all((lm.visibility >= 0) & (lm.visibility <= 1) & (lm.presence >= 0) & (lm.presence <= 1))


def test_fit_translation_recovers_a_known_position():
    rng = np.random.default_rng(0)
    points = landmarks_from_pose(random_poses(2, seed=1))
    t_true = np.array([[0.4, -0.2, 4.0], [-1.0, 0.5, 7.5]])
    w, h = 1280, 720
    uv = project(points + t_true[:, None], w, h)
    weights = rng.uniform(0.2, 1.0, (2, 33))
    np.testing.assert_allclose(lik.fit_translation(points, uv, weights, (w, h)), t_true, atol=1e-6)
    # nothing usable: a fixed guess in front of the camera, not NaN
    t = lik.fit_translation(points, uv, np.zeros((2, 33)), (w, h))
    assert np.all(np.isfinite(t)) and np.all(t[:, 2] > 0)


def test_crop_camera_gives_the_translation_back_through_pocos_formula():
    from pipeline.models.postprocess import to_smpl_params

    transl = np.array([[0.3, 0.1, 4.2], [-0.8, 0.4, 9.0]])
    centres = np.array([[500.0, 300.0], [100.0, 600.0]])
    sides = np.array([300.0, 180.0])
    cam = lik.camera_from_transl(transl, centres, sides, (1280, 720))
    fake = {"pred_pose": np.broadcast_to(np.eye(3), (2, 24, 3, 3)), "pred_cam": cam,
            "pred_shape": np.zeros((2, 10)), "var_pose": np.zeros((2, 24))}
    np.testing.assert_allclose(to_smpl_params(fake, centres, sides, (1280, 720))["transl"], transl, rtol=1e-5)


def test_ray_rotation_turns_the_optical_axis_onto_each_crop_ray():
    w, h = 1280, 720
    centres = np.array([[640.0, 360.0], [0.0, 0.0], [1280.0, 500.0]])
    R = lik.ray_rotation(centres, (w, h))
    np.testing.assert_allclose(R[0], np.eye(3), atol=1e-12)
    f = focal_length(w, h)
    for r, c in zip(R, centres):
        ray = np.array([c[0] - w / 2, c[1] - h / 2, f])
        np.testing.assert_allclose(r @ [0, 0, 1], ray / np.linalg.norm(ray), atol=1e-12)
        np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-12)


def test_landmark_confidence_caps_landmarks_outside_the_frame_and_weak_poses():
    n = 2
    lm = lik.Landmarks(world=np.zeros((n, 33, 3)), image=np.full((n, 33, 2), 50.0),
                       visibility=np.ones((n, 33)), presence=np.ones((n, 33)), person=np.array([1.0, 0.25]))
    lm.image[0, 5] = (-3.0, 50.0)
    lm.world[0, 6] = np.nan
    conf = lik.landmark_confidence(lm, (100, 100))
    assert conf[0, 5] == lik.OUT_OF_FRAME_CONFIDENCE and conf[0, 6] == 0.0 and conf[0, 0] == 1.0
    np.testing.assert_allclose(conf[1], 0.5)


def test_min_presence_is_checked():
    with pytest.raises(ValueError, match="min_presence"):
        lik.LandmarksIk(min_presence=1.5)


# ------------------------------------------------------------------------------ with SMPL

def test_shape_fit_recovers_betas_from_bone_lengths():
    from pipeline.pose.skeleton import DEFAULT_REST_JOINTS as J0

    dirs = np.zeros((24, 3, 10))
    dirs[[4, 5], 1, 0] = -0.03                       # beta 0: longer thighs
    for j in (18, 19, 20, 21, 22, 23):
        dirs[j, 0, 1] = 0.03 * np.sign(J0[j, 0])     # beta 1: longer upper arms
    betas = np.zeros((1, 10))
    betas[0, :2] = (1.5, -1.0)
    exact = lik.ShapeSpace(J0, dirs, ridge=0.0)
    J = exact.joints(betas)[0]
    world = landmarks_from_pose(random_poses(1, seed=2, rest_joints=J), J)
    np.testing.assert_allclose(exact.fit(world, np.ones((1, 33)), iterations=4), betas, atol=1e-3)
    # the default prior pulls towards the mean shape, never past the truth or across zero
    fit = lik.ShapeSpace(J0, dirs).fit(world, np.ones((1, 33)))[0]
    assert 0.5 < fit[0] < 1.5 and -1.0 < fit[1] < -0.3 and np.all(fit[2:] == 0)
    # no confident landmark: the mean shape
    np.testing.assert_allclose(exact.fit(world, np.zeros((1, 33))), 0.0)


def test_with_smpl_the_joints_are_smplx_joints_of_the_outputs(tmp_path, model):
    """Fitted betas + rotations + transl through smplx land where the model says its joints are."""
    from pipeline.models.smpl import load_smpl
    from pipeline.testing import make_synthetic_smpl

    make_synthetic_smpl(tmp_path / "smpl")
    layer = load_smpl(tmp_path)
    m = lik.LandmarksIk()
    m.network = model.network
    m.use_smpl(layer)
    img = photo("bus.jpg")
    _, out, _, _ = run(m, img, BUS_PERSONS)
    np.testing.assert_allclose(layer.joints(out), out["joints"], atol=2e-3)
    assert m.info()["skeleton"].startswith("SMPL")
