"""FID as in DisCo's ``tool/metrics/metric_center.py`` (type ``fid`` / ``clean-fid``): clean-fid's "clean" mode.

Every generated frame and every ground-truth frame is resized to 299x299 with PIL bicubic on float channels
(clean-fid ``build_resizer('clean')``), embedded by the TorchScript Inception-v3 (2048-d pool features), and
the Fréchet distance between the two Gaussian fits is reported (clean-fid ``fid_from_feats``). The statistics
pool **all** frames of each set, so FID of a short clip is strongly biased upwards (the covariance of 2048-d
features needs thousands of frames; the paper used the whole TikTok test set).

clean-fid is an optional extra; its Inception file comes from the weights folder (weights.py), and clean-fid
downloads nothing here (``download=False``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .pixel import MetricUnavailable

CLEANFID_INSTALL = 'pip install clean-fid  (or: pip install "magicpose[metrics]")'
FID_RELIABLE_SAMPLES = 2048  # fewer samples than feature dimensions: a rank-deficient covariance


def _cleanfid():
    try:
        from cleanfid import fid, inception_torchscript, resize
    except ImportError:
        raise MetricUnavailable(f"FID needs clean-fid: {CLEANFID_INSTALL}") from None
    return fid, inception_torchscript, resize


def frechet_from_features(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance of two feature sets (N, D): clean-fid's ``fid_from_feats`` (mean, np.cov, sqrtm).

    With fewer samples than dimensions (any clip shorter than 2048 frames) the same distance is computed
    exactly without the D x D ``sqrtm``: with centred features A, B, tr sqrt(S_a S_b) is the sum of the singular
    values of A B^T / sqrt((n_a - 1)(n_b - 1)) (the nonzero spectrum of S_a S_b is that of M M^T). ``sqrtm`` of a
    rank-deficient 2048 x 2048 product takes minutes on a CPU and is inaccurate there.
    """
    if len(a) < 2 or len(b) < 2:
        raise MetricUnavailable(f"a Fréchet distance needs at least 2 samples per set, got {len(a)} and {len(b)}")
    if min(len(a), len(b)) > a.shape[1]:
        fid, _, _ = _cleanfid()
        return float(fid.fid_from_feats(a, b))
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = a - mu_a, b - mu_b  # (n_a, D), (n_b, D)
    tr_a = (ca ** 2).sum() / (len(a) - 1)  # tr(S_a)
    tr_b = (cb ** 2).sum() / (len(b) - 1)
    m = ca @ cb.T / np.sqrt((len(a) - 1) * (len(b) - 1))  # (n_a, n_b)
    tr_sqrt = np.linalg.svd(m, compute_uv=False).sum()  # tr sqrt(S_a S_b)
    diff = mu_a - mu_b
    return float(diff @ diff + tr_a + tr_b - 2.0 * tr_sqrt)


class InceptionFeatures:
    """Callable: frames (HWC uint8 RGB) -> (N, 2048) clean-fid Inception features."""

    def __init__(self, inception_path: str | Path, device: str = "cpu", batch_size: int = 16) -> None:
        _, inception_torchscript, resize = _cleanfid()
        folder = Path(inception_path).parent
        self.model = inception_torchscript.InceptionV3W(str(folder), download=False, resize_inside=False).to(device)
        self.model.eval()
        self.resize = resize.build_resizer("clean")
        self.device, self.batch_size = device, batch_size

    @torch.no_grad()
    def __call__(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        feats = []
        for i in range(0, len(frames), self.batch_size):
            batch = [self.resize(f).transpose(2, 0, 1) for f in frames[i:i + self.batch_size]]  # (3, 299, 299) 0-255
            x = torch.from_numpy(np.stack(batch)).float().to(self.device)  # (B, 3, 299, 299)
            feats.append(self.model(x).cpu().numpy().astype(np.float64))  # (B, 2048)
        return np.concatenate(feats)
