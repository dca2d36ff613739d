"""Frame sources for the evaluation: a video file, an image folder or an array of frames, as HWC uint8 RGB.

Sizes and counts from outside are bounded before anything is allocated (``MAX_FRAMES``, ``MAX_PIXELS``).
Generated frames are resized to the ground truth's size with ``cv2.resize`` (bilinear), as DisCo's
``tool/metrics/ssim_l1_lpips_psnr.py`` does before SSIM, PSNR and L1 (docs/evaluation.md §2).
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

log = logging.getLogger("MagicPose")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif", ".m4v")
MAX_FRAMES = 20_000          # frames read from one source
MAX_PIXELS = 8192 * 8192     # pixels of one frame


def _natural_key(name: str) -> list:
    """'frame_10.png' after 'frame_9.png': digit runs compare as numbers."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _check_size(width: int, height: int, where: str) -> None:
    if width < 1 or height < 1 or width * height > MAX_PIXELS:
        raise ValueError(f"{where}: frame size {width}x{height} is outside 1 to {MAX_PIXELS} pixels")


def image_files(folder: str | os.PathLike) -> list[Path]:
    """Image files of a folder in natural order (not recursive)."""
    files = [p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(files, key=lambda p: _natural_key(p.name))


def read_image(path: str | os.PathLike) -> np.ndarray:
    """One image file -> (H, W, 3) uint8 RGB (alpha dropped, grey expanded)."""
    from PIL import Image

    with Image.open(path) as im:
        _check_size(im.width, im.height, str(path))
        return np.asarray(im.convert("RGB"))


def read_folder(folder: str | os.PathLike, max_frames: int = MAX_FRAMES) -> list[np.ndarray]:
    files = image_files(folder)
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in the folder {folder}")
    if len(files) > max_frames:
        raise ValueError(f"{folder} holds {len(files)} images, more than the limit of {max_frames}; "
                         "evaluate a shorter sequence (or raise max_frames)")
    return [read_image(p) for p in files]


def read_video(path: str | os.PathLike, max_frames: int = MAX_FRAMES) -> list[np.ndarray]:
    """Every frame of a video file (PyAV) as (H, W, 3) uint8 RGB."""
    import av

    frames: list[np.ndarray] = []
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path} has no video stream")
        stream = container.streams.video[0]
        _check_size(stream.codec_context.width, stream.codec_context.height, str(path))
        for frame in container.decode(stream):
            if len(frames) >= max_frames:
                raise ValueError(f"{path} has more than {max_frames} frames; evaluate a shorter clip")
            frames.append(frame.to_ndarray(format="rgb24"))  # (H, W, 3) uint8
    if not frames:
        raise ValueError(f"no frames could be decoded from {path}")
    return frames


def as_uint8_rgb(frame: np.ndarray, where: str) -> np.ndarray:
    """Validate one frame: (H, W, 3|4|1) or (H, W) uint8, or float in [0, 1] -> (H, W, 3) uint8."""
    a = np.asarray(frame)
    if a.dtype != np.uint8:
        if not np.issubdtype(a.dtype, np.floating):
            raise ValueError(f"{where}: frames must be uint8 (0-255) or float (0-1), got {a.dtype}")
        a = (np.clip(a, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ValueError(f"{where}: frames must be (H, W, 3) RGB, got shape {a.shape}")
    _check_size(a.shape[1], a.shape[0], where)
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)  # (H, W, 1) -> (H, W, 3)
    return np.ascontiguousarray(a[:, :, :3])


def load_frames(source, name: str = "frames", max_frames: int = MAX_FRAMES) -> list[np.ndarray]:
    """A video path, an image-folder path, one image path, an (N, H, W, C) array or a sequence of frames
    -> list of (H, W, 3) uint8 RGB frames."""
    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        if p.is_dir():
            return read_folder(p, max_frames)
        if not p.is_file():
            raise ValueError(f"{name}: {p} is neither a video file nor an image folder")
        if p.suffix.lower() in IMAGE_EXTENSIONS:
            return [read_image(p)]
        return read_video(p, max_frames)
    if isinstance(source, np.ndarray) and source.ndim == 4:
        seq: Iterable = list(source)
    elif isinstance(source, np.ndarray):
        seq = [source]
    else:
        seq = list(source)
    if not seq:
        raise ValueError(f"{name}: no frames")
    if len(seq) > max_frames:
        raise ValueError(f"{name}: {len(seq)} frames, more than the limit of {max_frames}")
    return [as_uint8_rgb(f, f"{name} frame {i}") for i, f in enumerate(seq)]


def align_lengths(a: Sequence, b: Sequence, names: tuple[str, str], truncate: bool) -> int:
    """The number of frame pairs to compare; unequal lengths are an error unless ``truncate``."""
    if len(a) == len(b):
        return len(a)
    if not truncate:
        raise ValueError(f"{names[0]} has {len(a)} frames but {names[1]} has {len(b)}; pass frames that match one "
                         f"to one (e.g. skip the reference frame with a ground-truth offset) or allow truncation to "
                         f"compare the first {min(len(a), len(b))}")
    log.warning("%s has %d frames and %s %d: comparing the first %d", names[0], len(a), names[1], len(b),
                min(len(a), len(b)))
    return min(len(a), len(b))


def resize_to(frame: np.ndarray, like: np.ndarray) -> np.ndarray:
    """``frame`` at ``like``'s size with cv2.resize's default bilinear filter (DisCo); unchanged if equal."""
    if frame.shape[:2] == like.shape[:2]:
        return frame
    import cv2

    return cv2.resize(frame, (like.shape[1], like.shape[0]))  # (h, w, 3) -> (H, W, 3), INTER_LINEAR
