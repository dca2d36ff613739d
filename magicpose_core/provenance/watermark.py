"""Invisible watermark: RivaGAN (32 bits) embedded at a fixed working scale, with soft decoding.

RivaGAN is a learned video watermark (Zhang et al., "Robust Invisible Video Watermarking with Attention",
arXiv 1909.01285; trained on Hollywood2 clips against compression, scaling and cropping). Its trained
encoder and decoder are two ONNX files of the ``invisible-watermark`` 0.2.0 wheel (``imwatermark/
rivagan_{encoder,decoder}.onnx``, MIT licence). They ship inside the pack, in ``rivagan/`` next to this file
(``rivagan/SOURCE.md``: wheel, version and SHA-256 of each file), so a plain install marks by default. An
installed ``invisible-watermark`` package is the fallback when that folder is missing (its files are found
without importing ``imwatermark``, whose ``__init__`` pulls in PyWavelets and whose wheel requires
``opencv-python``, which clashes with ``opencv-python-headless``: install it with ``--no-deps``). The files
run on onnxruntime, a runtime requirement of the pack.

Departures from ``imwatermark``'s own RivaGAN wrapper (facts from its ``rivaGan.py``: BGR frames scaled to
[-1, 1] as (1, 3, 1, H, W); the decoder returns one logit per bit):
- Working scale: the encoder runs on the frame resized so that its short side is ``WORK_SIDE`` (never
  upscaled); the residual it adds is resized back and added to the full frame. The mark then costs the
  same at any resolution and a decoder that resizes to the same short side sees the mark at the scale it
  was written (robust to resizing; measured in scripts/measure_provenance.py).
- Soft decoding: the logits are kept, so a video is judged on the mean logit over many frames.
"""
from __future__ import annotations

import importlib.util
import logging
import os
from functools import lru_cache
from typing import Callable, Iterable

import numpy as np

from .payload import BITS, payload_bits

log = logging.getLogger("MagicPose")

BUNDLED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rivagan")  # shipped with the pack
MODEL_PACKAGE = "imwatermark"  # fallback: the installed invisible-watermark package
MODEL_FILES = ("rivagan_encoder.onnx", "rivagan_decoder.onnx")
INSTALL_HINT = 'pip install --no-deps "invisible-watermark==0.2.0"'
WORK_SIDE = 256       # short side (px) at which RivaGAN embeds and decodes
STRENGTH = 1.5        # gain on the residual: 1.5 measured against 1 and 2 (README table; PSNR ~39 dB)
MIN_SIDE = 32         # the networks downsample: smaller frames cannot carry the mark
MAX_PIXELS = 1 << 26  # 64 MP: larger frames are refused before any buffer is sized from them


class WatermarkUnavailable(RuntimeError):
    """The RivaGAN model files (shipped in rivagan/, or from invisible-watermark) or onnxruntime are missing."""


def _files_in(folder: str) -> tuple[str, str] | None:
    paths = tuple(os.path.join(folder, f) for f in MODEL_FILES)
    return (paths[0], paths[1]) if all(os.path.isfile(p) for p in paths) else None


def model_paths() -> tuple[str, str]:
    """Paths of the RivaGAN encoder/decoder ONNX files: the pack's own ``rivagan/`` folder, else the installed
    invisible-watermark package (found without running its ``__init__``)."""
    bundled = _files_in(BUNDLED_DIR)
    if bundled is not None:
        return bundled
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    installed = _files_in(list(spec.submodule_search_locations)[0]) \
        if spec is not None and spec.submodule_search_locations else None
    if installed is not None:
        return installed
    raise WatermarkUnavailable(
        f"the invisible watermark needs the RivaGAN model files that ship with the pack in {BUNDLED_DIR}; they are "
        "missing and no installed 'invisible-watermark' package provides them: reinstall the pack, or install the "
        f"package with  {INSTALL_HINT}  (--no-deps: its opencv-python requirement clashes with "
        "opencv-python-headless)")


@lru_cache(maxsize=1)
def _sessions():
    encoder_path, decoder_path = model_paths()
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise WatermarkUnavailable(f"the invisible watermark runs on onnxruntime, which failed to import ({e}): "
                                   "pip install onnxruntime") from e
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    providers = ["CPUExecutionProvider"]
    return (ort.InferenceSession(encoder_path, options, providers=providers),
            ort.InferenceSession(decoder_path, options, providers=providers))


def unavailable_reason() -> str | None:
    """None when the watermark can run, else the message that says how to install it."""
    try:
        _sessions()
    except WatermarkUnavailable as e:
        return str(e)
    return None


_warned = False


def warn_unavailable_once(reason: str) -> None:
    """Log the missing-model-files message once per process."""
    global _warned
    if not _warned:
        _warned = True
        log.warning("MagicPose: frames are written WITHOUT the invisible watermark: %s", reason)


def _work_size(h: int, w: int) -> tuple[int, int]:
    """(width, height) with the short side at most WORK_SIDE, aspect kept."""
    scale = min(1.0, WORK_SIDE / min(h, w))
    return max(MIN_SIDE, round(w * scale)), max(MIN_SIDE, round(h * scale))


def _check(rgb: np.ndarray) -> None:
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"watermark frames are HWC uint8 RGB, got {rgb.dtype} {rgb.shape}")
    h, w = rgb.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise ValueError(f"a {w}x{h} frame is too small to carry the watermark (short side at least {MIN_SIDE} px)")
    if h * w > MAX_PIXELS:
        raise ValueError(f"a {w}x{h} frame is over {MAX_PIXELS >> 20} MP: resize it first")


def _network_input(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """HWC uint8 RGB -> (working-scale BGR float in [-1, 1] (h, w, 3), network layout (1, 3, 1, h, w))."""
    import cv2

    size = _work_size(*rgb.shape[:2])
    small = rgb if size == (rgb.shape[1], rgb.shape[0]) else cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    x = small[:, :, ::-1].astype(np.float32) / 127.5 - 1.0  # RGB -> BGR (RivaGAN was trained on cv2 frames)
    return x, np.ascontiguousarray(x.transpose(2, 0, 1)[None, :, None])  # (h, w, 3) -> (1, 3, 1, h, w)


def embed(rgb: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """Watermark one HWC uint8 RGB frame with 32 bits; returns a new frame of the same size."""
    import cv2

    _check(rgb)
    encoder, _ = _sessions()
    x, net_in = _network_input(rgb)
    data = np.asarray(bits, dtype=np.float32).reshape(1, BITS)
    out = encoder.run(None, {"frame": net_in, "data": data})[0]  # (1, 3, 1, h, w)
    wm = np.clip(out[0, :, 0].transpose(1, 2, 0), -1.0, 1.0)  # (3, h, w) -> (h, w, 3) BGR in [-1, 1]
    residual = (wm - x) * (127.5 * STRENGTH)  # in 0-255 units
    residual = np.ascontiguousarray(residual[:, :, ::-1])  # BGR -> RGB
    h, w = rgb.shape[:2]
    if residual.shape[:2] != (h, w):
        residual = cv2.resize(residual, (w, h), interpolation=cv2.INTER_LINEAR)  # (h', w', 3) -> (H, W, 3)
    return np.clip(np.rint(rgb.astype(np.float32) + residual), 0, 255).astype(np.uint8)


def decode(rgb: np.ndarray) -> np.ndarray:
    """The 32 logits (float32; > 0 reads as bit 1) that RivaGAN decodes from one HWC uint8 RGB frame."""
    _check(rgb)
    _, decoder = _sessions()
    return decoder.run(None, {"frame": _network_input(rgb)[1]})[0][0].astype(np.float32)  # (1, 32) -> (32,)


def frame_marker(enabled: bool = True, version: str | None = None) -> Callable[[np.ndarray], np.ndarray] | None:
    """A function that watermarks one frame with this pack's payload, or None when disabled or unavailable
    (then the missing-files message is logged once)."""
    if not enabled:
        return None
    reason = unavailable_reason()
    if reason is not None:
        warn_unavailable_once(reason)
        return None
    bits = payload_bits(version)
    return lambda rgb: embed(rgb, bits)


def mark_frames(frames: Iterable[np.ndarray], version: str | None = None) -> Iterable[np.ndarray]:
    """Watermark a stream of HWC uint8 RGB frames (raises WatermarkUnavailable when it cannot run)."""
    _sessions()
    bits = payload_bits(version)
    return (embed(f, bits) for f in frames)
