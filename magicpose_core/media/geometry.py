"""Fit geometry: how a frame of any size becomes the model's W x H, and how an output goes back.

One code path serves the reference (LoadReference), the pose maps (ExtractPose) and crop-back
(FramesToVideo), so the same numbers give the same crop everywhere.

Modes:
- ``center_crop`` (official): the largest centred region with the target aspect, then a resize.
  Reproduces MagicDance@a515a1f test_any_image_pose.py ``center_crop_pose_to_512`` (behaviour only):
  torchvision ``RandomResizedCrop(512, scale=(1, 1), ratio=(1, 1))`` falls back to a centre square of
  side ``min(H, W)`` at ``top = (H - side) // 2``, ``left = (W - side) // 2``, then a bilinear resize
  (PIL, antialiased on downscale).
- ``letterbox``: the whole frame, scaled to fit, padded (black, white, gray, edge or reflect).
- ``stretch``: the whole frame resized to W x H, aspect not kept.

Point coordinates use the continuous pixel-edge convention of normalised keypoints
(``x_px = x_norm * width``): ``x_out = (x_src - crop_x) * box_w / crop_w + box_x``.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger("MagicPose")

FIT_MODES = ("center_crop", "letterbox", "stretch")
PAD_MODES = ("black", "white", "gray", "edge", "reflect")
_PAD_VALUES = {"black": 0.0, "white": 1.0, "gray": 0.5}


@dataclass(frozen=True)
class FitGeometry:
    """Where the used source region (crop) lands in the output (box); all in integer pixels."""

    src_w: int
    src_h: int
    dst_w: int
    dst_h: int
    mode: str
    crop_x: int  # used source region
    crop_y: int
    crop_w: int
    crop_h: int
    box_x: int  # its place in the output (smaller than the output only for letterbox)
    box_y: int
    box_w: int
    box_h: int

    @property
    def scale(self) -> tuple[float, float]:
        return self.box_w / self.crop_w, self.box_h / self.crop_h

    def map_points(self, xy: np.ndarray) -> np.ndarray:
        """Source pixel coordinates (..., 2) -> output pixel coordinates."""
        sx, sy = self.scale
        xy = np.asarray(xy, dtype=np.float64)
        out = np.empty_like(xy)
        out[..., 0] = (xy[..., 0] - self.crop_x) * sx + self.box_x
        out[..., 1] = (xy[..., 1] - self.crop_y) * sy + self.box_y
        return out

    def unmap_points(self, xy: np.ndarray) -> np.ndarray:
        """Output pixel coordinates (..., 2) -> source pixel coordinates."""
        sx, sy = self.scale
        xy = np.asarray(xy, dtype=np.float64)
        out = np.empty_like(xy)
        out[..., 0] = (xy[..., 0] - self.box_x) / sx + self.crop_x
        out[..., 1] = (xy[..., 1] - self.box_y) / sy + self.crop_y
        return out

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FitGeometry":
        return cls(**{k: (str(d[k]) if k == "mode" else int(d[k])) for k in cls.__dataclass_fields__})


SIZE_MULTIPLE = 8  # the SD1.5 VAE downsamples by 8: model-side widths and heights must be multiples of 8


def model_size_problem(width, height, minimum: int = 64, maximum: int = 4096) -> str | None:
    """None when width x height is a valid model size (integers in [minimum, maximum], multiples of 8), else what
    is wrong and the nearest valid size. One rule for every node that takes a size (rejected, never rounded)."""
    for name, v in (("width", width), ("height", height)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            return f"{name} must be a whole number of pixels, got {v!r}"
        if not minimum <= v <= maximum:
            return f"{name} {v} is outside {minimum}-{maximum}"
    if width % SIZE_MULTIPLE or height % SIZE_MULTIPLE:
        def near(v: int) -> int:
            return min(maximum, max(minimum, SIZE_MULTIPLE * round(v / SIZE_MULTIPLE)))
        return (f"width and height must be multiples of {SIZE_MULTIPLE} (the VAE works on 8x8 blocks), got "
                f"{width}x{height}; use {near(width)}x{near(height)}")
    return None


def fit_geometry(src_w: int, src_h: int, dst_w: int, dst_h: int, mode: str = "center_crop") -> FitGeometry:
    """The crop and box that fit a src_w x src_h frame into dst_w x dst_h with the given mode."""
    if mode not in FIT_MODES:
        raise ValueError(f"fit mode {mode!r} is not one of {', '.join(FIT_MODES)}")
    for name, v in (("source width", src_w), ("source height", src_h), ("width", dst_w), ("height", dst_h)):
        if int(v) != v or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    src_w, src_h, dst_w, dst_h = int(src_w), int(src_h), int(dst_w), int(dst_h)
    crop = (0, 0, src_w, src_h)
    box = (0, 0, dst_w, dst_h)
    if mode == "center_crop":
        if src_w * dst_h > src_h * dst_w:  # source wider than the target aspect: cut the sides
            cw, ch = min(src_w, max(1, round(src_h * dst_w / dst_h))), src_h
        else:  # taller (or equal): cut top and bottom
            cw, ch = src_w, min(src_h, max(1, round(src_w * dst_h / dst_w)))
        crop = ((src_w - cw) // 2, (src_h - ch) // 2, cw, ch)
    elif mode == "letterbox":
        s = min(dst_w / src_w, dst_h / src_h)
        bw, bh = min(dst_w, max(1, round(src_w * s))), min(dst_h, max(1, round(src_h * s)))
        box = ((dst_w - bw) // 2, (dst_h - bh) // 2, bw, bh)
    return FitGeometry(src_w, src_h, dst_w, dst_h, mode, *crop, *box)


def resize_images(images: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """(B, H, W, C) float -> (B, height, width, C), bilinear with antialiasing (PIL-like on downscale)."""
    if images.shape[1] == height and images.shape[2] == width:
        return images
    x = images.movedim(-1, 1)  # (B, H, W, C) -> (B, C, H, W)
    x = F.interpolate(x.float(), size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return x.movedim(1, -1).to(images.dtype)  # (B, C, h, w) -> (B, h, w, C)


def _pad_box(box: torch.Tensor, g: FitGeometry, pad: str) -> torch.Tensor:
    """Place (B, box_h, box_w, C) into (B, dst_h, dst_w, C) with the pad mode."""
    left, top = g.box_x, g.box_y
    right, bottom = g.dst_w - g.box_x - g.box_w, g.dst_h - g.box_y - g.box_h
    if (left, top, right, bottom) == (0, 0, 0, 0):
        return box
    x = box.movedim(-1, 1)  # (B, C, h, w)
    if pad in _PAD_VALUES:
        x = F.pad(x, (left, right, top, bottom), mode="constant", value=_PAD_VALUES[pad])
    else:
        mode = "replicate" if pad == "edge" else "reflect"
        if mode == "reflect" and (max(left, right) >= g.box_w or max(top, bottom) >= g.box_h):
            log.warning("letterbox pad 'reflect' needs padding smaller than the image; using 'edge' instead")
            mode = "replicate"
        x = F.pad(x.float(), (left, right, top, bottom), mode=mode).to(box.dtype)
    return x.movedim(1, -1)  # (B, dst_h, dst_w, C)


def fit_images(images: torch.Tensor, geometry: FitGeometry, pad: str = "black", chunk: int = 16) -> torch.Tensor:
    """Apply a fit to an IMAGE batch (B, src_h, src_w, C) in [0, 1] -> (B, dst_h, dst_w, C).

    Works in chunks into one preallocated output, so a long video never needs a second full copy.
    """
    g = geometry
    if images.ndim != 4:
        raise ValueError(f"expected an image batch (B, H, W, C), got shape {tuple(images.shape)}")
    if (images.shape[2], images.shape[1]) != (g.src_w, g.src_h):
        raise ValueError(f"image batch is {images.shape[2]}x{images.shape[1]} but the fit was computed for "
                         f"{g.src_w}x{g.src_h}")
    if pad not in PAD_MODES:
        raise ValueError(f"pad mode {pad!r} is not one of {', '.join(PAD_MODES)}")
    out = torch.empty((images.shape[0], g.dst_h, g.dst_w, images.shape[3]), dtype=images.dtype, device=images.device)
    for i in range(0, images.shape[0], chunk):
        part = images[i:i + chunk, g.crop_y:g.crop_y + g.crop_h, g.crop_x:g.crop_x + g.crop_w]
        part = resize_images(part, g.box_w, g.box_h)
        out[i:i + chunk] = _pad_box(part, g, pad)
    return out


def crop_back(images: torch.Tensor, geometry: FitGeometry, resize: bool = True, chunk: int = 16) -> torch.Tensor:
    """Undo a fit on outputs (B, dst_h, dst_w, C): drop the letterbox padding and, with ``resize``,
    scale back to the source size (``center_crop``: the size of the used source region)."""
    g = geometry
    if (images.shape[2], images.shape[1]) != (g.dst_w, g.dst_h):
        raise ValueError(f"images are {images.shape[2]}x{images.shape[1]} but the reference was fitted to "
                         f"{g.dst_w}x{g.dst_h}; crop-back needs frames of the fitted size")
    w, h = (g.crop_w, g.crop_h) if resize else (g.box_w, g.box_h)
    out = torch.empty((images.shape[0], h, w, images.shape[3]), dtype=images.dtype, device=images.device)
    for i in range(0, images.shape[0], chunk):
        part = images[i:i + chunk, g.box_y:g.box_y + g.box_h, g.box_x:g.box_x + g.box_w]
        out[i:i + chunk] = resize_images(part, w, h)
    return out
