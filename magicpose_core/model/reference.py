"""The reference identity: the MAGICPOSE_REFERENCE value passed between nodes.

MagicPose (ICML 2024, arXiv 2311.12052) feeds the clean VAE latent of one reference photo to the
Appearance Control Model at every denoising step (docs/method.md §4). This dataclass carries that
latent plus what the other nodes need: its pixel size, a hash of the source (for caching and logs),
the reference person's keypoints (for retargeting) and the fit geometry (for cropping outputs back).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ..media.geometry import FitGeometry

LATENT_CHANNELS = 4  # SD1.5 VAE
LATENT_SCALE = 8     # pixels per latent cell


@dataclass(frozen=True, eq=False)
class MagicPoseReference:
    """A prepared reference image. ``latent`` is the raw VAE latent (before the x0.18215 of
    ``latent_format.process_in``), shape (1, 4, height/8, width/8)."""

    latent: torch.Tensor
    width: int
    height: int
    source_hash: str
    keypoints: Any = None                  # magicpose_core.pose PoseFrame in prepared-image pixels, or None
    geometry: FitGeometry | None = None    # how the source photo was fitted to width x height
    image: torch.Tensor | None = field(default=None, repr=False)  # (1, H, W, 3) prepared pixels in [0, 1]

    def __post_init__(self) -> None:
        lat = self.latent
        if not isinstance(lat, torch.Tensor) or lat.ndim != 4 or lat.shape[0] != 1 or lat.shape[1] != LATENT_CHANNELS:
            shape = tuple(lat.shape) if isinstance(lat, torch.Tensor) else type(lat).__name__
            raise ValueError(f"a MagicPose reference latent must have shape (1, 4, H/8, W/8), got {shape}")
        if (lat.shape[2] * LATENT_SCALE, lat.shape[3] * LATENT_SCALE) != (self.height, self.width):
            raise ValueError(f"reference latent {tuple(lat.shape)} does not match the pixel size "
                             f"{self.width}x{self.height}")

    @property
    def latent_size(self) -> tuple[int, int]:
        """(height, width) in latent cells."""
        return int(self.latent.shape[2]), int(self.latent.shape[3])

    def latent_resized(self, height: int, width: int) -> torch.Tensor:
        """The latent at another latent size (height, width), bilinear; unchanged when it already matches."""
        if self.latent_size == (height, width):
            return self.latent
        return F.interpolate(self.latent.float(), size=(height, width), mode="bilinear", align_corners=False,
                             antialias=True).to(self.latent.dtype)

    @classmethod
    def from_latent(cls, latent: torch.Tensor, source_hash: str | None = None) -> "MagicPoseReference":
        """Wrap a plain LATENT sample (first batch item) as a reference."""
        lat = latent[:1]
        return cls(latent=lat, width=int(lat.shape[3]) * LATENT_SCALE, height=int(lat.shape[2]) * LATENT_SCALE,
                   source_hash=source_hash or tensor_hash(lat))


def tensor_hash(t: torch.Tensor) -> str:
    """A short content hash of a tensor (sha256 of its float32 bytes, 16 hex digits)."""
    data = t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
    return hashlib.sha256(data).hexdigest()[:16]
