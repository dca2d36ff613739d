"""The one adapter between ComfyUI IMAGE tensors (B, H, W, C) float in [0, 1] and numpy HWC uint8 frames."""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import torch


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """IMAGE (B, H, W, C) or (H, W, C) float 0..1 -> uint8 numpy of the same layout (rounded, clamped)."""
    return (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def iter_uint8(images: torch.Tensor, chunk: int = 16) -> Iterator[np.ndarray]:
    """Yield HWC uint8 frames of an IMAGE batch, converting `chunk` frames at a time (no full uint8 copy)."""
    for i in range(0, images.shape[0], chunk):
        yield from to_uint8(images[i:i + chunk])


def from_uint8(frames: np.ndarray | Iterable[np.ndarray]) -> torch.Tensor:
    """HWC uint8 frame(s) -> IMAGE (B, H, W, C) float32 in [0, 1]."""
    arr = np.asarray(frames) if isinstance(frames, np.ndarray) else np.stack(list(frames))
    if arr.ndim == 3:
        arr = arr[None]  # (H, W, C) -> (1, H, W, C)
    if arr.ndim != 4:
        raise ValueError(f"expected HWC frames, got an array of shape {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr)).float().div_(255.0)
