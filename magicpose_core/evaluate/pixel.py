"""SSIM, PSNR and L1 of DisCo's ``tool/metrics/ssim_l1_lpips_psnr.py``, the code MagicPose's table was computed
with (docs/evaluation.md §2.1), plus the correct PSNR beside DisCo's. Inputs are (H, W, 3) uint8 RGB frames of
equal size.

- SSIM: scikit-image ``structural_similarity`` with its defaults (7x7 uniform window, data range 255 for
  uint8) on the **greyscale** frames (OpenCV's BT.601 conversion, as ``cv2.COLOR_BGR2GRAY`` on BGR input).
- PSNR (``psnr``, correct): ``20 * log10(255 / sqrt(MSE))`` with the MSE of the float differences over all
  pixels and channels; identical frames give ``PSNR_IDENTICAL`` = 100 dB (DisCo's value for MSE = 0).
- PSNR, DisCo protocol (``psnr_disco``): DisCo's ``psnr_eval`` as written. It gets the ``cv2.imread`` uint8
  arrays, so ``mean((gen - gt) ** 2)`` is computed in uint8: the difference wraps modulo 256 and so does its
  square. Per pixel that is ``(gen - gt)**2 mod 256`` (the sign does not matter), at most 249 (the largest
  square modulo 256), so the "MSE" is never above the true one and the value never below 24.17 dB; MSE = 0
  gives 100. Every TikTok-table PSNR computed with DisCo's script (MagicPose 29.53, DisCo 29.03) is this number
  (DisCo issue #86, MagicDance issue #20); papers that compute PSNR correctly print far lower values.
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


def _psnr_of_mse(mse: float) -> float:
    return PSNR_IDENTICAL if mse == 0.0 else 20.0 * math.log10(255.0 / math.sqrt(mse))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Correct PSNR in dB on 0-255 values (float MSE); ``PSNR_IDENTICAL`` when the frames are equal."""
    return _psnr_of_mse(float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def psnr_disco(a: np.ndarray, b: np.ndarray) -> float:
    """DisCo's published-protocol PSNR: the MSE of uint8 differences squared in uint8 (wrap-around), not a PSNR."""
    a_bgr, b_bgr = np.asarray(a, np.uint8)[..., ::-1], np.asarray(b, np.uint8)[..., ::-1]  # cv2.imread order
    wrapped = (a_bgr - b_bgr) ** 2  # uint8 arithmetic: both the difference and the square wrap modulo 256
    return _psnr_of_mse(float(np.mean(wrapped)))


def l1(a: np.ndarray, b: np.ndarray) -> float:
    """DisCo's L1: mean absolute difference (0-255) divided by H * W."""
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))  # (H, W, 3)
    return float(diff.mean() / (a.shape[0] * a.shape[1]))
