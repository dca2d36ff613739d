"""Pose detectors behind one small interface; every backend and its runtime is imported lazily.

``create_detector(name, weights_dir=None, allow_download=False)`` returns a ``PoseDetector``: calling it on an
RGB uint8 (H, W, 3) image gives a ``PoseFrame`` in that image's pixels, points below the detector's own score
threshold already removed; ``detect_raw`` keeps the raw scores for temporal hysteresis (smoothing.py).

Backends (pose.md §3):
- ``mediapipe``: MediaPipe 0.10.21 legacy Holistic (pose 33 + face 478 + hands), models inside the wheel, fully
  offline; an optional extra (it pins numpy<2). Apache-2.0.
- ``dwpose``: DWPose ONNX (``yolox_l.onnx`` + ``dw-ll_ucoco_384.onnx``) on onnxruntime. Apache-2.0.
- ``openpose``: controlnet_aux ``OpenposeDetector`` with the lllyasviel/Annotators CMU weights
  (``body_pose_model.pth``, ``hand_pose_model.pth``, ``facenet.pth``), MagicPose's own training detector.
  CMU licence: academic, non-commercial.

Missing weights raise ``MissingWeightsError`` naming the files and the folder; weights are downloaded (with
huggingface_hub, honouring HF_HUB_OFFLINE) only when ``allow_download`` is set.
"""
from __future__ import annotations

import logging
import os
from typing import Protocol, runtime_checkable

import numpy as np

from .keypoints import PoseFrame

log = logging.getLogger("MagicPose")

DETECTORS = ("mediapipe", "dwpose", "openpose")
MEDIAPIPE_INSTALL = 'pip install "mediapipe==0.10.21" "numpy<2" "protobuf>=4.25.3,<5"'
# name -> (Hugging Face repository, files, licence note)
WEIGHTS = {
    "dwpose": ("yzd-v/DWPose", ("yolox_l.onnx", "dw-ll_ucoco_384.onnx"), "Apache-2.0"),
    "openpose": ("lllyasviel/Annotators", ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth"),
                 "CMU OpenPose licence: academic / non-commercial use only"),
}
WEIGHT_FOLDERS = {"dwpose": "models/magicpose/dwpose", "openpose": "models/magicpose/openpose"}


class MissingWeightsError(RuntimeError):
    """Detector weights are not on disk (and downloading was not allowed or failed)."""


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
                         "tensors with magicpose_core.images.to_uint8")
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


def resolve_weights(name: str, weights_dir: str | None, allow_download: bool = False) -> dict[str, str]:
    """Paths of a detector's weight files in ``weights_dir``; downloads the missing ones only if allowed.

    Raises ``MissingWeightsError`` with the exact file names, the folder and the source repository.
    """
    repo, files, licence = WEIGHTS[name]
    folder = weights_dir or WEIGHT_FOLDERS[name]
    paths = {f: os.path.join(folder, f) for f in files}
    missing = [f for f, p in paths.items() if not os.path.isfile(p)]
    if not missing:
        return paths
    hint = (f"{name} weights not found: put {', '.join(missing)} (from the Hugging Face repository {repo}; "
            f"{licence}) into {os.path.abspath(folder) if weights_dir else folder}")
    if not allow_download:
        raise MissingWeightsError(f"{hint}, or enable allow_download to fetch them once.")
    if weights_dir is None:
        raise MissingWeightsError(f"{hint}: no weights folder was given to download into.")
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise MissingWeightsError(f"{hint}; downloading is disabled because HF_HUB_OFFLINE is set.")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise MissingWeightsError(f"{hint}; huggingface_hub is not installed, so they cannot be downloaded.") from None
    os.makedirs(weights_dir, exist_ok=True)
    for f in missing:
        log.info("downloading %s from %s into %s", f, repo, weights_dir)
        try:
            hf_hub_download(repo, f, local_dir=weights_dir)
        except Exception as e:  # any hub/network error: report the manual route, not a hub traceback
            raise MissingWeightsError(f"{hint}; the download of {f} failed ({type(e).__name__}: {e}).") from None
    return paths


def create_detector(name: str, weights_dir: str | None = None, allow_download: bool = False,
                    video: bool = False, device: str | None = None) -> PoseDetector:
    """A pose detector by name (``DETECTORS``).

    ``weights_dir``: folder of the weight files (dwpose/openpose). ``video``: the detector may track between
    calls (MediaPipe's tracking mode; call ``reset()`` before each sequence). ``device``: torch device for
    openpose (default CPU).
    """
    if name == "mediapipe":
        from .mediapipe_backend import MediaPipeDetector

        return MediaPipeDetector(video=video)
    if name == "dwpose":
        from .dwpose import DWPoseDetector

        paths = resolve_weights("dwpose", weights_dir, allow_download)
        return DWPoseDetector(paths["yolox_l.onnx"], paths["dw-ll_ucoco_384.onnx"])
    if name == "openpose":
        from .openpose_backend import OpenPoseDetector

        resolve_weights("openpose", weights_dir, allow_download)
        return OpenPoseDetector(weights_dir or WEIGHT_FOLDERS["openpose"], device=device)
    raise ValueError(f"unknown pose detector {name!r}; choose one of {', '.join(DETECTORS)}")
