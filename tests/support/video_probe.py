"""Decode a written video back for tests: frame count, size, frame rate (from the timestamps), frames, audio.

PyAV decodes mp4/webm/gif; FFmpeg has no animated-webp decoder, so webp is read with Pillow.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np


@dataclass
class Probe:
    frames: int
    width: int
    height: int
    fps: float                # (n - 1) / (last timestamp - first timestamp)
    duration: float           # n / fps
    images: np.ndarray        # (n, H, W, 3) uint8
    audio: np.ndarray | None  # (C, S) float32
    sample_rate: int | None
    audio_codec: str | None
    metadata: dict

    @property
    def audio_seconds(self) -> float | None:
        return None if self.audio is None else self.audio.shape[1] / self.sample_rate


def _fps(times: list[float]) -> float:
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else float("nan")


def probe(path: str | Path) -> Probe:
    path = str(path)
    if path.endswith(".webp"):
        from PIL import Image

        im = Image.open(path)
        imgs, times = [], []
        for i in range(im.n_frames):
            im.seek(i)
            im.load()
            times.append(im.info["timestamp"] / 1000.0)
            imgs.append(np.asarray(im.convert("RGB")))
        fps = _fps(times)
        return Probe(len(imgs), im.size[0], im.size[1], fps, len(imgs) / fps, np.stack(imgs), None, None, None, {})

    import av

    with av.open(path) as c:
        vs = c.streams.video[0]
        imgs, times = [], []
        for f in c.decode(vs):
            times.append(float(f.pts * vs.time_base))
            imgs.append(f.to_ndarray(format="rgb24"))
        metadata = dict(c.metadata)
    audio = rate = codec = None
    with av.open(path) as c:
        if c.streams.audio:
            a = c.streams.audio[0]
            codec, rate = a.codec_context.name, a.codec_context.sample_rate
            parts = [f.to_ndarray().reshape(f.layout.nb_channels, -1) if f.format.is_planar
                     else f.to_ndarray().reshape(-1, f.layout.nb_channels).T for f in c.decode(a)]
            audio = np.concatenate(parts, axis=1).astype(np.float32)
    fps = _fps(times)
    h, w = imgs[0].shape[:2]
    return Probe(len(imgs), w, h, fps, len(imgs) / fps, np.stack(imgs), audio, rate, codec, metadata)


def fraction_close(a: float, b: float | Fraction, rel: float = 0.01) -> bool:
    return abs(a - float(b)) <= rel * float(b)
