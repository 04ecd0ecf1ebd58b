"""VMC protocol sink: OSC over UDP for VTuber tools and game engines (architecture.md §7).

Default target 127.0.0.1:39539 (the VMC "performer to marionette" port). One OSC bundle per
frame with:

    /VMC/Ext/Root/Pos  "root" px py pz qx qy qz qw   (avatar position, identity rotation)
    /VMC/Ext/Bone/Pos  <name> px py pz qx qy qz qw   (one per mapped bone, local transform)
    /VMC/Ext/T         <float seconds since the sink opened>
    /VMC/Ext/OK        1

Joint mapping (SMPL joint -> Unity HumanBodyBones):

    pelvis Hips          spine1 Spine          spine2 Chest          spine3 UpperChest
    neck Neck            head Head
    left_hip LeftUpperLeg    left_knee LeftLowerLeg    left_ankle LeftFoot    left_foot LeftToes
    right_hip RightUpperLeg  right_knee RightLowerLeg  right_ankle RightFoot  right_foot RightToes
    left_collar LeftShoulder    left_shoulder LeftUpperArm    left_elbow LeftLowerArm
    left_wrist LeftHand         (and the same for right_*)
    SMPL's left_hand/right_hand joints (finger bend) have no HumanBodyBones bone: not sent.

Bone rotations are SMPL's local (parent-relative) rotations. SMPL's rest pose is a T-pose
with every bone frame aligned to the body frame, which is what a normalised humanoid rig
(e.g. VRM) expects: identity = T-pose.

Coordinate conversion. POCO's root rotation lives in the camera frame (x right, y down,
z forward), so it is first turned into a y-up frame with F = diag(1, -1, -1) (180 degrees
about X, as the seed relay does); a person facing the camera then has an identity root,
facing +z. SMPL's body frame is right-handed (x = the person's left, y up, z = facing);
Unity is left-handed (x right, y up, z forward) with avatars facing +z, so the conversion
is the mirror M = diag(-1, 1, 1): positions (x, y, z) -> (-x, y, z), and a rotation R ->
M R M, which for a quaternion (x, y, z, w) is (x, -y, -z, w) (the axis is mirrored as a
pseudo-vector and the angle changes sign). SMPL's left side (+x) lands on Unity's -x, the
avatar's left, so Left* bones stay Left*. Example: the right elbow bent +90 degrees about
SMPL's y axis moves the forearm from -x (pointing right) to +z (forward); in Unity the
RightLowerArm quaternion is (0, -0.7071, 0, 0.7071), which turns the rest forearm
direction +x into +z (forward) as well.

Root position (`translation="full"`, default): the body origin in the y-up frame, the
same rigid flip as the rotation (F @ transl + (F - I) @ J0, see `pipeline.sinks.remi`),
then mirrored; `"none"` keeps the avatar at the origin. Bone positions are the rest
skeleton offsets (mirrored); receivers normally use only the rotations. A frame where the
followed person is missing sends only /VMC/Ext/T and /VMC/Ext/OK (`on_empty="hold"`, the
avatar keeps its last pose) or a T-pose (`on_empty="tpose"`).
"""
from __future__ import annotations

import logging
import socket
import struct
import time

import numpy as np

from pipeline.pose.frame import Person, PosesFrame
from pipeline.pose.rotations import FLIP_YZ, axis_angle_to_quat, axis_angle_to_rotmat, rotmat_to_quat
from pipeline.sinks.base import Sink, SinkError
from pipeline.sinks.person_select import check_policy, choose_person
from pipeline.pose.skeleton import DEFAULT_REST_JOINTS, rest_offsets

log = logging.getLogger(__name__)

BONE_NAMES = {
    0: "Hips", 1: "LeftUpperLeg", 2: "RightUpperLeg", 3: "Spine", 4: "LeftLowerLeg",
    5: "RightLowerLeg", 6: "Chest", 7: "LeftFoot", 8: "RightFoot", 9: "UpperChest",
    10: "LeftToes", 11: "RightToes", 12: "Neck", 13: "LeftShoulder", 14: "RightShoulder",
    15: "Head", 16: "LeftUpperArm", 17: "RightUpperArm", 18: "LeftLowerArm",
    19: "RightLowerArm", 20: "LeftHand", 21: "RightHand",
}
_MIRROR_Q = np.array([1.0, -1.0, -1.0, 1.0])
_MIRROR_P = np.array([-1.0, 1.0, 1.0])
TRANSLATIONS = ("full", "none")
ON_EMPTY = ("hold", "tpose")


def smpl_to_unity_quat(q) -> np.ndarray:
    """Mirror x: a right-handed SMPL/y-up quaternion (x, y, z, w) -> Unity's (x, -y, -z, w)."""
    return np.asarray(q, np.float64) * _MIRROR_Q


def smpl_to_unity_position(p) -> np.ndarray:
    return np.asarray(p, np.float64) * _MIRROR_P


def vmc_bones(person: Person | None, translation: str = "full", rest_joints=None):
    """(root_position (3,), {bone name: (local position (3,), quaternion xyzw (4,))}) in
    Unity coordinates; `person=None` gives the T-pose at the origin."""
    offsets = rest_offsets(rest_joints)
    if person is None:
        quats = np.tile([0.0, 0.0, 0.0, 1.0], (24, 1))
        root_pos = np.zeros(3)
    else:
        quats = axis_angle_to_quat(np.asarray(person.body_pose, np.float64).reshape(23, 3))
        root = rotmat_to_quat(FLIP_YZ @ axis_angle_to_rotmat(np.asarray(person.global_orient, np.float64)))
        quats = np.concatenate([root[None], quats])
        if translation == "full":
            j0 = DEFAULT_REST_JOINTS[0] if rest_joints is None else np.asarray(rest_joints, np.float64)[0]
            root_pos = FLIP_YZ @ np.asarray(person.transl, np.float64) + (FLIP_YZ - np.eye(3)) @ j0
        else:
            root_pos = np.zeros(3)
    quats = smpl_to_unity_quat(quats)
    positions = smpl_to_unity_position(offsets)
    bones = {name: (positions[j], quats[j]) for j, name in BONE_NAMES.items()}
    return smpl_to_unity_position(root_pos), bones


# --- OSC 1.0 encoding ----------------------------------------------------------------------
# Written here rather than with python-osc's builders, which cost ~3 ms per 25-message frame
# on this CPU; the test decodes our bundles with python-osc's server.
_IMMEDIATELY = (1).to_bytes(8, "big")  # OSC time tag 1 = "immediately"


def _osc_string(text: str) -> bytes:
    raw = text.encode("utf-8") + b"\0"
    return raw + b"\0" * (-len(raw) % 4)


def osc_message(address: str, *args) -> bytes:
    tags, data = [","], []
    for a in args:
        if isinstance(a, str):
            tags.append("s")
            data.append(_osc_string(a))
        elif isinstance(a, (bool, np.bool_)):
            raise TypeError("OSC booleans are not used by VMC")
        elif isinstance(a, (int, np.integer)):
            tags.append("i")
            data.append(struct.pack(">i", int(a)))
        else:
            tags.append("f")
            data.append(struct.pack(">f", float(a)))
    return _osc_string(address) + _osc_string("".join(tags)) + b"".join(data)


def osc_bundle(messages) -> bytes:
    parts = [_osc_string("#bundle"), _IMMEDIATELY]
    for m in messages:
        parts.append(struct.pack(">i", len(m)))
        parts.append(m)
    return b"".join(parts)


class VmcSink(Sink):
    name = "vmc"

    def __init__(self, host: str = "127.0.0.1", port: int = 39539, translation: str = "full",
                 person: str = "largest", track_id: int | None = None, on_empty: str = "hold",
                 rest_joints=None, smoothing: str = "off"):
        self.host, self.port = host, port
        self.translation, self.person, self.track_id = translation, person, track_id
        self.on_empty = on_empty
        self.rest_joints = rest_joints
        self._smoothing = smoothing
        self._smoother = None
        self._sock: socket.socket | None = None
        self._addr = None
        self._t0 = None
        self._counts = dict(sent=0, dropped=0, errors=0, empty=0)

    def open(self) -> None:
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 1 <= self.port <= 65535:
            raise SinkError(f"vmc: port must be an integer in 1..65535, got {self.port!r} (set sinks.vmc.port)")
        if self.translation not in TRANSLATIONS:
            raise SinkError(f"vmc: translation must be one of {TRANSLATIONS}, got {self.translation!r}")
        if self.on_empty not in ON_EMPTY:
            raise SinkError(f"vmc: on_empty must be one of {ON_EMPTY}, got {self.on_empty!r}")
        try:
            check_policy(self.person, self.track_id)
            if self.rest_joints is not None:
                from pipeline.pose.skeleton import check_rest_joints
                self.rest_joints = check_rest_joints(self.rest_joints)
            from pipeline.pose.smoothing import Smoother
            self._smoother = Smoother(self._smoothing)
        except ValueError as e:
            raise SinkError(f"vmc: {e}") from None
        try:
            family, _, _, _, addr = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)[0]
        except (OSError, UnicodeError) as e:
            raise SinkError(f"vmc: cannot resolve host {self.host!r} ({e}); set sinks.vmc.host") from None
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self._sock.setblocking(False)  # a full socket buffer drops the frame instead of waiting
        self._addr = addr
        self._t0 = time.monotonic()
        log.info("vmc sink: sending VMC/OSC to %s:%d", self.host, self.port)

    def set(self, key: str, value) -> None:
        if key == "smoothing" and self._smoother is not None:
            try:
                self._smoother.set("smoothing", str(value))
            except ValueError as e:
                raise SinkError(f"vmc: {e}") from None
            self._smoothing = str(value)
        elif key == "translation" and value in TRANSLATIONS:
            self.translation = value
        elif key == "track_id":
            self.track_id = None if value in (None, "", "none", "None") else int(value)
        else:
            raise SinkError(f"vmc: cannot set {key}={value!r}; live settings: smoothing=off|moderate|smooth, "
                            f"translation=full|none, track_id=<int>|none")

    def build_bundle(self, frame: PosesFrame) -> bytes:
        if self._smoother is not None and self._smoothing != "off":
            frame = self._smoother.apply(frame)
        person = choose_person(frame, self.person, self.track_id)
        messages = []
        if person is not None or self.on_empty == "tpose":
            root_pos, bones = vmc_bones(person, self.translation, self.rest_joints)
            messages.append(osc_message("/VMC/Ext/Root/Pos", "root", *root_pos, 0.0, 0.0, 0.0, 1.0))
            for name, (pos, q) in bones.items():
                messages.append(osc_message("/VMC/Ext/Bone/Pos", name, *pos, *q))
        if person is None:
            self._counts["empty"] += 1
        t = time.monotonic() - (self._t0 if self._t0 is not None else time.monotonic())
        messages.append(osc_message("/VMC/Ext/T", float(t)))
        messages.append(osc_message("/VMC/Ext/OK", 1))
        return osc_bundle(messages)

    def send(self, frame: PosesFrame, image=None) -> None:
        if self._sock is None:
            raise SinkError("vmc: send() before open()")
        dgram = self.build_bundle(frame)
        try:
            # UDP to an absent receiver is silently lost (or refused); never raise into the publisher.
            self._sock.sendto(dgram, self._addr)
            self._counts["sent"] += 1
        except BlockingIOError:
            self._counts["dropped"] += 1
        except OSError as e:
            self._counts["errors"] += 1
            if self._counts["errors"] == 1:
                log.warning("vmc sink: send to %s:%d failed (%s); will keep trying", self.host, self.port, e)

    def stats(self) -> dict:
        out = dict(self._counts)
        if self._smoother is not None:
            out.update({f"smoothing_{k}": v for k, v in self._smoother.stats().items()})
        return out

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
