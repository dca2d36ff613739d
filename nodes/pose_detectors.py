"""Glue between ComfyUI and the pose detectors: weight folders through folder_paths, cached instances,
IMAGE batches in, PoseFrames out. Used by ExtractPose and LoadReference.

Weights live under the `magicpose` model folder (so extra_model_paths.yaml entries work):
`models/magicpose/dwpose/` (yolox_l.onnx, dw-ll_ucoco_384.onnx) and `models/magicpose/openpose/`
(body_pose_model.pth, hand_pose_model.pth, facenet.pth). MediaPipe needs no weights (they ship in its wheel).
"""
from __future__ import annotations

import logging
import os
from typing import Callable

import comfy.model_management
import folder_paths
import torch

from ..magicpose_core.images import iter_uint8
from ..magicpose_core.pose.detect import DETECTORS, WEIGHTS, PoseDetector, create_detector
from ..magicpose_core.pose.keypoints import PoseFrame

log = logging.getLogger("MagicPose")

DETECTOR_CHOICES = list(DETECTORS)
MODEL_FOLDER = "magicpose"
_CACHE: dict[tuple, PoseDetector] = {}


def weights_dir(detector: str) -> str | None:
    """The folder holding a detector's weights: the first `<magicpose folder>/<detector>/` that has every file,
    else the default one (where the error message points and downloads go). None for mediapipe."""
    if detector not in WEIGHTS:
        return None
    files = WEIGHTS[detector][1]
    if MODEL_FOLDER in folder_paths.folder_names_and_paths:
        bases = list(folder_paths.get_folder_paths(MODEL_FOLDER))
    else:
        bases = []
    default = os.path.join(folder_paths.models_dir, MODEL_FOLDER)
    if default not in bases:
        bases.append(default)
    for base in bases:
        d = os.path.join(base, detector)
        if all(os.path.isfile(os.path.join(d, f)) for f in files):
            return d
    return os.path.join(bases[0], detector)


def get_detector(detector: str, allow_download: bool = False, video: bool = False) -> PoseDetector:
    """A cached detector instance, keyed by (name, weights folder, video mode)."""
    if detector not in DETECTORS:
        raise ValueError(f"unknown pose detector {detector!r}; choose one of {', '.join(DETECTORS)}")
    wdir = weights_dir(detector)
    video = video and detector == "mediapipe"  # only MediaPipe tracks between frames
    key = (detector, wdir, video)
    if key not in _CACHE:
        device = None
        if detector == "openpose":
            device = str(comfy.model_management.get_torch_device())
        _CACHE[key] = create_detector(detector, weights_dir=wdir, allow_download=allow_download, video=video,
                                      device=device)
    return _CACHE[key]


def clear_cache() -> None:
    _CACHE.clear()


def detect_frames(images: torch.Tensor, detector: str, allow_download: bool = False, raw: bool = False,
                  video: bool = False, on_frame: Callable[[int], None] | None = None) -> list[PoseFrame]:
    """IMAGE (B, H, W, C) -> one PoseFrame per image, in that image's pixels. Interruptible between frames.

    ``raw`` keeps sub-threshold scores (for smoothing hysteresis); ``video`` lets MediaPipe track.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"expected an IMAGE batch (B, H, W, 3), got {shape}")
    det = get_detector(detector, allow_download, video)
    det.reset()
    out = []
    for i, rgb in enumerate(iter_uint8(images)):
        comfy.model_management.throw_exception_if_processing_interrupted()
        out.append(det.detect_raw(rgb) if raw else det(rgb))
        if on_frame is not None:
            on_frame(i)
    return out


def detect_pose(images: torch.Tensor, detector: str = "mediapipe", allow_download: bool = False) -> list[PoseFrame]:
    """Public helper (LoadReference): IMAGE batch -> PoseFrames in each image's pixels, thresholded."""
    return detect_frames(images, detector, allow_download)
