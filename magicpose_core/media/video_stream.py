"""Reading a driving video one frame at a time, scaled at decode time, for the streaming render.

``stream_frames`` yields the frames a ``FrameSelection`` keeps, as RGB uint8, one at a time: nothing of the clip
is held. Frames whose short side is above ``short_side_limit`` are scaled down by FFmpeg's swscale (area
averaging) while they are converted from the decoder's YUV, so a 4K driving video never exists as a 4K RGB array;
frames at or below the limit are converted exactly as ``video.read_frames`` converts them (the same pixels as
MagicPose Select Frames).

Variable frame rate: frames are used in decoding order at the stream's average rate, as Select Frames uses them;
``rate_variation`` measures how irregular the timestamps are so the glue can say so.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Iterator

import numpy as np

from .frame_selection import FrameSelection
from .video import _open, _stream_rate, _video_stream

DEFAULT_SHORT_SIDE_LIMIT = 1080   # 1080p and smaller decode unscaled; 1440p / 4K are scaled to 1080 on the short side
VFR_TOLERANCE = 0.05              # frame durations further than 5 % from the median count as a variable rate


def decode_size(width: int, height: int, short_side_limit: int) -> tuple[int, int]:
    """(width, height) a frame is decoded at: unchanged up to the limit, else the short side scaled to the limit
    (aspect kept, even sizes)."""
    if short_side_limit < 64:
        raise ValueError(f"short_side_limit must be at least 64 pixels, got {short_side_limit}")
    short = min(width, height)
    if short <= short_side_limit:
        return width, height
    scale = short_side_limit / short
    return max(2, 2 * round(width * scale / 2)), max(2, 2 * round(height * scale / 2))


def _rgb(frame, size: tuple[int, int] | None) -> np.ndarray:
    if size is None:
        rgb = frame.to_ndarray(format="rgb24")                                      # (H, W, 3) uint8
    else:
        rgb = frame.reformat(width=size[0], height=size[1], format="rgb24", interpolation="AREA").to_ndarray()
    rotation = getattr(frame, "rotation", 0) or 0
    if rotation:
        rgb = np.ascontiguousarray(np.rot90(rgb, k=int(round(rotation / 90)), axes=(0, 1)))
    return rgb


def stream_frames(source: Any, selection: FrameSelection,
                  short_side_limit: int = DEFAULT_SHORT_SIDE_LIMIT) -> Iterator[np.ndarray]:
    """The kept frames of a video file (path or file object), RGB uint8 (H, W, 3), one at a time."""
    selection.check()
    with _open(source) as container:
        stream = _video_stream(container)
        stream.thread_type = "AUTO"
        src = _stream_rate(stream)
        w, h = stream.codec_context.width, stream.codec_context.height
        target = decode_size(w, h, short_side_limit)
        size = None if target == (w, h) else target
        for frame in selection.select(container.decode(stream), src):
            yield _rgb(frame, size)


@dataclass(frozen=True)
class RateCheck:
    """How regular a stream's timestamps are: the average rate and the largest relative deviation of a frame's
    duration from the median duration (0 for a constant rate)."""

    fps: Fraction
    variation: float

    @property
    def variable(self) -> bool:
        return self.variation > VFR_TOLERANCE


def rate_variation(source: Any) -> RateCheck:
    """Frame-duration spread of a video file from its packet timestamps (nothing decoded)."""
    with _open(source) as container:
        stream = _video_stream(container)
        pts = sorted(p.pts for p in container.demux(stream) if p.size and p.pts is not None)
        rate = _stream_rate(stream)
    if len(pts) < 3:
        return RateCheck(rate, 0.0)
    d = np.diff(np.asarray(pts, dtype=np.float64))                                  # (N-1,) in time-base units
    med = float(np.median(d))
    if med <= 0:
        return RateCheck(rate, 0.0)
    return RateCheck(rate, float(np.abs(d - med).max() / med))
