"""Pose detectors behind one small interface; every backend and its runtime is imported lazily.

``create_detector(name, weights_dir=None, allow_download=False)`` returns a ``PoseDetector``: calling it on an
RGB uint8 (H, W, 3) image gives a ``PoseFrame`` in that image's pixels, points below the detector's own score
threshold already removed; ``detect_raw`` keeps the raw scores for temporal hysteresis (smoothing.py).

Backends (docs/pose.md §3):
- ``mediapipe``: MediaPipe 0.10.21 legacy Holistic (pose 33 + face 478 + hands), models inside the wheel, fully
  offline; an optional extra (it pins numpy<2). Apache-2.0.
- ``dwpose``: DWPose ONNX (``yolox_l.onnx`` + ``dw-ll_ucoco_384.onnx``) on onnxruntime. Apache-2.0.
- ``openpose``: controlnet_aux ``OpenposeDetector`` with the lllyasviel/Annotators CMU weights
  (``body_pose_model.pth``, ``hand_pose_model.pth``, ``facenet.pth``), MagicPose's own training detector.
  CMU licence: academic, non-commercial.

Missing weights raise ``MissingWeightsError`` naming the files and the folder; weights are downloaded (with
huggingface_hub, honouring HF_HUB_OFFLINE) only when ``allow_download`` is set.

``choose_detector`` is the ``auto`` choice (the default after a plain install, numpy 2, no mediapipe):
DWPose when its ONNX pair is found (our model folder, comfyui_controlnet_aux's ``ckpts/yzd-v/DWPose``, the
Hugging Face cache), else DWPose downloaded once from yzd-v/DWPose (~350 MB; a quick probe first, so an offline
machine falls through in seconds), else MediaPipe when it is installed, else one error naming both fixes.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from .base import (  # noqa: F401
    AUTO,
    DETECTORS,
    DWPOSE_MB,
    MEDIAPIPE_INSTALL,
    ONNXRUNTIME_INSTALL,
    OPENPOSE_INSTALL,
    WEIGHT_FOLDERS,
    WEIGHTS,
    BaseDetector,
    MissingWeightsError,
    PoseDetector,
    as_rgb_uint8,
)

log = logging.getLogger("MagicPose")

def _hint(name: str, missing: list[str], where: str) -> str:
    repo, _, licence = WEIGHTS[name]
    return (f"{name} weights not found: put {', '.join(missing)} (from the Hugging Face repository {repo}; "
            f"{licence}) into {where}")


def resolve_weights(name: str, weights_dir: str | None, allow_download: bool = False,
                    progress: Callable[[int, int], None] | None = None) -> dict[str, str]:
    """Paths of a detector's weight files in ``weights_dir``; downloads the missing ones only if allowed.

    Raises ``MissingWeightsError`` with the exact file names, the folder and the source repository.
    """
    from ..weights.hub import HubError, fetch_files

    repo, files, _ = WEIGHTS[name]
    folder = weights_dir or WEIGHT_FOLDERS[name]
    paths = {f: os.path.join(folder, f) for f in files}
    missing = [f for f, p in paths.items() if not os.path.isfile(p)]
    if not missing:
        return paths
    shown = os.path.join(*Path(os.path.abspath(folder)).parts[-3:])  # e.g. models/magicpose/dwpose, no machine path
    hint = _hint(name, missing, shown)
    if not allow_download:
        raise MissingWeightsError(f"{hint}, or enable allow_download to fetch them once.")
    if weights_dir is None:
        raise MissingWeightsError(f"{hint}: no weights folder was given to download into.")
    try:
        fetch_files(repo, missing, weights_dir, progress)
    except HubError as e:
        raise MissingWeightsError(f"{hint}; downloading them failed: {e}.") from None
    return paths


def find_weights(name: str, folders: Iterable[str]) -> str | None:
    """The first of ``folders`` that holds every weight file of detector ``name``, else None."""
    files = WEIGHTS[name][1]
    for folder in folders:
        if folder and all(os.path.isfile(os.path.join(folder, f)) for f in files):
            return folder
    return None


def hub_cache_folder(name: str) -> str | None:
    """The Hugging Face cache snapshot that holds every weight file of ``name`` (e.g. fetched earlier by another
    tool with huggingface_hub), looked up on disk only; None when absent or huggingface_hub is missing."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    repo, files, _ = WEIGHTS[name]
    try:
        paths = [try_to_load_from_cache(repo, f) for f in files]
    except Exception:  # an unreadable cache is no reason to fail: the other sources remain
        return None
    if not all(isinstance(p, str) and os.path.isfile(p) for p in paths):
        return None
    folders = {os.path.dirname(p) for p in paths}
    return folders.pop() if len(folders) == 1 else None


def _importable(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _mediapipe_problem() -> str | None:
    """None when MediaPipe's Holistic solution can be used, else why not."""
    if not _importable("mediapipe"):
        return "mediapipe is not installed"
    from .mediapipe_backend import _holistic_module

    try:
        _holistic_module()
    except Exception as e:  # a broken install (numpy 2, no legacy solutions) is a reason, not a crash
        return str(e).split(";")[0]
    return None


@dataclass(frozen=True)
class DetectorChoice:
    """What ``auto`` picked: ``detector`` (``dwpose`` or ``mediapipe``), its weights folder and a short,
    path-free note for the UI (where the weights came from, or why DWPose was not used)."""

    detector: str
    weights_dir: str | None
    note: str


def choose_detector(folders: Iterable[tuple[str, str]], download_dir: str | None,
                    progress: Callable[[int, int], None] | None = None, timeout: float | None = None,
                    download: bool = True) -> DetectorChoice:
    """The ``auto`` detector. ``folders``: (path, label) pairs searched in order for yolox_l.onnx +
    dw-ll_ucoco_384.onnx; ``download_dir``: where DWPose is downloaded when found nowhere (``download=False``
    skips that step). Raises ``MissingWeightsError`` naming both fixes when neither DWPose nor MediaPipe works."""
    from ..weights.hub import PROBE_TIMEOUT, HubError, fetch_files

    repo, files, _ = WEIGHTS["dwpose"]
    folders = [(p, label) for p, label in folders if p]
    has_ort = _importable("onnxruntime")
    found = find_weights("dwpose", [p for p, _ in folders])
    note = next((label for p, label in folders if p == found), "")
    if found is None and (cached := hub_cache_folder("dwpose")):
        found, note = cached, "the Hugging Face cache"
    reasons = []
    if found is not None and has_ort:
        return DetectorChoice("dwpose", found, f"DWPose (weights found in {note})")
    if not has_ort:
        reasons.append(f"DWPose needs onnxruntime, which is not installed ({ONNXRUNTIME_INSTALL})")
    elif not download or download_dir is None:
        reasons.append("no DWPose weights were found and downloading is off")
    else:
        try:
            fetch_files(repo, files, download_dir, progress, PROBE_TIMEOUT if timeout is None else timeout)
            return DetectorChoice("dwpose", download_dir, f"DWPose (downloaded from {repo})")
        except HubError as e:
            reasons.append(f"no DWPose weights were found and downloading them failed: {e}")
    mp_problem = _mediapipe_problem()
    if mp_problem is None:
        return DetectorChoice("mediapipe", None, f"MediaPipe ({'; '.join(reasons)})")
    reasons.append(mp_problem)
    where = folders[0][1] if folders else WEIGHT_FOLDERS["dwpose"]
    fix_dwpose = (f"put {' and '.join(files)} from the Hugging Face repository {repo} (Apache-2.0, ~{DWPOSE_MB} MB) "
                  f"into {where}" + ("" if has_ort else f" and run `{ONNXRUNTIME_INSTALL}`")
                  + ", or let MagicPose download them on first use (needs network access to the hub, "
                  "HF_HUB_OFFLINE unset)")
    raise MissingWeightsError(f"no pose detector is available: {'; '.join(reasons)}. Fix one of: (1) DWPose "
                              f"(recommended): {fix_dwpose}; (2) MediaPipe: `{MEDIAPIPE_INSTALL}` (it needs "
                              "numpy<2, so it downgrades numpy in this Python).")


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
