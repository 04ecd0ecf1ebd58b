"""Inverse kinematics: BlazePose world landmarks -> SMPL joint rotations (docs/architecture.md §6).

MediaPipe's pose landmark model gives 33 landmarks per person in metres, hip-centred, axes
as the camera sees the person (x right, y down, z away from the camera: the camera frame of
docs/architecture.md §6 up to a translation). This module turns them into the 24 local joint
rotations of SMPL's kinematic tree, on a skeleton with SMPL's joint layout.

How each rotation is found (all vectorised over persons; the only Python loops run over a
few groups of joints, never over persons):

* **pelvis**: the hip line fixes the body's left-right axis exactly, the hip -> shoulder
  line its up axis (orthogonalised): a two-vector frame (TRIAD).
* **spine1..3**: the chest frame (shoulder line, same up axis) relative to the pelvis frame,
  shared equally by the three spine joints (each gets a third of the rotation angle).
* **neck, head**: the head frame (ear line, ear -> nose forward axis) relative to spine3,
  shared equally by neck and head.
* **collars**: swing that points the collar -> shoulder bone at the shoulder landmark.
* **limbs**: swing from each bone's rest direction to the landmark bone direction (hip ->
  knee from the skeleton's hip joint, knee -> ankle, shoulder -> elbow, elbow -> wrist), then a twist about the bone where
  landmarks constrain it: the thigh by the knee's hinge axis (a bent knee) or the foot's
  forward direction (a straight leg); the upper arm by the elbow's hinge axis; the forearm
  (half) and hand (the rest) by the index - pinky knuckle line; the foot by the heel -> toe
  line and the plane of heel, ankle and toe. Where the twist is not constrained (straight
  limb, invisible landmarks) it stays the minimal swing from the parent (no twist), and every
  twist is clamped to an anatomical range (`TWIST_LIMITS_DEG`). Mapping the hinge axis onto the
  rest hinge axis also means knees and elbows only ever bend the anatomical way.
* **feet, hands** (SMPL's leaf joints): no landmarks beyond them, identity.

The skeleton: `personalise` scales a rest skeleton's bones to the landmark bone lengths of
each person (hip and shoulder width, torso, thigh, shin, upper arm, forearm, hand), so that
forward kinematics of the rotations lands on the landmarks; with the SMPL model its rest
joints for fitted betas are used unchanged instead (`pipeline.models.landmarks_ik`).

Uncertainty per joint: 1 - the smallest confidence (visibility x presence) among the
landmarks that define that joint's rotation; 1 for the leaf joints (never observed) and for
joints whose defining bones have no length (degenerate geometry). Nothing non-finite leaves
`solve`: bad landmarks are replaced by zeros with confidence 0, and a person whose result is
still not finite gets identity rotations and uncertainty 1 everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.pose.rotations import axis_angle_to_rotmat, rotmat_to_axis_angle
from pipeline.pose.skeleton import (DEFAULT_REST_JOINTS, NUM_JOINTS, PARENTS, forward_kinematics_batch,
                                    joints_from_offsets)

# BlazePose landmark indices (MediaPipe's published pose topology; 33 body landmarks).
NOSE, L_EAR, R_EAR = 0, 7, 8
L_SHOULDER, R_SHOULDER, L_ELBOW, R_ELBOW, L_WRIST, R_WRIST = 11, 12, 13, 14, 15, 16
L_PINKY, R_PINKY, L_INDEX, R_INDEX = 17, 18, 19, 20
L_HIP, R_HIP, L_KNEE, R_KNEE, L_ANKLE, R_ANKLE = 23, 24, 25, 26, 27, 28
L_HEEL, R_HEEL, L_TOE, R_TOE = 29, 30, 31, 32
NUM_LANDMARKS = 33
# Points derived from the landmarks, appended after them: knuckle midpoints (SMPL's hand joints).
L_HAND, R_HAND = 33, 34

# SMPL joint -> landmark at the same anatomical place: the 12 limb joints.
LIMB_LANDMARKS = {1: L_HIP, 2: R_HIP, 4: L_KNEE, 5: R_KNEE, 7: L_ANKLE, 8: R_ANKLE,
                  16: L_SHOULDER, 17: R_SHOULDER, 18: L_ELBOW, 19: R_ELBOW, 20: L_WRIST, 21: R_WRIST}
LIMB_JOINTS = np.array(sorted(LIMB_LANDMARKS))

_TORSO_SUPPORT = (L_HIP, R_HIP, L_SHOULDER, R_SHOULDER)
_HEAD_SUPPORT = (NOSE, L_EAR, R_EAR)
# Landmarks whose confidence bounds each joint's rotation (-> joint_uncertainty); None: a leaf
# joint, never observed.
_SUPPORT = (
    _TORSO_SUPPORT, (L_HIP, L_KNEE), (R_HIP, R_KNEE), _TORSO_SUPPORT, (L_KNEE, L_ANKLE), (R_KNEE, R_ANKLE),
    _TORSO_SUPPORT, (L_ANKLE, L_HEEL, L_TOE), (R_ANKLE, R_HEEL, R_TOE), _TORSO_SUPPORT, None, None,
    _HEAD_SUPPORT, (L_SHOULDER, R_SHOULDER), (L_SHOULDER, R_SHOULDER), _HEAD_SUPPORT,
    (L_SHOULDER, L_ELBOW), (R_SHOULDER, R_ELBOW), (L_ELBOW, L_WRIST), (R_ELBOW, R_WRIST),
    (L_WRIST, L_INDEX, L_PINKY), (R_WRIST, R_INDEX, R_PINKY), None, None,
)
LEAF_JOINTS = tuple(j for j, s in enumerate(_SUPPORT) if s is None)
_SUPPORT_INDEX = np.array([(tuple(s) + tuple(s[:1]) * (4 - len(s))) if s else (0,) * 4 for s in _SUPPORT])

# Anatomical twist ranges about the bone (degrees), for the joints a twist is set on.
TWIST_LIMITS_DEG = {1: (-60, 60), 2: (-60, 60), 16: (-100, 100), 17: (-100, 100),
                    18: (-90, 90), 19: (-90, 90), 20: (-90, 90), 21: (-90, 90), 7: (-45, 45), 8: (-45, 45)}
_TWIST_LIMITS = np.radians([TWIST_LIMITS_DEG.get(j, (-180, 180)) for j in range(24)])

# Rest-pose directions in the SMPL body frame (x = the body's left, y up, z front).
_X, _Y, _Z = np.eye(3)
REST_FACE_FORWARD = np.array([0.0, -0.2, 1.0]) / np.hypot(0.2, 1.0)   # ear midpoint -> nose, ~11 deg down
_MIN_BONE = 0.01                      # metres: shorter landmark bones are degenerate
_BEND_RAD = np.radians((8.0, 25.0))   # hinge axis trusted from 8 deg of bend beyond rest, fully from 25

_PARENT = np.array(PARENTS)
_I3 = np.eye(3)


@dataclass
class IkResult:
    """Per person (P): local rotations, the skeleton used and where its joints land."""
    rotmats: np.ndarray        # (P, 24, 3, 3) local joint rotations (SMPL order)
    rest_joints: np.ndarray    # (P, 24, 3) rest skeleton used (SMPL body frame, metres)
    joints: np.ndarray         # (P, 24, 3) posed joints in the landmark frame (hip midpoint at 0)
    pelvis: np.ndarray         # (P, 3) pelvis position in the landmark frame
    uncertainty: np.ndarray    # (P, 24) in [0, 1]: 1 = the rotation is a guess


# ------------------------------------------------------------------------------ small geometry
# Hand-written small ops: np.cross and np.linalg.norm cost tens of microseconds each on
# (P, n, 3) arrays, more than the arithmetic; the IK calls them dozens of times per frame.
def _dot(a, b):
    return (a * b).sum(-1)


def _norm(v):
    return np.sqrt((v * v).sum(-1))


_P1, _P2 = np.array([1, 2, 0]), np.array([2, 0, 1])


def _cross(a, b):
    return a[..., _P1] * b[..., _P2] - a[..., _P2] * b[..., _P1]


def _unit(v):
    """Unit vectors and their lengths; zero-length vectors stay zero (never NaN)."""
    n = _norm(v)
    return v / np.where(n > 1e-12, n, 1.0)[..., None], n


def _mv(R, v):
    return (R @ v[..., None])[..., 0]


def _T(R):
    return np.swapaxes(R, -1, -2)


def _skew(v):
    K = np.zeros(v.shape + (3,))
    K[..., 0, 1], K[..., 0, 2], K[..., 1, 2] = -v[..., 2], v[..., 1], -v[..., 0]
    K[..., 1, 0], K[..., 2, 0], K[..., 2, 1] = v[..., 2], -v[..., 1], v[..., 0]
    return K


def _outer(a, b):
    return a[..., :, None] * b[..., None, :]


def rotate_about(axis, angle):
    """Rodrigues: rotation by `angle` (...) about unit `axis` (..., 3)."""
    c, s = np.cos(angle)[..., None, None], np.sin(angle)[..., None, None]
    return c * _I3 + s * _skew(axis) + (1.0 - c) * _outer(axis, axis)


def _any_perpendicular(a):
    # cross with the basis axis least aligned with a
    return _unit(_cross(a, _I3[np.argmin(np.abs(a), axis=-1)]))[0]


def swing(a, b):
    """Smallest rotation taking unit vectors a to b (..., 3) -> (..., 3, 3); opposite
    vectors turn half a circle about a perpendicular axis; a zero vector gives identity."""
    v = _cross(a, b)
    c = _dot(a, b)
    opposite = c < -1.0 + 1e-9
    R = c[..., None, None] * _I3 + _skew(v) + _outer(v, v) / np.where(opposite, 1.0, 1.0 + c)[..., None, None]
    if np.any(opposite):
        k = _any_perpendicular(a)
        R = np.where(opposite[..., None, None], 2.0 * _outer(k, k) - _I3, R)
    return R


def two_vector_frame(primary, secondary):
    """Orthonormal frame (..., 3, 3) with columns: primary, secondary made perpendicular to
    it, and their cross product. A secondary along the primary is replaced by any perpendicular,
    a zero primary by the x axis (the caller flags such a joint as degenerate)."""
    e1, n1 = _unit(primary)
    if np.any(n1 < 1e-9):
        e1 = np.where((n1 < 1e-9)[..., None], _X, e1)
    e2, n = _unit(secondary - _dot(secondary, e1)[..., None] * e1)
    flat = n < 1e-6
    if np.any(flat):
        e2 = np.where(flat[..., None], _any_perpendicular(e1), e2)
    return np.stack([e1, e2, _cross(e1, e2)], axis=-1)


def align_frames(rest_primary, rest_secondary, primary, secondary):
    """Rotation mapping the rest pair onto the target pair: primary exactly, secondary as
    closely as a rotation can."""
    return two_vector_frame(primary, secondary) @ _T(two_vector_frame(rest_primary, rest_secondary))


def fraction_of(R, t):
    """R^t: the same axis, t times the angle; t broadcasts against R's leading dimensions."""
    s = np.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1)
    cos = 0.5 * (R[..., 0, 0] + R[..., 1, 1] + R[..., 2, 2] - 1.0)
    axis, n = _unit(s)
    out = rotate_about(axis, t * np.arctan2(0.5 * n, cos))
    near_half_turn = cos < -0.9   # the skew part no longer gives the axis accurately
    if np.any(near_half_turn):
        exact = axis_angle_to_rotmat(np.asarray(t)[..., None] * rotmat_to_axis_angle(R))
        out = np.where(near_half_turn[..., None, None], exact, out)
    return out


def _twist_angle(R, axis, rest_secondary, secondary):
    """Angle about `axis` that turns R @ rest_secondary onto `secondary`, both seen
    perpendicular to the axis, and how well defined that is (0..1)."""
    u = _mv(R, _unit(rest_secondary)[0])
    u = u - _dot(u, axis)[..., None] * axis
    v = secondary - _dot(secondary, axis)[..., None] * axis
    angle = np.arctan2(_dot(axis, _cross(u, v)), _dot(u, v))
    sine = _norm(v) / np.maximum(_norm(secondary), 1e-12)
    return angle, np.clip(np.minimum(_norm(u), sine) / 0.3, 0.0, 1.0)


def _ramp(x, lo, hi):
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0)


def _angle(a, b):
    return np.arctan2(_norm(_cross(a, b)), _dot(a, b))


# ------------------------------------------------------------------------------ the skeleton
def with_hands(world):
    """(P, 35, 3): the landmarks plus the two knuckle midpoints (`L_HAND`, `R_HAND`)."""
    hands = 0.5 * (world[:, [L_INDEX, R_INDEX]] + world[:, [L_PINKY, R_PINKY]])
    return np.concatenate([world, hands], axis=1)


def _offsets(J):
    off = J.copy()
    off[..., 1:, :] = J[..., 1:, :] - J[..., _PARENT[1:], :]
    return off


# Bones scaled to landmark lengths: child joint, and the landmarks at either end of the bone.
_LENGTH_CHILD = np.array([4, 5, 7, 8, 18, 19, 20, 21, 22, 23])
_LENGTH_FROM = np.array([L_HIP, R_HIP, L_KNEE, R_KNEE, L_SHOULDER, R_SHOULDER, L_ELBOW, R_ELBOW, L_WRIST, R_WRIST])
_LENGTH_TO = np.array([L_KNEE, R_KNEE, L_ANKLE, R_ANKLE, L_ELBOW, R_ELBOW, L_WRIST, R_WRIST, L_HAND, R_HAND])
_TORSO = [3, 6, 9, 12, 13, 14, 15]   # offsets scaled with the hip -> shoulder distance


def _ratio(measured, rest):
    r = measured / np.maximum(rest, 1e-9)
    return np.where((measured > _MIN_BONE) & (r > 0.25) & (r < 4.0), r, 1.0)


def personalise(world, rest_joints=None) -> np.ndarray:
    """Per-person rest skeletons (P, 24, 3): `rest_joints` (the template by default) with hip
    and shoulder width, torso, limb and hand lengths taken from the landmarks (P, 33 or 35, 3).
    A landmark bone too short or too long to be that body part keeps the template's length;
    the feet scale with the shins."""
    J = DEFAULT_REST_JOINTS if rest_joints is None else np.asarray(rest_joints, np.float64)
    W = world if world.shape[1] > NUM_LANDMARKS else with_hands(world)
    P = W.shape[0]
    rest_off = _offsets(J)
    off = np.broadcast_to(rest_off, (P, NUM_JOINTS, 3)).copy()
    hip_mid = 0.5 * (W[:, L_HIP] + W[:, R_HIP])
    sh_mid = 0.5 * (W[:, L_SHOULDER] + W[:, R_SHOULDER])
    torso = _ratio(_norm(sh_mid - hip_mid), _norm(0.5 * (J[16] + J[17] - J[1] - J[2])))
    off[:, _TORSO] *= torso[:, None, None]
    # hip width: stretch the pelvis -> hip offsets sideways
    off[:, 1:3, 0] *= _ratio(_norm(W[:, L_HIP] - W[:, R_HIP]), J[1, 0] - J[2, 0])[:, None]
    # shoulder width: the collars moved with the torso; stretch collar -> shoulder sideways
    collar_w = off[:, 13, 0] - off[:, 14, 0]
    k = (_norm(W[:, L_SHOULDER] - W[:, R_SHOULDER]) - collar_w) / (rest_off[16, 0] - rest_off[17, 0])
    off[:, 16:18, 0] *= np.where((k > 0.2) & (k < 4.0), k, 1.0)[:, None]
    ratio = _ratio(_norm(W[:, _LENGTH_TO] - W[:, _LENGTH_FROM]), _norm(rest_off[_LENGTH_CHILD]))
    off[:, _LENGTH_CHILD] *= ratio[..., None]
    off[:, 10:12] *= ratio[:, 2:4, None]   # feet with the shins
    return joints_from_offsets(off)


# ------------------------------------------------------------------------------ the solver
def solve(world, confidence=None, rest_joints=None, personalised: bool = True) -> IkResult:
    """SMPL rotations for P persons.

    world (P, 33, 3) landmark positions (metres, camera-oriented, hip-centred);
    confidence (P, 33) in [0, 1] (default all 1); rest_joints (24, 3) or (P, 24, 3): the
    skeleton (default: the template). personalised=True scales its bones to each person's
    landmark lengths (`personalise`) and lets each collar -> shoulder bone take the length
    that lands on the shoulder landmark; False keeps the skeleton as given (SMPL with fitted
    betas).
    """
    W = np.asarray(world, np.float64).reshape(-1, NUM_LANDMARKS, 3)
    P = W.shape[0]
    conf = np.ones((P, NUM_LANDMARKS)) if confidence is None else \
        np.asarray(confidence, np.float64).reshape(P, NUM_LANDMARKS)
    finite = np.isfinite(W).all(-1)
    W = with_hands(np.where(finite[..., None], W, 0.0))
    conf = np.where(finite & np.isfinite(conf), np.clip(conf, 0.0, 1.0), 0.0)
    if personalised:
        J = personalise(W, rest_joints)
    else:
        J = np.broadcast_to(DEFAULT_REST_JOINTS if rest_joints is None else np.asarray(rest_joints, np.float64),
                            (P, NUM_JOINTS, 3)).copy()
    off = _offsets(J)
    R = np.broadcast_to(_I3, (P, NUM_JOINTS, 3, 3)).copy()   # local rotations
    G = R.copy()                                              # global rotations
    degenerate = np.zeros((P, NUM_JOINTS), bool)

    # pelvis, chest and head frames at once: hip line / shoulder line with the hip ->
    # shoulder up axis; ear line with the ear -> nose forward axis
    hip_mid = 0.5 * (W[:, L_HIP] + W[:, R_HIP])
    ear_mid = 0.5 * (W[:, L_EAR] + W[:, R_EAR])
    up = 0.5 * (W[:, L_SHOULDER] + W[:, R_SHOULDER]) - hip_mid
    rest_up = 0.5 * (J[:, 16] + J[:, 17] - J[:, 1] - J[:, 2])
    lines = W[:, [L_HIP, L_SHOULDER, L_EAR]] - W[:, [R_HIP, R_SHOULDER, R_EAR]]
    rest_lines = np.stack([J[:, 1] - J[:, 2], J[:, 16] - J[:, 17], np.broadcast_to(_X, (P, 3))], 1)
    seconds = np.stack([up, up, W[:, NOSE] - ear_mid], 1)
    frames = align_frames(rest_lines, np.stack([rest_up, rest_up, np.broadcast_to(REST_FACE_FORWARD, (P, 3))], 1),
                          lines, seconds)
    pelvis_g, chest, head = frames[:, 0], frames[:, 1], frames[:, 2]
    # the spine joints share the chest's rotation from the pelvis in thirds, neck and head
    # share the head's rotation from the chest in halves (spine3's global rotation is the chest's)
    shares = fraction_of(np.stack([_T(pelvis_g) @ chest, _T(chest) @ head], 1), np.array([1.0 / 3.0, 0.5]))
    R[:, 0] = G[:, 0] = pelvis_g
    R[:, [3, 6, 9]] = shares[:, :1]
    R[:, [12, 15]] = shares[:, 1:]
    G[:, 3] = pelvis_g @ shares[:, 0]
    G[:, 6] = G[:, 3] @ shares[:, 0]
    G[:, 9] = chest
    G[:, 12] = chest @ shares[:, 1]
    G[:, 15] = head
    # a frame is undefined when a line is too short or lies along its second direction
    line_u, line_n = _unit(lines)
    second_u, second_n = _unit(seconds)
    no_frame = (line_n < _MIN_BONE) | (second_n < _MIN_BONE) | (_norm(_cross(line_u, second_u)) < 0.1)
    degenerate[:, [0, 3, 6, 9, 13, 14]] = (no_frame[:, 0] | no_frame[:, 1])[:, None]   # collars aim from the spine
    degenerate[:, [12, 15]] = no_frame[:, 2:3]

    # where the pelvis goes so that the skeleton's hip midpoint sits on the landmarks'
    pelvis = hip_mid - _mv(pelvis_g, 0.5 * (J[:, 1] + J[:, 2]) - J[:, 0])
    spine3 = pelvis + _mv(pelvis_g, off[:, 3]) + _mv(G[:, 3], off[:, 6]) + _mv(G[:, 6], off[:, 9])

    # collars: aim collar -> shoulder at the shoulder landmark from where the collar is
    collar_pos = spine3[:, None] + _mv(chest[:, None], off[:, 13:15])
    aim = W[:, [L_SHOULDER, R_SHOULDER]] - collar_pos
    if personalised:
        aim_n = _norm(aim)
        rest_u, rest_n = _unit(off[:, 16:18])
        off[:, 16:18] = rest_u * np.where(aim_n > _MIN_BONE, aim_n, rest_n)[..., None]
        J = joints_from_offsets(off)
    _aim(R, G, np.array([13, 14]), off[:, 16:18], aim, degenerate)

    # limbs, left/right pairs (P, 2, 3)
    def bone(a, b):
        return W[:, np.array(b)] - W[:, np.array(a)]
    # thighs aim from where the skeleton's hips are: the same as the landmark hips on a
    # personalised skeleton; on SMPL's (narrower hips than MediaPipe's hip landmarks) the
    # knees still land on the knee landmarks instead of shifting inwards
    thigh = W[:, [L_KNEE, R_KNEE]] - (pelvis[:, None] + _mv(pelvis_g[:, None], off[:, 1:3]))
    degenerate[:, 1:3] |= _norm(bone((L_HIP, R_HIP), (L_KNEE, R_KNEE))) < _MIN_BONE
    shin = bone((L_KNEE, R_KNEE), (L_ANKLE, R_ANKLE))
    upper = bone((L_SHOULDER, R_SHOULDER), (L_ELBOW, R_ELBOW))
    fore = bone((L_ELBOW, R_ELBOW), (L_WRIST, R_WRIST))
    hand = bone((L_WRIST, R_WRIST), (L_HAND, R_HAND))
    knuckles = bone((L_PINKY, R_PINKY), (L_INDEX, R_INDEX))
    toe = bone((L_ANKLE, R_ANKLE), (L_TOE, R_TOE))
    sole_normal = _cross(bone((L_HEEL, R_HEEL), (L_ANKLE, R_ANKLE)), bone((L_HEEL, R_HEEL), (L_TOE, R_TOE)))

    def conf_min(*pairs):
        return np.min(np.stack([conf[:, list(p)] for p in pairs]), axis=0)
    hand_conf = conf_min((L_INDEX, R_INDEX), (L_PINKY, R_PINKY))
    foot_conf = conf_min((L_HEEL, R_HEEL), (L_TOE, R_TOE), (L_ANKLE, R_ANKLE))
    none = (np.zeros((P, 2, 3)), np.zeros((P, 2, 3)), np.zeros((P, 2)))
    # hinge joints: the bend beyond the rest skeleton's own bend says how far to trust the axis
    rest_thigh, rest_shin = off[:, [4, 5]], off[:, [7, 8]]
    rest_upper, rest_fore = off[:, [18, 19]], off[:, [20, 21]]
    knee = _bend(thigh, shin, rest_thigh, rest_shin) * conf_min((L_KNEE, R_KNEE), (L_ANKLE, R_ANKLE))
    elbow = _bend(upper, fore, rest_upper, rest_fore) * conf_min((L_ELBOW, R_ELBOW), (L_WRIST, R_WRIST))
    knee_hinge = (_rest_hinge(rest_thigh, rest_shin, np.array([_X, _X])), _cross(thigh, shin), knee)
    # a straight leg: the plane of shin and foot (the foot's own twist is the ankle's)
    leg_plane = (_cross(rest_shin, off[:, [10, 11]]), _cross(shin, toe), (1.0 - knee) * foot_conf)
    elbow_hinge = (_rest_hinge(rest_upper, rest_fore, np.array([-_Y, _Y])), _cross(upper, fore), elbow)
    knuckle_line = (np.broadcast_to(_Z, (P, 2, 3)), knuckles, hand_conf)

    # hips and shoulders: swing to the thigh / upper arm, twist from the knee / elbow hinge
    _aim(R, G, np.array([1, 2, 16, 17]), np.concatenate([rest_thigh, rest_upper], 1),
         np.concatenate([thigh, upper], 1), degenerate,
         twists=[_pair(knee_hinge, elbow_hinge), _pair(leg_plane, none)])
    # knees (swing only: the thigh's twist already lined up the hinge) and elbows (half the
    # forearm's twist towards the knuckle line; the wrist takes the rest)
    _aim(R, G, np.array([4, 5, 18, 19]), np.concatenate([rest_shin, rest_fore], 1),
         np.concatenate([shin, fore], 1), degenerate,
         twists=[_pair(none, knuckle_line)], twist_share=np.array([0.0, 0.0, 0.5, 0.5]))
    # ankles (toe direction, twist from the sole's plane) and wrists (knuckle line)
    _aim(R, G, np.array([7, 8, 20, 21]), off[:, [10, 11, 22, 23]], np.concatenate([toe, hand], 1), degenerate,
         twists=[_pair((np.broadcast_to(_X, (P, 2, 3)), sole_normal, foot_conf), knuckle_line)])

    _, joints = forward_kinematics_batch(R, J)
    joints += (pelvis - J[:, 0])[:, None]
    unc = joint_uncertainty(conf, degenerate)
    bad = ~(np.isfinite(R).all((1, 2, 3)) & np.isfinite(joints).all((1, 2)))
    if np.any(bad):
        R[bad] = _I3
        joints[bad] = J[bad] - J[bad][:, :1]
        pelvis[bad] = 0.0
        unc[bad] = 1.0
    return IkResult(rotmats=R, rest_joints=J, joints=joints, pelvis=pelvis, uncertainty=unc)


def _bend(a, b, rest_a, rest_b):
    """0..1 trust in the hinge axis between bones a -> b (..., 3): how far the joint is bent
    beyond the rest skeleton's own bend (rest_a -> rest_b)."""
    ok = (_norm(a) > _MIN_BONE) & (_norm(b) > _MIN_BONE)
    return _ramp(_angle(a, b) - _angle(rest_a, rest_b), *_BEND_RAD) * ok


def _rest_hinge(rest_a, rest_b, flexion_axis):
    """The hinge axis the landmarks would show (cross of the two bones) if the rest joint
    flexed 90 degrees about its anatomical `flexion_axis` (n, 3)."""
    k = flexion_axis
    flexed = k * _dot(k, rest_b)[..., None] + _cross(k, rest_b)
    return _unit(_cross(rest_a, flexed))[0]


def _pair(left_group, right_group):
    """Two (rest secondary, target secondary, weight) candidates of 2 joints each -> one of 4."""
    return tuple(np.concatenate([x, y], 1) for x, y in zip(left_group, right_group))


def _aim(R, G, joints, rest_child_offsets, target, degenerate, twists=(), twist_share=None):
    """Set local R and global G of `joints` (n,) in place: swing each bone (rest offset to its
    child, (P, n, 3)) onto `target` (P, n, 3), then twist about it by the weighted circular
    mean of the twist candidates [(rest secondary, target secondary (P, n, 3), weight (P, n))],
    scaled by their summed weight (at most 1) and `twist_share` (n,), clamped to
    `TWIST_LIMITS_DEG`."""
    parent = G[:, _PARENT[joints]]
    a, length = _unit(target)
    a0, rest_length = _unit(rest_child_offsets)
    ok = (length > _MIN_BONE) & (rest_length > 1e-9)
    current = _mv(parent, a0)
    Gj = swing(current, np.where(ok[..., None], a, current)) @ parent
    if twists:
        s = cs = total = 0.0
        for rest_sec, sec, weight in twists:
            angle, defined = _twist_angle(Gj, a, rest_sec, sec)
            w = weight * defined * ok
            s, cs, total = s + w * np.sin(angle), cs + w * np.cos(angle), total + w
        theta = np.arctan2(s, cs) * np.clip(total, 0.0, 1.0)
        if twist_share is not None:
            theta = theta * twist_share
        limits = _TWIST_LIMITS[joints]
        Gj = rotate_about(a, np.clip(theta, limits[:, 0], limits[:, 1])) @ Gj
    G[:, joints] = Gj
    R[:, joints] = _T(parent) @ Gj
    degenerate[:, joints] |= ~ok


def joint_uncertainty(confidence, degenerate=None) -> np.ndarray:
    """(P, 24) = 1 - the smallest landmark confidence behind each joint's rotation; 1 for the
    leaf joints and for degenerate joints."""
    c = np.asarray(confidence, np.float64)
    unc = 1.0 - c[:, _SUPPORT_INDEX].min(-1)
    if degenerate is not None:
        unc = np.where(degenerate, 1.0, unc)
    unc[:, list(LEAF_JOINTS)] = 1.0
    return np.clip(unc, 0.0, 1.0)
