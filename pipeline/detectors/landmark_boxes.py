"""Person boxes that fit the visible body, from MediaPipe's pose landmark model.

BlazePose's person detector gives 4 keypoints, not the body's extent; a box grown from them
by fixed ratios fits people of the proportions it was tuned on and misses others (a man seen
from the waist up, a close-up, a wide stance). MediaPipe's own pipeline hands each detection
to its landmark model; so does this stage:

- region of interest as MediaPipe builds it: a square centred on the mid-hip keypoint, side
  2 x body radius (|kp1 - kp0|) x 1.25 (upright: people here stand or sit);
- the model's 33 landmarks; those with visibility and presence >= `min_probability` that lie
  inside the frame outline what is seen of the person;
- each landmark is a joint or a point on the skin's midline, not the body's outline, so it
  is grown by a radius of the body part it sits on (`PART_RADII`), in units of the person's
  own torso length in the image, and the box is the extent of these disks;
- or, with outline "mask", the box is the extent of the model's person segmentation of the
  region (probability >= 0.5): it holds hair, clothes and hands as they are;
- a region whose pose presence is below `min_presence` (MediaPipe: 0.5) holds no person.

Radii come from average adult proportions (segment lengths as fractions of stature H,
Drillis & Contini's table): torso, shoulder centre to hip centre, T ~ 0.29 H; eye to the
top of the head ~ 0.065 H ~ 0.22 T; knuckles to fingertips ~ 0.055 H ~ 0.19 T; half the
thickness of the shoulder (deltoid) and thigh ~ 0.045 H ~ 0.15 T; of the upper arm, forearm
and calf ~ 0.03 H ~ 0.1 T; ankle height ~ 0.04 H ~ 0.13 T; the heel and toe landmarks lie
on the foot's outline already (0.05 T for the sole). They are not fitted to any labels.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from pipeline.detectors.ssd_decode import BODY_SCALE, HIP

log = logging.getLogger(__name__)

ROI_SCALE = 1.25            # MediaPipe's margin around the body circle
MIN_PRESENCE = 0.5          # MediaPipe counts a pose as present from here
MIN_PROBABILITY = 0.5       # a landmark counts as seen from here (visibility and presence)
MIN_LANDMARKS = 3           # fewer seen landmarks than this: no outline, keep the keypoint box
MIN_TORSO_OF_RADIUS = 0.25  # a torso seen end-on still counts this much of the body radius
SAME_BODY = 0.35            # torso centres closer than this many torso lengths: one body (people
                            # side by side stand at least about a shoulder width, ~0.8 torso, apart)

# BlazePose's 33 landmarks -> radius in torso lengths (see the module docstring)
_HEAD = range(0, 11)                    # nose, eyes, ears, mouth
_SHOULDERS, _HIPS = (11, 12), (23, 24)
_ARMS = (13, 14, 15, 16)                # elbows, wrists
_HANDS = range(17, 23)                  # pinky, index, thumb
_KNEES, _ANKLES = (25, 26), (27, 28)
_FEET = range(29, 33)                   # heels, toes
NUM_LANDMARKS = 33
OUTLINES = ("landmarks", "mask")


def _part_radii() -> np.ndarray:
    r = np.zeros(NUM_LANDMARKS)
    for part, radius in ((_HEAD, 0.22), (_SHOULDERS, 0.15), (_HIPS, 0.15), (_ARMS, 0.10), (_HANDS, 0.19),
                         (_KNEES, 0.10), (_ANKLES, 0.13), (_FEET, 0.05)):
        r[list(part)] = radius
    return r


PART_RADII = _part_radii()


def regions_of_interest(keypoints_px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centres (K,2) and sides (K,) of MediaPipe's square landmark regions from the detector's
    keypoints (K,4,2) in frame pixels: the body circle around the mid-hip, 1.25 x its diameter."""
    kp = np.asarray(keypoints_px, np.float64).reshape(-1, 4, 2)
    radius = np.linalg.norm(kp[:, BODY_SCALE] - kp[:, HIP], axis=1)
    return kp[:, HIP].copy(), 2.0 * radius * ROI_SCALE


def region_squares(keypoints_px: np.ndarray) -> np.ndarray:
    """(K,4) the landmark regions of `regions_of_interest` as boxes x1, y1, x2, y2."""
    centres, sides = regions_of_interest(keypoints_px)
    half = (sides / 2.0)[:, None]
    return np.concatenate([centres - half, centres + half], axis=1)


def keypoints_from_anchors(anchors) -> np.ndarray:
    """Detector-style keypoints (K,4,2) from the landmark model's two region points (K,2,2),
    so a person found earlier gets the region MediaPipe itself would track them in: the points
    are the mid-hip centre and the end of the body radius, the detector's keypoints 0 and 1."""
    a = np.asarray(anchors, np.float64).reshape(-1, 2, 2)
    kp = np.zeros((len(a), 4, 2))
    kp[:, HIP], kp[:, BODY_SCALE] = a[:, 0], a[:, 1]   # the region uses only these two
    return kp


def torso_lengths(image_xy: np.ndarray, floor: np.ndarray | float = 0.0) -> np.ndarray:
    """(B,) image distance from the shoulder centre to the hip centre, at least `floor`."""
    xy = np.asarray(image_xy, np.float64)
    shoulders = xy[:, list(_SHOULDERS)].mean(axis=1)
    hips = xy[:, list(_HIPS)].mean(axis=1)
    torso = np.linalg.norm(shoulders - hips, axis=1)
    return np.maximum(np.nan_to_num(torso), floor)


def seen_landmarks(image_xy, visibility, presence, height: int, width: int,
                   min_probability: float = MIN_PROBABILITY) -> np.ndarray:
    """(B,33) bool: the landmarks that outline the person in the frame.

    Inside the frame: those the model is sure of (visibility and presence). Outside it: those
    with either probability high enough. The model gives a landmark cut off by the image border
    a low presence but a high visibility (it is not occluded), or the reverse; either way the
    body runs on to that border, and the caller clips such landmarks onto it."""
    xy = np.asarray(image_xy, np.float64)
    vis, pres = np.asarray(visibility), np.asarray(presence)
    with np.errstate(invalid="ignore"):
        inside = (xy[..., 0] >= 0) & (xy[..., 0] < width) & (xy[..., 1] >= 0) & (xy[..., 1] < height)
        sure = (vis >= min_probability) & (pres >= min_probability)
        likely = (vis >= min_probability) | (pres >= min_probability)
    return np.where(inside, sure, likely) & np.isfinite(xy).all(axis=-1)


def onto_frame(image_xy, height: int, width: int) -> np.ndarray:
    """Landmarks (B,33,2) moved onto the frame's border where they lie outside it."""
    xy = np.array(image_xy, np.float64)
    np.clip(xy[..., 0], 0, width, out=xy[..., 0])
    np.clip(xy[..., 1], 0, height, out=xy[..., 1])
    return xy


def boxes_from_landmarks(image_xy, seen, torso) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (B,4) around the seen landmarks grown by their part's radius x torso (B,), and
    (B,) whether a person had enough seen landmarks (`MIN_LANDMARKS`) for a box at all."""
    xy = np.asarray(image_xy, np.float64)
    seen = np.asarray(seen, bool)
    grow = PART_RADII[None, :] * np.asarray(torso, np.float64)[:, None]          # (B,33)
    lo = np.where(seen[..., None], xy - grow[..., None], np.inf).min(axis=1)
    hi = np.where(seen[..., None], xy + grow[..., None], -np.inf).max(axis=1)
    ok = seen.sum(axis=1) >= MIN_LANDMARKS
    boxes = np.where(ok[:, None], np.concatenate([lo, hi], axis=1), 0.0)
    return boxes.astype(np.float32), ok


def boxes_from_masks(mask_logits, centres, sides) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (B,4) in frame pixels around each crop's person segmentation (logit >= 0, i.e.
    probability >= 0.5), and (B,) whether the mask holds anybody. The crop is the square of
    side `sides` centred on `centres`, sampled on a res x res grid of pixel centres."""
    masks = np.asarray(mask_logits) >= 0.0
    b, res = masks.shape[0], masks.shape[-1]
    boxes = np.zeros((b, 4), np.float64)
    ok = masks.reshape(b, -1).any(axis=1)
    for i in np.flatnonzero(ok):
        cols = np.flatnonzero(masks[i].any(axis=0))
        rows = np.flatnonzero(masks[i].any(axis=1))
        # pixel index k covers [k, k + 1) of the crop grid
        lo = np.array([cols[0], rows[0]], np.float64)
        hi = np.array([cols[-1] + 1, rows[-1] + 1], np.float64)
        scale = float(sides[i]) / res
        origin = np.asarray(centres[i], np.float64) - float(sides[i]) / 2.0
        boxes[i] = np.concatenate([origin + lo * scale, origin + hi * scale])
    return boxes.astype(np.float32), ok


def torso_centres(image_xy) -> np.ndarray:
    """(B,2,2): the shoulder centre and the hip centre of each person's landmarks."""
    xy = np.asarray(image_xy, np.float64)
    return np.stack([xy[:, list(_SHOULDERS)].mean(axis=1), xy[:, list(_HIPS)].mean(axis=1)], axis=1)


def distinct_bodies(scores, centres, torso, same_within: float = SAME_BODY) -> np.ndarray:
    """Indices of one detection per body, best score first. Two detections are one body when
    their shoulder and hip centres (B,2,2) lie within `same_within` x the larger torso length
    (B,) of each other on average. Unlike box overlap, this keeps apart two people whose boxes
    overlap (one reaching across the other) and joins one body seen in two views."""
    centres = np.asarray(centres, np.float64)
    torso = np.asarray(torso, np.float64)
    order = np.argsort(-np.asarray(scores), kind="stable")
    keep: list[int] = []
    for i in order:
        apart = [np.linalg.norm(centres[i] - centres[j], axis=-1).mean() > same_within * max(torso[i], torso[j])
                 for j in keep]
        if all(apart):
            keep.append(int(i))
    return np.array(keep, np.int64)


def transfer_shapes(keypoint_then, fitted_then, keypoint_now) -> np.ndarray:
    """Fitted boxes (K,4) for this frame's keypoint boxes: each earlier fitted box expressed in
    its keypoint box's own coordinates (offset and size), then put on the new keypoint box."""
    then = np.asarray(keypoint_then, np.float64).reshape(-1, 4)
    now = np.asarray(keypoint_now, np.float64).reshape(-1, 4)
    size_then = np.maximum(then[:, 2:] - then[:, :2], 1e-6)
    size_now = now[:, 2:] - now[:, :2]
    rel = (np.asarray(fitted_then, np.float64).reshape(-1, 4) - np.tile(then[:, :2], 2)) / np.tile(size_then, 2)
    return (np.tile(now[:, :2], 2) + rel * np.tile(size_now, 2)).astype(np.float32)


def limit_size_change(boxes, previous, step: float) -> np.ndarray:
    """Boxes (K,4) whose width and height differ from `previous` (K,4) by at most the factor
    `step` (>= 1) either way, each about its own centre."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    prev = np.asarray(previous, np.float64).reshape(-1, 4)
    size_prev = np.maximum(prev[:, 2:] - prev[:, :2], 1e-6)
    size = np.clip(b[:, 2:] - b[:, :2], size_prev / step, size_prev * step)
    centre = (b[:, 2:] + b[:, :2]) / 2.0
    return np.concatenate([centre - size / 2.0, centre + size / 2.0], axis=1).astype(np.float32)


def covered(boxes, others, grid: int = 16) -> np.ndarray:
    """(N,) the fraction of each box (N,4) that lies inside the union of `others` (M,4),
    sampled on a grid x grid lattice of points in the box."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    others = np.asarray(others, np.float64).reshape(-1, 4)
    if not len(boxes) or not len(others):
        return np.zeros(len(boxes))
    t = (np.arange(grid) + 0.5) / grid
    xs = boxes[:, 0:1] + t * (boxes[:, 2:3] - boxes[:, 0:1])             # (N, G)
    ys = boxes[:, 1:2] + t * (boxes[:, 3:4] - boxes[:, 1:2])
    in_x = (xs[:, None, :] >= others[None, :, 0:1]) & (xs[:, None, :] < others[None, :, 2:3])   # (N, M, G)
    in_y = (ys[:, None, :] >= others[None, :, 1:2]) & (ys[:, None, :] < others[None, :, 3:4])
    inside = (in_x[:, :, None, :] & in_y[:, :, :, None]).any(axis=1)     # (N, G, G)
    return inside.reshape(len(boxes), -1).mean(axis=1)


def match_one_to_one(iou: np.ndarray, threshold: float) -> np.ndarray:
    """(N,) index of the column each row matches (greedy by IoU, each column once), -1 if none."""
    out = np.full(iou.shape[0], -1, np.int64)
    used: set[int] = set()
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        r, c = divmod(int(flat), iou.shape[1])
        if iou[r, c] < threshold:
            break
        if out[r] < 0 and c not in used:
            out[r] = c
            used.add(c)
    return out


@dataclass
class Refined:
    """The refinement of K detections."""
    boxes: np.ndarray        # (K,4) frame pixels, clipped to the frame
    person: np.ndarray       # (K,) pose presence probability
    centres: np.ndarray      # (K,2,2) shoulder and hip centres
    torso: np.ndarray        # (K,) torso length, pixels
    anchors: np.ndarray      # (K,2,2) the landmark model's region points for the next frame

    def take(self, idx) -> "Refined":
        """The rows `idx` (indices, in that order)."""
        idx = np.asarray(idx, np.int64)
        return Refined(self.boxes[idx], self.person[idx], self.centres[idx], self.torso[idx], self.anchors[idx])

    @staticmethod
    def join(parts) -> "Refined":
        return Refined(*(np.concatenate([getattr(p, f) for p in parts])
                         for f in ("boxes", "person", "centres", "torso", "anchors")))


class LandmarkRefiner:
    """Runs the landmark model on each detection's region and returns the fitted boxes."""

    def __init__(self, threads: int = 1, outline: str = "landmarks", min_presence: float = MIN_PRESENCE,
                 min_probability: float = MIN_PROBABILITY, device: str = "cpu"):
        from pipeline.models.landmarks_ik import LandmarkNetwork

        if outline not in OUTLINES:
            raise ValueError(f"outline must be one of {OUTLINES}, got {outline!r}")
        self.network = LandmarkNetwork(threads=threads, device=device)
        self.outline = outline
        self.min_presence = float(min_presence)
        self.min_probability = float(min_probability)

    def close(self) -> None:
        self.network.close()

    def __call__(self, rgb: np.ndarray, keypoints_px: np.ndarray, boxes: np.ndarray) -> Refined:
        """A fitted box where the model outlines a person, the given box where it sees too little."""
        return self.finish(self.start(rgb, keypoints_px, boxes))

    def start(self, rgb: np.ndarray, keypoints_px: np.ndarray, boxes: np.ndarray):
        """Crop the regions and start the landmark model on them (on a GPU it runs while the
        caller goes on; on the CPU it runs here); `finish` gives the Refined."""
        height, width = rgb.shape[:2]
        if not len(boxes):
            return None, height, width, boxes
        centres, sides = regions_of_interest(keypoints_px)
        launched = self.network.launch(self.network.crops(rgb, centres, sides), centres, sides)
        return launched, height, width, boxes

    def finish(self, started) -> Refined:
        launched, height, width, boxes = started
        if launched is None:
            return Refined(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 2, 2)), np.zeros(0),
                           np.zeros((0, 2, 2)))
        _, _, centres, sides = launched
        lm = self.network.finish(launched)
        torso = torso_lengths(lm.image, floor=MIN_TORSO_OF_RADIUS * sides / (2.0 * ROI_SCALE))
        if self.outline == "mask":
            fitted, ok = boxes_from_masks(lm.mask, centres, sides)
        else:
            seen = seen_landmarks(lm.image, lm.visibility, lm.presence, height, width, self.min_probability)
            fitted, ok = boxes_from_landmarks(onto_frame(lm.image, height, width), seen, torso)
        out = np.where(ok[:, None], fitted, boxes).astype(np.float32)
        np.clip(out[:, 0::2], 0, width, out=out[:, 0::2])
        np.clip(out[:, 1::2], 0, height, out=out[:, 1::2])
        return Refined(out, lm.person.astype(np.float32), torso_centres(lm.image), torso, lm.anchors)
