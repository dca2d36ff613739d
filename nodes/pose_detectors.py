"""Glue between ComfyUI and the pose detectors: weight folders through folder_paths, cached instances,
IMAGE batches in, PoseFrames out. Used by ExtractPose and LoadReference.

Weights live under the `magicpose` model folder (so extra_model_paths.yaml entries work):
`models/magicpose/dwpose/` (yolox_l.onnx, dw-ll_ucoco_384.onnx) and `models/magicpose/openpose/`
(body_pose_model.pth, hand_pose_model.pth, facenet.pth). MediaPipe needs no weights (they ship in its wheel).

``auto`` (the default) looks for DWPose's ONNX pair in models/magicpose/dwpose/, in comfyui_controlnet_aux's
checkpoint folder (``<annotator_ckpts_path>/yzd-v/DWPose``, by default ``custom_nodes/comfyui_controlnet_aux/
ckpts/``, or $AUX_ANNOTATOR_CKPTS_PATH) and in the Hugging Face cache; else downloads it into
models/magicpose/dwpose/; else uses MediaPipe (magicpose_core.pose.detect.choose_detector). Each run says on
the node and in the log which detector ran.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Callable

import comfy.model_management
import comfy.utils
import folder_paths
import torch

from ..magicpose_core.media.images import iter_uint8
from ..magicpose_core.pose.detect import (
    AUTO,
    DETECTORS,
    WEIGHTS,
    DetectorChoice,
    PoseDetector,
    choose_detector,
    create_detector,
)
from ..magicpose_core.pose.keypoints import PoseFrame

log = logging.getLogger("MagicPose")

DETECTOR_CHOICES = [AUTO, *DETECTORS]
MODEL_FOLDER = "magicpose"
AUX_REPO_DIR = os.path.join("yzd-v", "DWPose")  # comfyui_controlnet_aux: <annotator_ckpts_path>/<repo id>/
FALLBACK_TTL = 60.0  # s an auto fallback to MediaPipe is remembered before DWPose is looked for again
_CACHE: dict[tuple, PoseDetector] = {}
_AUTO: dict[tuple, tuple[DetectorChoice, float]] = {}


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


def _aux_ckpts_dirs() -> list[str]:
    """comfyui_controlnet_aux's checkpoint folders: $AUX_ANNOTATOR_CKPTS_PATH, then each custom node folder's
    config.yaml `annotator_ckpts_path` (relative to that folder) or its default ./ckpts."""
    dirs = []
    if os.environ.get("AUX_ANNOTATOR_CKPTS_PATH"):
        dirs.append(os.environ["AUX_ANNOTATOR_CKPTS_PATH"])
    for base in folder_paths.get_folder_paths("custom_nodes"):
        try:
            packs = sorted(os.scandir(base), key=lambda e: e.name)
        except OSError:
            continue
        for pack in packs:
            if not pack.is_dir() or "controlnet_aux" not in pack.name.lower():
                continue
            config = os.path.join(pack.path, "config.yaml")
            if os.path.isfile(config):
                try:
                    import yaml

                    with open(config, encoding="utf-8") as f:
                        custom = (yaml.safe_load(f) or {}).get("annotator_ckpts_path")
                    if isinstance(custom, str) and custom:
                        dirs.append(os.path.normpath(os.path.join(pack.path, custom)))
                except Exception:  # an unreadable config: the default folder is still searched
                    pass
            dirs.append(os.path.join(pack.path, "ckpts"))
    return dirs


def dwpose_folders() -> list[tuple[str, str]]:
    """(folder, path-free label) pairs where ``auto`` looks for yolox_l.onnx + dw-ll_ucoco_384.onnx, in order."""
    bases = list(folder_paths.get_folder_paths(MODEL_FOLDER)) if MODEL_FOLDER in folder_paths.folder_names_and_paths \
        else []
    out = [(os.path.join(b, "dwpose"), "models/magicpose/dwpose") for b in bases]
    out += [(os.path.join(d, AUX_REPO_DIR), "comfyui_controlnet_aux's ckpts/yzd-v/DWPose") for d in _aux_ckpts_dirs()]
    return out


def _download_progress() -> Callable[[int, int], None]:
    """Forward download bytes to a ComfyUI progress bar on the running node."""
    bar: list = []

    def update(done: int, total: int) -> None:
        if not bar:
            bar.append(comfy.utils.ProgressBar(total))
        bar[0].update_absolute(done, total)

    return update


def resolve_auto(download: bool = True) -> DetectorChoice:
    """The ``auto`` detector (see the module docstring), remembered: DWPose while its files exist, a MediaPipe
    fallback for FALLBACK_TTL seconds (so a video does not probe the hub for every call)."""
    folders = dwpose_folders()
    key = (tuple(folders), download)
    hit = _AUTO.get(key)
    if hit is not None:
        choice, t = hit
        if choice.detector == "dwpose" and weights_complete("dwpose", choice.weights_dir):
            return choice
        if choice.detector != "dwpose" and time.monotonic() - t < FALLBACK_TTL:
            return choice
    choice = choose_detector(folders, weights_dir("dwpose"), progress=_download_progress(), download=download)
    _AUTO[key] = (choice, time.monotonic())
    return choice


def weights_complete(detector: str, folder: str | None) -> bool:
    return bool(folder) and all(os.path.isfile(os.path.join(folder, f)) for f in WEIGHTS[detector][1])


def announce(text: str) -> None:
    """One log line and the same text on the running node (ComfyUI's progress text, as core GetImageSize)."""
    log.info("MagicPose: %s", text)
    try:
        from comfy_execution.utils import get_executing_context
        from server import PromptServer

        ctx = get_executing_context()
        if ctx is not None and getattr(PromptServer, "instance", None) is not None:
            PromptServer.instance.send_progress_text(text, ctx.node_id)
    except Exception:  # no server (scripts, in-process tests): the log line is enough
        pass


def get_detector(detector: str, allow_download: bool = False, video: bool = False) -> PoseDetector:
    """A cached detector instance, keyed by (name, weights folder, video mode); ``auto`` resolved first."""
    if detector not in DETECTOR_CHOICES:
        raise ValueError(f"unknown pose detector {detector!r}; choose one of {', '.join(DETECTOR_CHOICES)}")
    if detector == AUTO:
        choice = resolve_auto()
        detector, wdir = choice.detector, choice.weights_dir
    else:
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


def describe(detector: str) -> str:
    """The text shown for a run: ``auto``'s choice with its reason, or the detector picked by name."""
    if detector == AUTO:
        return f"pose detector: {resolve_auto().note} [auto]"
    return f"pose detector: {detector}"


def clear_cache() -> None:
    _CACHE.clear()
    _AUTO.clear()


def detect_frames(images: torch.Tensor, detector: str, allow_download: bool = False, raw: bool = False,
                  video: bool = False, on_frame: Callable[[int], None] | None = None) -> list[PoseFrame]:
    """IMAGE (B, H, W, C) -> one PoseFrame per image, in that image's pixels. Interruptible between frames.

    ``raw`` keeps sub-threshold scores (for smoothing hysteresis); ``video`` lets MediaPipe track.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"expected an IMAGE batch (B, H, W, 3), got {shape}")
    det = get_detector(detector, allow_download, video)
    announce(describe(detector))
    det.reset()
    out = []
    for i, rgb in enumerate(iter_uint8(images)):
        comfy.model_management.throw_exception_if_processing_interrupted()
        out.append(det.detect_raw(rgb) if raw else det(rgb))
        if on_frame is not None:
            on_frame(i)
    return out


def detect_pose(images: torch.Tensor, detector: str = AUTO, allow_download: bool = False) -> list[PoseFrame]:
    """Public helper (LoadReference): IMAGE batch -> PoseFrames in each image's pixels, thresholded."""
    return detect_frames(images, detector, allow_download)
