"""CMU OpenPose through controlnet_aux: MagicPose's own training detector (body 18, hands 21, facenet 70).

MagicDance@a515a1f misc_scripts/detect_openpose_map_tiktok.py used ControlNet 1.1's ``annotator/openpose``
(Body, Hand, Face) on full-resolution frames (docs/method.md §5.4); controlnet_aux 0.0.10's
``OpenposeDetector`` is that code. We call it (never copy it): ``from_pretrained(local_folder)`` loads
``body_pose_model.pth``, ``hand_pose_model.pth`` and ``facenet.pth`` from the folder (lllyasviel/Annotators),
and ``detect_poses(image, include_hand=True, include_face=True)`` returns 0-1 keypoints that we turn into
pixels. OpenPose marks undetected hand/face points with negative coordinates; its points have no usable
per-point score, so present points get score 1.

Licence: the CMU OpenPose models are for academic, non-commercial use only.
"""
from __future__ import annotations

import logging
import os

import numpy as np

from .base import OPENPOSE_INSTALL, BaseDetector, as_rgb_uint8
from .keypoints import BODY_POINTS, FACE_POINTS, HAND_POINTS, Person, PoseFrame

log = logging.getLogger("MagicPose")


def _points(kps, n: int, width: int, height: int) -> np.ndarray | None:
    """controlnet_aux Keypoint list (0-1, None or negative = missing) -> (n, 3) pixels."""
    if not kps:
        return None
    out = np.zeros((n, 3))
    for i, k in enumerate(list(kps)[:n]):
        if k is None:
            continue
        x, y = float(k.x), float(k.y)
        if x >= 0 and y >= 0 and np.isfinite(x) and np.isfinite(y):
            out[i] = [x * width, y * height, 1.0]
    return out


class OpenPoseDetector(BaseDetector):
    """controlnet_aux OpenposeDetector with local weights; several people per frame."""

    name = "openpose"
    threshold = 0.5  # scores are 1 (present) or 0 (missing)

    def __init__(self, weights_dir: str, device: str | None = None) -> None:
        try:
            from controlnet_aux.open_pose import OpenposeDetector
        except ImportError as e:
            raise RuntimeError(f"the openpose detector needs the optional package controlnet_aux ({e}): "
                               f"{OPENPOSE_INSTALL}, or pick the auto or dwpose detector") from None
        if not os.path.isdir(weights_dir):
            raise RuntimeError(f"OpenPose weights folder {weights_dir} does not exist")
        self._det = OpenposeDetector.from_pretrained(weights_dir)
        if device is not None:
            self._det.to(device)

    def detect_raw(self, rgb: np.ndarray) -> PoseFrame:
        rgb = as_rgb_uint8(rgb)
        h, w = rgb.shape[:2]
        people = []
        for pose in self._det.detect_poses(rgb, include_hand=True, include_face=True):
            body = _points(pose.body.keypoints, BODY_POINTS, w, h)
            p = Person(body=body if body is not None else np.zeros((BODY_POINTS, 3)),
                       face=_points(pose.face, FACE_POINTS, w, h),
                       left_hand=_points(pose.left_hand, HAND_POINTS, w, h),
                       right_hand=_points(pose.right_hand, HAND_POINTS, w, h))
            if not p.is_empty:
                people.append(p)
        return PoseFrame(w, h, people)
