"""MediaPipe Holistic detector (pose 33 + face 478 + two hands), offline: the models ship in the wheel.

MediaPipe 0.10.21's legacy ``solutions`` (removed in 0.10.30) contain only ``pose_landmark_full``, so
``model_complexity=1`` is pinned (0 or 2 try to download, pose.md §3.1). ``refine_face_landmarks=True`` adds
the iris centres used as OpenPose pupils. Holistic's left hand is the subject's left hand. In ``video`` mode
Holistic tracks between frames (re-detecting only on loss) and smooths its landmarks: faster and far less
jittery on video (pose.md §6.1); ``reset()`` starts a new sequence. Landmark mapping: mapping.py.
MediaPipe and its models: Apache-2.0.
"""
from __future__ import annotations

import logging

import numpy as np

from .detect import MEDIAPIPE_INSTALL, BaseDetector, as_rgb_uint8
from .keypoints import PoseFrame
from .mapping import mediapipe_to_person

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


class MediaPipeDetector(BaseDetector):
    """Single-person MediaPipe Holistic; body scores are MediaPipe visibilities (threshold 0.5, pose.md §4.1)."""

    name = "mediapipe"
    threshold = 0.5

    def __init__(self, video: bool = False) -> None:
        holistic = _holistic_module()
        self.video = video
        self._holistic = holistic.Holistic(static_image_mode=not video, model_complexity=1,
                                           smooth_landmarks=video, refine_face_landmarks=True,
                                           enable_segmentation=False)

    def reset(self) -> None:
        if self.video:
            self._holistic.reset()

    def close(self) -> None:
        self._holistic.close()

    def detect_raw(self, rgb: np.ndarray) -> PoseFrame:
        rgb = as_rgb_uint8(rgb)
        h, w = rgb.shape[:2]
        res = self._holistic.process(rgb)
        person = mediapipe_to_person(w, h, pose=_landmarks(res.pose_landmarks, True),
                                     face=_landmarks(res.face_landmarks),
                                     left_hand=_landmarks(res.left_hand_landmarks),
                                     right_hand=_landmarks(res.right_hand_landmarks))
        return PoseFrame(w, h, [] if person is None or person.is_empty else [person])
