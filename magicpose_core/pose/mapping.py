"""Other detectors' keypoint layouts -> the OpenPose layout of ``keypoints.Person`` (docs/pose.md §4).

Tables (facts, with sources):
- MediaPipe Pose-33 -> OpenPose-18: docs/pose.md §4.1 (MediaPipe pose landmark model card; neck = shoulder midpoint).
- MediaPipe FaceMesh-468/478 -> iBUG-68: LatentSync (ByteDance, Apache-2.0) ``landmark_points_68``, validated in
  docs/pose.md §4.2 against dlib (3.6-4.2 % NME); pupils = iris centres 468 (subject's right) and 473 (left).
- COCO-17 / COCO-WholeBody-133 (DWPose, RTMW) -> OpenPose-18/70/21: docs/pose.md §4.3 (DWPose ``wholebody.py`` neck
  rule and index map, behaviour only).

All functions take pixel coordinates plus per-point scores and return a ``Person`` with the raw scores kept
(score 0 only for points that are absent or outside the image); detectors apply their own threshold after.

MediaPipe's pose model always predicts all 33 points, and on upper-body framing inside a larger frame (a
letterboxed or padded half-body shot, exactly TikTok's framing) it invents a lower body with visibility up to 1.0:
hips over the torso and knees *above* the hips (measured on the astronaut photo padded below or around: both
knees 0.1-0.45 torso lengths above their hips, hips at visibility 1.0). ``drop_invented_legs`` removes what cannot
be a standing, walking or dancing person: a knee that is not below its hip, an ankle that is not below its knee,
and the hips too when every visible knee was folded up (the whole lower body was made up). The price: a knee
lifted above the hip (a high kick) is not drawn for that frame.
"""
from __future__ import annotations

import numpy as np

from .keypoints import BODY_POINTS, FACE_POINTS, HAND_POINTS, Person, add_pupils

NECK = 1

# OpenPose-18 slot -> MediaPipe Pose-33 index (the neck, slot 1, is the midpoint of 11 and 12)
MP_POSE_TO_OPENPOSE = [0, -1, 12, 14, 16, 11, 13, 15, 24, 26, 28, 23, 25, 27, 5, 2, 8, 7]
MP_LEFT_SHOULDER, MP_RIGHT_SHOULDER = 11, 12

# iBUG-68 index -> MediaPipe FaceMesh vertex (LatentSync, Apache-2.0; docs/pose.md §4.2)
FACEMESH_TO_IBUG68 = [
    162, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 323, 454, 389,  # jaw 0-16
    71, 63, 105, 66, 107, 336, 296, 334, 293, 301,                                      # brows 17-26
    168, 197, 5, 4, 75, 97, 2, 326, 305,                                                # nose 27-35
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,                          # eyes 36-47
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,                                # outer lip 48-59
    78, 82, 13, 312, 308, 317, 14, 87,                                                  # inner lip 60-67
]
MP_IRIS_RIGHT, MP_IRIS_LEFT = 468, 473  # OpenPose face 68 (right pupil), 69 (left pupil); refine mode only

# OpenPose-18 slot -> COCO-17 index (slot 1, the neck, is the mean of COCO 5 and 6)
COCO17_TO_OPENPOSE = [0, -1, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3]
COCO_LEFT_SHOULDER, COCO_RIGHT_SHOULDER = 5, 6
# COCO-WholeBody-133 ranges (docs/pose.md §4.3): 0-16 body, 17-22 feet (not drawn), 23-90 face-68, 91-111 left hand,
# 112-132 right hand
WB_FACE = slice(23, 91)
WB_LEFT_HAND = slice(91, 112)
WB_RIGHT_HAND = slice(112, 133)


def _inside(xy: np.ndarray, width: int, height: int) -> np.ndarray:
    """Points inside the image [0, W) x [0, H)."""
    return (xy[:, 0] >= 0) & (xy[:, 0] < width) & (xy[:, 1] >= 0) & (xy[:, 1] < height)


def _pack(xy: np.ndarray, score: np.ndarray, width: int, height: int) -> np.ndarray:
    """(N, 2) pixels + (N,) scores -> (N, 3); points outside the image or with score <= 0 become (0, 0, 0)."""
    pts = np.concatenate([xy, score[:, None]], axis=1).astype(np.float64)  # (N, 2) + (N, 1) -> (N, 3)
    pts[~(_inside(xy, width, height) & (score > 0))] = 0.0
    return pts


def _body18(xy: np.ndarray, score: np.ndarray, table: list[int], left_sh: int, right_sh: int,
            width: int, height: int) -> np.ndarray:
    """Pick the OpenPose-18 body from a source layout; neck = shoulder midpoint, score = min of the two."""
    src = _pack(xy, score, width, height)
    body = np.zeros((BODY_POINTS, 3))
    for op, i in enumerate(table):
        if i >= 0:
            body[op] = src[i]
    ls, rs = src[left_sh], src[right_sh]
    if ls[2] > 0 and rs[2] > 0:
        body[NECK] = [(ls[0] + rs[0]) / 2, (ls[1] + rs[1]) / 2, min(ls[2], rs[2])]
    return body


MP_VISIBILITY = 0.5      # MediaPipe's visibility threshold for the plausibility checks (docs/pose.md §4.1)
KNEE_DROP = 0.05         # a knee must lie at least this many torso lengths below its hip (an ankle below its knee)
LEGS = ((8, 9, 10), (11, 12, 13))  # OpenPose (hip, knee, ankle): right, left


def drop_invented_legs(body: np.ndarray, threshold: float = MP_VISIBILITY) -> np.ndarray:
    """An (18, 3) OpenPose body (pixels, scores) -> a copy without implausible lower-body points.

    Points count as visible from ``threshold``; the torso length is neck -> mean of the visible hips. A visible knee
    that is not ``KNEE_DROP`` torso lengths below its visible hip is dropped with its ankle; an ankle not below
    its knee is dropped; when knees were visible and every one of them was folded up, the hips are dropped too.
    """
    b = np.array(body, dtype=np.float64)  # (18, 3)
    on = b[:, 2] >= threshold
    hips = [leg[0] for leg in LEGS if on[leg[0]]]
    if not (on[NECK] and hips):
        return b
    torso = float(np.linalg.norm(b[NECK, :2] - b[hips, :2].mean(axis=0)))
    if torso <= 1e-6:
        return b
    folded = plausible = 0
    for hip, knee, ankle in LEGS:
        if on[hip] and on[knee]:
            if b[knee, 1] - b[hip, 1] < KNEE_DROP * torso:
                b[[knee, ankle]] = 0.0
                folded += 1
                continue
            plausible += 1
        if on[ankle] and b[knee, 2] >= threshold and b[ankle, 1] - b[knee, 1] < KNEE_DROP * torso:
            b[ankle] = 0.0
    if folded and not plausible:
        b[[leg[0] for leg in LEGS]] = 0.0
    return b


def mediapipe_to_person(width: int, height: int, pose: np.ndarray | None = None, face: np.ndarray | None = None,
                        left_hand: np.ndarray | None = None, right_hand: np.ndarray | None = None) -> Person | None:
    """MediaPipe Holistic landmarks (normalised 0-1, as MediaPipe returns them) -> Person in pixels.

    ``pose``: (33, 3) x, y, visibility. ``face``: (478, 2+) with iris (refine mode) or (468, 2+) (pupils then
    from the eye contours). ``left_hand``/``right_hand``: (21, 2+), subject's sides (Holistic's convention).
    Face and hand points get score 1 (MediaPipe gives none per point); points outside the image are missing.
    Returns None when nothing was detected.
    """
    if pose is None and face is None and left_hand is None and right_hand is None:
        return None
    scale = np.array([width, height], dtype=np.float64)
    body = np.zeros((BODY_POINTS, 3))
    if pose is not None:
        pose = np.asarray(pose, dtype=np.float64)
        if pose.shape != (33, 3):
            raise ValueError(f"MediaPipe pose landmarks must have shape (33, 3) (x, y, visibility), got {pose.shape}")
        body = drop_invented_legs(_body18(pose[:, :2] * scale, pose[:, 2], MP_POSE_TO_OPENPOSE, MP_LEFT_SHOULDER,
                                          MP_RIGHT_SHOULDER, width, height))
    face70 = None
    if face is not None:
        face = np.asarray(face, dtype=np.float64)
        if face.ndim != 2 or face.shape[0] not in (468, 478) or face.shape[1] < 2:
            raise ValueError(f"MediaPipe face landmarks must have shape (468 or 478, 2+), got {face.shape}")
        xy = face[FACEMESH_TO_IBUG68, :2] * scale  # (68, 2)
        face70 = add_pupils(_pack(xy, np.ones(len(xy)), width, height))
        if face.shape[0] == 478:
            iris = face[[MP_IRIS_RIGHT, MP_IRIS_LEFT], :2] * scale  # (2, 2)
            face70[68:70] = _pack(iris, np.ones(2), width, height)
    hands = []
    for name, hand in (("left", left_hand), ("right", right_hand)):
        if hand is None:
            hands.append(None)
            continue
        hand = np.asarray(hand, dtype=np.float64)
        if hand.ndim != 2 or hand.shape[0] != HAND_POINTS or hand.shape[1] < 2:
            raise ValueError(f"MediaPipe {name} hand landmarks must have shape (21, 2+), got {hand.shape}")
        hands.append(_pack(hand[:, :2] * scale, np.ones(HAND_POINTS), width, height))
    return Person(body=body, face=face70, left_hand=hands[0], right_hand=hands[1])


def coco17_to_body18(xy: np.ndarray, score: np.ndarray, width: int, height: int) -> np.ndarray:
    """COCO-17 (pixels (17, 2), scores (17,)) -> OpenPose-18 body (18, 3)."""
    xy, score = np.asarray(xy, dtype=np.float64), np.asarray(score, dtype=np.float64)
    if xy.shape[0] < 17 or xy.shape[1:] != (2,) or score.shape[0] != xy.shape[0]:
        raise ValueError(f"COCO keypoints must be (17+, 2) with matching scores, got {xy.shape} and {score.shape}")
    return _body18(xy[:17], score[:17], COCO17_TO_OPENPOSE, COCO_LEFT_SHOULDER, COCO_RIGHT_SHOULDER, width, height)


def coco_wholebody_to_person(xy: np.ndarray, score: np.ndarray, width: int, height: int) -> Person:
    """COCO-WholeBody-133 (DWPose/RTMW output: pixels (133, 2), scores (133,)) -> Person.

    The face has 68 points; pupils are synthesised as eye-contour centroids (docs/pose.md §1.5). Feet are dropped
    (openpose_full does not draw them).
    """
    xy, score = np.asarray(xy, dtype=np.float64), np.asarray(score, dtype=np.float64)
    if xy.shape != (133, 2) or score.shape != (133,):
        raise ValueError(f"COCO-WholeBody keypoints must be (133, 2) with (133,) scores, got {xy.shape}, "
                         f"{score.shape}")
    body = coco17_to_body18(xy[:17], score[:17], width, height)
    face = add_pupils(_pack(xy[WB_FACE], score[WB_FACE], width, height))
    assert face.shape == (FACE_POINTS, 3)
    lh = _pack(xy[WB_LEFT_HAND], score[WB_LEFT_HAND], width, height)
    rh = _pack(xy[WB_RIGHT_HAND], score[WB_RIGHT_HAND], width, height)
    return Person(body=body, face=face, left_hand=lh, right_hand=rh)
