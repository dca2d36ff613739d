"""Which frames of a driving video are used: frame cap, skip, every n-th and a forced frame rate.

The four controls and their order follow Kosinkadink/ComfyUI-VideoHelperSuite's "Load Video" (same names, same
meaning), so VideoHelperSuite users find what they expect:

1. ``force_rate`` (0 = off): the source is first resampled to this rate by time; resampled frame j shows source
   frame ``ceil(j * source_fps / force_rate)`` (frames are dropped or repeated, never blended).
2. ``skip_first_frames``: the first frames of that sequence are dropped.
3. ``select_every_nth``: of the rest, every n-th frame is kept (the 1st, the n+1-th, ...).
4. ``frame_load_cap`` (0 = all): at most this many frames are kept.

The kept frames play at ``rate / select_every_nth`` (``rate`` = ``force_rate`` or the source rate), and the sound
that goes with them starts at ``skip_first_frames / rate`` and lasts as long as the kept frames.

A contiguous range [a, b) of the kept frames is itself a selection (``subrange``): skip ``skip + a * nth``, cap
``b - a``; the multi-server client (magicpose_core.client) splits a video this way. Standard library only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")

MAX_FRAME_CAP = 100_000          # about 55 minutes at 30 fps
MAX_SKIP = 10_000_000
MAX_NTH = 1_000
MAX_FORCE_RATE = 240.0


def as_rate(fps: float | Fraction | int, what: str = "fps") -> Fraction:
    """A frame rate as an exact fraction (29.97 -> 2997/100, 30000/1001 stays), bounded to (0, 1000]."""
    if isinstance(fps, Fraction):
        rate = fps
    else:
        value = float(fps)
        if not math.isfinite(value):
            raise ValueError(f"{what} must be a finite number, got {fps!r}")
        rate = Fraction(value).limit_denominator(1001)
    if rate <= 0 or rate > 1000:
        raise ValueError(f"{what} must be in (0, 1000], got {float(rate):g}")
    return rate


@dataclass(frozen=True)
class FrameSelection:
    """The four controls (module docstring); ``check()`` bounds them."""

    frame_load_cap: int = 0
    skip_first_frames: int = 0
    select_every_nth: int = 1
    force_rate: float = 0.0

    def check(self) -> FrameSelection:
        for name, value, top in (("frame_load_cap", self.frame_load_cap, MAX_FRAME_CAP),
                                 ("skip_first_frames", self.skip_first_frames, MAX_SKIP),
                                 ("select_every_nth", self.select_every_nth, MAX_NTH)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an integer, got {value!r}")
            if not (1 if name == "select_every_nth" else 0) <= value <= top:
                low = 1 if name == "select_every_nth" else 0
                raise ValueError(f"{name} must be between {low} and {top}, got {value}")
        rate = float(self.force_rate)
        if not math.isfinite(rate) or not 0 <= rate <= MAX_FORCE_RATE:
            raise ValueError(f"force_rate must be 0 (off) or a frame rate up to {MAX_FORCE_RATE:g}, got {rate}")
        return self

    @property
    def is_identity(self) -> bool:
        return (self.frame_load_cap, self.skip_first_frames, self.select_every_nth, self.force_rate) == (0, 0, 1, 0)

    def rate(self, source_fps: float | Fraction) -> Fraction:
        """Frame rate of the resampled sequence (step 1): force_rate, or the source rate."""
        return as_rate(self.force_rate, "force_rate") if self.force_rate else as_rate(source_fps, "source fps")

    def output_fps(self, source_fps: float | Fraction) -> Fraction:
        """Frame rate of the kept frames: rate / select_every_nth."""
        return self.rate(source_fps) / self.select_every_nth

    def resampled_count(self, source_frames: int, source_fps: float | Fraction) -> int:
        """Frames after step 1, for a source of `source_frames` frames."""
        if source_frames <= 0:
            return 0
        if not self.force_rate:
            return source_frames
        ratio = self.rate(source_fps) / as_rate(source_fps, "source fps")       # resampled frames per source frame
        return math.floor((source_frames - 1) * ratio) + 1

    def kept_count(self, source_frames: int, source_fps: float | Fraction) -> int:
        """How many frames the selection keeps from a source of `source_frames` frames."""
        left = self.resampled_count(source_frames, source_fps) - self.skip_first_frames
        if left <= 0:
            return 0
        n = -(-left // self.select_every_nth)
        return min(n, self.frame_load_cap) if self.frame_load_cap else n

    def source_index(self, resampled: int, source_fps: float | Fraction) -> int:
        """The source frame shown by resampled frame `resampled` (step 1)."""
        if not self.force_rate:
            return resampled
        return math.ceil(resampled * as_rate(source_fps, "source fps") / self.rate(source_fps))

    def source_indices(self, source_frames: int, source_fps: float | Fraction) -> list[int]:
        """Source frame index of every kept frame, in order."""
        first, step = self.skip_first_frames, self.select_every_nth
        return [self.source_index(first + k * step, source_fps) for k in range(self.kept_count(source_frames,
                                                                                               source_fps))]

    def select(self, frames: Iterable[T], source_fps: float | Fraction) -> Iterator[T]:
        """The kept items of a stream of source frames, in order (a frame repeats when force_rate is above the
        source rate); stops reading the stream once the cap is reached."""
        src = as_rate(source_fps, "source fps")
        ratio = self.rate(src) / src if self.force_rate else Fraction(1)
        first, step, cap = self.skip_first_frames, self.select_every_nth, self.frame_load_cap
        kept = 0
        for i, frame in enumerate(frames):
            # resampled indices j shown by source frame i: ceil(j / ratio) == i  <=>  (i - 1) * ratio < j <= i * ratio
            lo = 0 if i == 0 else math.floor((i - 1) * ratio) + 1
            hi = math.floor(i * ratio)
            for j in range(lo, hi + 1):
                if j >= first and (j - first) % step == 0:
                    yield frame
                    kept += 1
                    if cap and kept >= cap:
                        return

    def audio_span(self, kept: int, source_fps: float | Fraction) -> tuple[Fraction, Fraction]:
        """(start, duration) in seconds of the sound that goes with `kept` selected frames."""
        rate = self.rate(source_fps)
        return Fraction(self.skip_first_frames) / rate, Fraction(kept * self.select_every_nth) / rate

    def subrange(self, start: int, stop: int) -> FrameSelection:
        """The selection of kept frames [start, stop) of this one (a contiguous range of the output)."""
        if not 0 <= start < stop or (self.frame_load_cap and stop > self.frame_load_cap):
            raise ValueError(f"frame range [{start}, {stop}) is not inside this selection")
        return replace(self, skip_first_frames=self.skip_first_frames + start * self.select_every_nth,
                       frame_load_cap=stop - start).check()
