"""SSIM, PSNR and L1 with the definitions of DisCo's ``tool/metrics/ssim_l1_lpips_psnr.py``, the code MagicPose's
table was computed with (magicpose-method.md §14). Inputs are (H, W, 3) uint8 RGB frames of equal size.

- SSIM: scikit-image ``structural_similarity`` with its defaults (7x7 uniform window, data range 255 for
  uint8) on the **greyscale** frames (OpenCV's BT.601 conversion, as ``cv2.COLOR_BGR2GRAY`` on BGR input).
- PSNR: ``20 * log10(255 / sqrt(MSE))`` over all pixels and channels; identical frames give
  ``PSNR_IDENTICAL`` = 100 dB (DisCo's cap for MSE = 0).
- L1: ``mean(|A - B|) / (H * W)`` on 0-255 values: DisCo divides the absolute difference by the pixel count
  before averaging, which is why the paper's L1 is about 1e-4 and why it shrinks with the resolution.

Each is computed per frame; the summary is the mean over frames (DisCo averages over every frame pair).
"""
from __future__ import annotations

import math

import numpy as np

PSNR_IDENTICAL = 100.0
SKIMAGE_INSTALL = 'pip install scikit-image  (or: pip install "magicpose[metrics]")'


class MetricUnavailable(RuntimeError):
    """A metric cannot run here (missing library or weights); the message says how to enable it."""


def gray(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) uint8 luma, OpenCV's rounding (identical to BGR2GRAY on the BGR frame)."""
    import cv2

    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of the greyscale frames (scikit-image defaults, data range 255)."""
    try:
        from skimage.metrics import structural_similarity
    except ImportError:
        raise MetricUnavailable(f"SSIM needs scikit-image: {SKIMAGE_INSTALL}") from None
    return float(structural_similarity(gray(a), gray(b)))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB on 0-255 values; ``PSNR_IDENTICAL`` when the frames are equal."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    if mse == 0.0:
        return PSNR_IDENTICAL
    return 20.0 * math.log10(255.0 / math.sqrt(mse))


def l1(a: np.ndarray, b: np.ndarray) -> float:
    """DisCo's L1: mean absolute difference (0-255) divided by H * W."""
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))  # (H, W, 3)
    return float(diff.mean() / (a.shape[0] * a.shape[1]))
