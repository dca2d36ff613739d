"""MediaPipe Holistic detector (pose 33 + face 478 + two hands), offline: the models ship in the wheel.

MediaPipe 0.10.21's legacy ``solutions`` (removed in 0.10.30) contain only ``pose_landmark_full``, so
``model_complexity=1`` is pinned (0 or 2 try to download, docs/pose.md §3.1). ``refine_face_landmarks=True`` adds
the iris centres used as OpenPose pupils. Holistic's left hand is the subject's left hand. In ``video`` mode
Holistic tracks between frames (re-detecting only on loss) and smooths its landmarks: faster and far less
jittery on video (docs/pose.md §6.1); ``reset()`` starts a new sequence. Landmark mapping: mapping.py (which also
drops the lower body MediaPipe invents on half-body framing).

Hands: Holistic finds hands only from its own pose-based crops and misses most hands in real photos (none on the
astronaut, Grace Hopper or the full-body photo of the ComfyUI frontend package with a raised, clearly visible
hand). When it misses a hand whose wrist and elbow are visible, MediaPipe Hands runs on a square crop around the
wrist (OpenPose's hand box: centre wrist + 0.33 (wrist - elbow), side 1.5 x max(wrist-elbow, 0.9 elbow-shoulder),
then 2 x), scaled to 256 px; a hand is taken only when its wrist lies within 0.35 box sides of the body's wrist,
and it is assigned to that arm's side (the Hands handedness label is not used: it assumes mirrored images).
MediaPipe and its models: Apache-2.0.
"""
from __future__ import annotations

import logging

import cv2
import numpy as np

from .base import MEDIAPIPE_INSTALL, BaseDetector, as_rgb_uint8
from .keypoints import PoseFrame
from .mapping import MP_VISIBILITY, mediapipe_to_person

log = logging.getLogger("MagicPose")


def _holistic_module():
    try:
        import mediapipe as mp
    except ImportError as e:
        raise RuntimeError(f"the mediapipe pose detector needs the optional package mediapipe 0.10.21 "
                           f"({e}); install it with: {MEDIAPIPE_INSTALL}  (or pick the dwpose detector)") from None
    solutions = getattr(mp, "solutions", None)
    if solutions is None or not hasattr(solutions, "holistic"):
        raise RuntimeError(f"mediapipe {getattr(mp, '__version__', '?')} has no legacy solutions (removed in "
                           f"0.10.30); install the supported version with: {MEDIAPIPE_INSTALL}")
    return solutions.holistic


def _landmarks(lms, with_visibility: bool = False) -> np.ndarray | None:
    if lms is None:
        return None
    if with_visibility:
        return np.array([[p.x, p.y, p.visibility] for p in lms.landmark], dtype=np.float64)  # (33, 3)
    return np.array([[p.x, p.y] for p in lms.landmark], dtype=np.float64)  # (N, 2)


HAND_BOX_SCALES = (1.5, 2.0)   # hand crop side, times OpenPose's hand-box rule
HAND_CROP_PX = 256             # the crop is scaled so its long side has this many pixels
HAND_MATCH = 0.35              # the detected wrist must lie within this many box sides of the body wrist
# MediaPipe Pose-33 (shoulder, elbow, wrist) per subject side
MP_ARMS = {"left": (11, 13, 15), "right": (12, 14, 16)}


def hand_box(shoulder: np.ndarray, elbow: np.ndarray, wrist: np.ndarray, scale: float) -> tuple[np.ndarray, float]:
    """(centre (2,), side) of the square hand crop in pixels (OpenPose handDetector rule, times ``scale``)."""
    centre = wrist + 0.33 * (wrist - elbow)
    side = scale * max(float(np.linalg.norm(wrist - elbow)), 0.9 * float(np.linalg.norm(elbow - shoulder)))
    return centre, side


def find_hand(hands, rgb: np.ndarray, shoulder: np.ndarray, elbow: np.ndarray,
              wrist: np.ndarray) -> np.ndarray | None:
    """A hand next to ``wrist`` (pixels) found by MediaPipe Hands on wrist crops: (21, 2) normalised to the image,
    or None."""
    h, w = rgb.shape[:2]
    for scale in HAND_BOX_SCALES:
        centre, side = hand_box(shoulder, elbow, wrist, scale)
        x0, y0 = (int(max(0.0, v)) for v in centre - side / 2)
        x1, y1 = int(min(w, centre[0] + side / 2)), int(min(h, centre[1] + side / 2))
        if x1 - x0 < 8 or y1 - y0 < 8:
            continue
        crop = rgb[y0:y1, x0:x1]
        f = HAND_CROP_PX / max(crop.shape[:2])
        crop = cv2.resize(crop, (max(1, round(crop.shape[1] * f)), max(1, round(crop.shape[0] * f))),
                          interpolation=cv2.INTER_LINEAR if f > 1 else cv2.INTER_AREA)
        res = hands.process(np.ascontiguousarray(crop))
        best, best_d = None, HAND_MATCH * side
        for lms in res.multi_hand_landmarks or []:
            xy = _landmarks(lms) * [x1 - x0, y1 - y0] + [x0, y0]  # (21, 2) crop-normalised -> image pixels
            d = float(np.linalg.norm(xy[0] - wrist))
            if d <= best_d:
                best, best_d = xy, d
        if best is not None:
            return best / [w, h]
    return None


class MediaPipeDetector(BaseDetector):
    """Single-person MediaPipe Holistic; body scores are MediaPipe visibilities (threshold 0.5, docs/pose.md §4.1)."""

    name = "mediapipe"
    threshold = 0.5

    def __init__(self, video: bool = False, hand_crops: bool = True) -> None:
        holistic = _holistic_module()
        self.video = video
        self.hand_crops = hand_crops
        self._hands = None
        self._holistic = holistic.Holistic(static_image_mode=not video, model_complexity=1,
                                           smooth_landmarks=video, refine_face_landmarks=True,
                                           enable_segmentation=False)

    def reset(self) -> None:
        if self.video:
            self._holistic.reset()

    def close(self) -> None:
        self._holistic.close()
        if self._hands is not None:
            self._hands.close()

    def _missing_hands(self, rgb: np.ndarray, pose: np.ndarray | None, found: dict) -> dict:
        """Hands Holistic missed, searched on wrist crops (module docstring)."""
        if pose is None:
            return found
        h, w = rgb.shape[:2]
        px = pose[:, :2] * [w, h]  # (33, 2)
        for side, (s, e, wr) in MP_ARMS.items():
            inside = 0 <= px[wr, 0] < w and 0 <= px[wr, 1] < h
            if found[side] is not None or not inside or (pose[[e, wr], 2] < MP_VISIBILITY).any():
                continue
            if self._hands is None:
                import mediapipe as mp

                self._hands = mp.solutions.hands.Hands(static_image_mode=True, max_num_hands=2,
                                                       model_complexity=1, min_detection_confidence=0.5)
            found[side] = find_hand(self._hands, rgb, px[s], px[e], px[wr])
        return found

    def detect_raw(self, rgb: np.ndarray) -> PoseFrame:
        rgb = as_rgb_uint8(rgb)
        h, w = rgb.shape[:2]
        res = self._holistic.process(rgb)
        pose = _landmarks(res.pose_landmarks, True)
        hands = {"left": _landmarks(res.left_hand_landmarks), "right": _landmarks(res.right_hand_landmarks)}
        if self.hand_crops:
            hands = self._missing_hands(rgb, pose, hands)
        person = mediapipe_to_person(w, h, pose=pose, face=_landmarks(res.face_landmarks),
                                     left_hand=hands["left"], right_hand=hands["right"])
        return PoseFrame(w, h, [] if person is None or person.is_empty else [person])
