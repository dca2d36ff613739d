"""FID-VID as in DisCo's ``metric_center.py`` type ``fid-vid`` ("FVD-3DRN50"), run on frame sequences.

Clips: every window of ``CLIP_FRAMES`` = 16 consecutive frames, stride 1 (DisCo's frame-folder dataset builds
one clip per start frame whose 15 successors exist; ``gen_eval.sh`` passes ``--sample_duration 16``).
Each frame is resized to 112x112 with PIL bicubic on float channels (DisCo's resizer), the Kinetics pixel
mean (114.7748, 107.7354, 99.4750) is subtracted from the 0-255 RGB values, and the 3D ResNet-50 (resnet3d.py)
gives one 2048-d feature per clip. FID-VID is the Fréchet distance between the generated and ground-truth
clip features (fid.py).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .fid import _cleanfid, frechet_from_features
from .pixel import MetricUnavailable
from .resnet3d import load_resnet3d50

CLIP_FRAMES = 16
CLIP_SIZE = 112
KINETICS_MEAN = np.array([114.7748, 107.7354, 99.4750], dtype=np.float32)


class ClipFeatures:
    """Callable: frames (HWC uint8 RGB) -> (num_clips, 2048) features of the stride-1 16-frame windows."""

    def __init__(self, resnet_path: str | Path, device: str = "cpu") -> None:
        _, _, resize = _cleanfid()
        self.resize = resize.make_resizer("PIL", False, "bicubic", (CLIP_SIZE, CLIP_SIZE))
        self.model = load_resnet3d50(resnet_path).to(device)
        self.device = device

    @torch.no_grad()
    def __call__(self, frames: Sequence[np.ndarray], on_clip: Callable[[int, int], None] | None = None) -> np.ndarray:
        n_clips = len(frames) - CLIP_FRAMES + 1
        if n_clips < 1:
            raise MetricUnavailable(f"FID-VID needs at least {CLIP_FRAMES} frames, got {len(frames)}")
        small = np.stack([self.resize(f) - KINETICS_MEAN for f in frames])  # (N, 112, 112, 3) float32
        video = torch.from_numpy(small).permute(3, 0, 1, 2)  # (3, N, 112, 112)
        feats = []
        for s in range(n_clips):
            clip = video[:, s:s + CLIP_FRAMES][None].to(self.device)  # (1, 3, 16, 112, 112)
            feats.append(self.model(clip).cpu().numpy().astype(np.float64))  # (1, 2048)
            if on_clip is not None:
                on_clip(s + 1, n_clips)
        return np.concatenate(feats)  # (num_clips, 2048)


def fid_vid(features: ClipFeatures, gen: Sequence[np.ndarray], gt: Sequence[np.ndarray]) -> tuple[float, int]:
    """(FID-VID, number of clips per set)."""
    a, b = features(gen), features(gt)
    return frechet_from_features(a, b), len(a)
