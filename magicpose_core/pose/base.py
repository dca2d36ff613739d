"""What every pose detector shares, so that the backends never import the factory (detect.py).

``PoseDetector`` is the interface: calling it on an RGB uint8 (H, W, 3) image gives a ``PoseFrame`` in that
image's pixels, points below the detector's own score threshold removed. ``BaseDetector`` implements the
thresholding and input checks; ``MissingWeightsError`` names the files a backend lacks. See docs/pose.md.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from .keypoints import PoseFrame

DETECTORS = ("mediapipe", "dwpose", "openpose")
AUTO = "auto"
MEDIAPIPE_INSTALL = 'pip install "mediapipe==0.10.21" "numpy<2" "protobuf>=4.25.3,<5"'
ONNXRUNTIME_INSTALL = "pip install onnxruntime"
OPENPOSE_INSTALL = "pip install controlnet_aux==0.0.10"
DWPOSE_MB = 350  # yolox_l.onnx (~217 MB) + dw-ll_ucoco_384.onnx (~134 MB)
# name -> (Hugging Face repository, files, licence note)
WEIGHTS = {
    "dwpose": ("yzd-v/DWPose", ("yolox_l.onnx", "dw-ll_ucoco_384.onnx"), "Apache-2.0"),
    "openpose": ("lllyasviel/Annotators", ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth"),
                 "CMU OpenPose licence: academic / non-commercial use only"),
}
WEIGHT_FOLDERS = {"dwpose": "models/magicpose/dwpose", "openpose": "models/magicpose/openpose"}


class MissingWeightsError(RuntimeError):
    """Detector weights are not on disk (and downloading was not allowed or failed)."""

    __module__ = "magicpose_core.pose.base"  # ComfyUI shows module + name; the pack's own module name is a path


@runtime_checkable
class PoseDetector(Protocol):
    name: str
    threshold: float  # score below which a point counts as missing

    def __call__(self, rgb: np.ndarray) -> PoseFrame:
        """HWC uint8 RGB -> OpenPose-18/70/21 keypoints in pixels, points below ``threshold`` removed."""
        ...

    def detect_raw(self, rgb: np.ndarray) -> PoseFrame:
        """Same, with raw scores (for hysteresis)."""
        ...

    def reset(self) -> None:
        """Forget tracking state before a new sequence."""
        ...


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Validate/normalise a detector input to contiguous (H, W, 3) uint8 RGB (gray and RGBA are converted)."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"a pose detector takes a numpy image, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"a pose detector takes uint8 images (0-255), got dtype {image.dtype}; convert IMAGE "
                         "tensors with magicpose_core.media.images.to_uint8")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"a pose detector takes an (H, W, 3) RGB image, got shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"cannot detect poses in an empty image of shape {image.shape}")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)  # (H, W, 1) -> (H, W, 3)
    elif image.shape[2] == 4:
        image = image[:, :, :3]
    return np.ascontiguousarray(image)


class BaseDetector:
    """Shared behaviour: input validation, thresholding, no-op reset."""

    name = "base"
    threshold = 0.5

    def detect_raw(self, rgb: np.ndarray) -> PoseFrame:  # pragma: no cover - overridden
        raise NotImplementedError

    def __call__(self, rgb: np.ndarray) -> PoseFrame:
        frame = self.detect_raw(rgb)
        people = [p for p in frame.thresholded(self.threshold).people if not p.is_empty]
        return PoseFrame(frame.width, frame.height, people)

    def reset(self) -> None:
        pass
