"""Checking a file or frames for MagicPose provenance: the invisible watermark and the metadata label.

A video is judged on up to ``MAX_CHECK_FRAMES`` frames spread over its length: RivaGAN's logits are
averaged over them before reading the bits (one decision per file), and the mean per-frame bit accuracy
is reported too. The mark counts as present when the averaged bits match a known MagicPose payload
(``payload.known_payloads``) in at least ``PRESENT_MIN_BITS`` of 32 places. For bits that were fair coin
flips that would happen with probability sum_{k>=28} C(32, k) / 2^32 ~ 1e-5 per known payload; the
measured false-positive count on real unmarked pictures is in the README (scripts/measure_provenance.py).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import IO, Iterable, Sequence

import numpy as np

from .label import find_label
from .payload import BITS, describe_bits, known_payloads
from .watermark import MAX_PIXELS, MIN_SIDE, WatermarkUnavailable, decode

PRESENT_MIN_BITS = 28
MAX_CHECK_FRAMES = 16
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class WatermarkReading:
    """What RivaGAN read from some frames, compared with the known MagicPose payloads."""

    frames: int              # frames decoded
    bits: np.ndarray         # (32,) uint8, from the logits averaged over the frames
    payload: str             # the matched payload when present, else the bits as text
    raw_payload: str         # the bits as read, as text ('MagicPose 0.1.0' or 'unknown payload 0x…')
    matched: str             # the known payload closest to the bits
    bit_accuracy: float      # share of the 32 averaged bits equal to ``matched``
    frame_accuracy: float    # mean share per single frame
    present: bool

    @property
    def matching_bits(self) -> int:
        return round(self.bit_accuracy * BITS)


@dataclass(frozen=True)
class ProvenanceReport:
    """The provenance of one file (or of frames handed over directly)."""

    source: str
    kind: str                                   # video | image | animation | frames
    width: int
    height: int
    frame_count: int | None                     # frames in the file (None when unknown)
    label: str | None                           # the 'AI-generated with MagicPose' metadata value, if any
    watermark: WatermarkReading | None = None
    error: str | None = None                    # why the watermark could not be read
    metadata_keys: tuple[str, ...] = field(default=())

    @property
    def present(self) -> bool:
        return self.watermark is not None and self.watermark.present

    def text(self) -> str:
        lines = [f"{self.source}: {self.kind} {self.width}x{self.height}"
                 + (f", {self.frame_count} frames" if self.frame_count and self.frame_count > 1 else "")]
        if self.watermark is not None:
            w = self.watermark
            lines.append(f"  watermark: {'PRESENT' if w.present else 'not found'} "
                         f"(bit accuracy {w.bit_accuracy:.3f} = {w.matching_bits}/{BITS} vs {w.matched}, "
                         f"threshold {PRESENT_MIN_BITS}/{BITS}; mean per frame {w.frame_accuracy:.3f} "
                         f"over {w.frames} frame{'s' if w.frames > 1 else ''})")
            lines.append(f"  decoded payload: {w.payload}"
                         + (f" (bits as read: {w.raw_payload})" if w.raw_payload != w.payload else ""))
        else:
            lines.append(f"  watermark: not checked ({self.error})")
        lines.append(f"  label: {self.label if self.label else 'none'}")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        w = self.watermark
        return {"source": self.source, "kind": self.kind, "width": self.width, "height": self.height,
                "frame_count": self.frame_count, "label": self.label, "error": self.error,
                "watermark": None if w is None else {
                    "present": w.present, "payload": w.payload, "raw_payload": w.raw_payload, "matched": w.matched,
                    "bit_accuracy": w.bit_accuracy, "frame_accuracy": w.frame_accuracy, "frames": w.frames,
                    "bits": "".join(str(int(b)) for b in w.bits)}}


def read_watermark(frames: Iterable[np.ndarray]) -> WatermarkReading:
    """Decode HWC uint8 RGB frames and compare them with the known payloads (raises WatermarkUnavailable)."""
    logits = np.stack([decode(f) for f in frames])  # (N, 32)
    if logits.shape[0] == 0:
        raise ValueError("no frames to check")
    bits = (logits.mean(axis=0) > 0).astype(np.uint8)  # (N, 32) -> (32,)
    per_frame = (logits > 0).astype(np.uint8)          # (N, 32)
    name, expected = max(known_payloads().items(), key=lambda kv: int((bits == kv[1]).sum()))
    accuracy = float((bits == expected).mean())
    present = accuracy * BITS >= PRESENT_MIN_BITS - 1e-9
    raw = describe_bits(bits)
    return WatermarkReading(int(logits.shape[0]), bits, name if present else raw, raw, name, accuracy,
                            float((per_frame == expected).mean()), present)


def spread(total: int, count: int = MAX_CHECK_FRAMES) -> list[int]:
    """Up to ``count`` frame indices spread evenly over ``total`` frames."""
    if total <= count:
        return list(range(total))
    return sorted({round(i * (total - 1) / (count - 1)) for i in range(count)})


def _bounded(w: int, h: int, source: str) -> None:
    if w * h > MAX_PIXELS:
        raise ValueError(f"{source}: {w}x{h} frames are over {MAX_PIXELS >> 20} MP; not checked")


def check_frames(frames: Sequence[np.ndarray], source: str = "frames", label: str | None = None,
                 kind: str = "frames") -> ProvenanceReport:
    """Check in-memory HWC uint8 RGB frames (e.g. a ComfyUI IMAGE batch): up to MAX_CHECK_FRAMES of them."""
    if len(frames) == 0:
        raise ValueError("no frames to check")
    h, w = frames[0].shape[:2]
    picked = [frames[i] for i in spread(len(frames))]
    return _report(source, kind, w, h, len(frames), label, picked)


def _report(source: str, kind: str, w: int, h: int, count: int | None, label: str | None,
            picked: list[np.ndarray], keys: tuple[str, ...] = ()) -> ProvenanceReport:
    if min(w, h) < MIN_SIDE:
        return ProvenanceReport(source, kind, w, h, count, label, None,
                                f"frames smaller than {MIN_SIDE} px cannot carry the watermark", keys)
    try:
        reading = read_watermark(picked)
    except WatermarkUnavailable as e:
        return ProvenanceReport(source, kind, w, h, count, label, None, str(e), keys)
    return ProvenanceReport(source, kind, w, h, count, label, reading, None, keys)


def _check_image(path: str) -> ProvenanceReport:
    from PIL import Image

    with Image.open(path) as im:
        _bounded(im.width, im.height, path)
        meta = {k: v for k, v in im.info.items() if isinstance(v, str)}
        count = getattr(im, "n_frames", 1)
        picked = []
        for i in spread(count):
            im.seek(i)
            picked.append(np.asarray(im.convert("RGB")))
        kind = "animation" if count > 1 else "image"
        return _report(path, kind, im.width, im.height, count, find_label(meta), picked, tuple(meta))


def check_video(source: str | IO[bytes], name: str | None = None) -> ProvenanceReport:
    """Check a video file (path or binary file object) that FFmpeg can read."""
    import av

    name = name or (source if isinstance(source, str) else "video")
    with av.open(source) as container:
        if not container.streams.video:
            raise ValueError(f"{name}: no video stream")
        stream = container.streams.video[0]
        w, h = stream.codec_context.width, stream.codec_context.height
        _bounded(w, h, name)
        meta = {**container.metadata, **stream.metadata}
        total = stream.frames
        if not total and stream.duration and stream.average_rate:
            total = int(round(float(stream.duration * stream.time_base * stream.average_rate)))
        wanted = set(spread(total)) if total else None
        picked, count = [], 0
        for frame in container.decode(stream):
            if wanted is None or count in wanted:
                picked.append(frame.to_ndarray(format="rgb24"))
            count += 1
        if wanted is None:
            picked = [picked[i] for i in spread(len(picked))]
    return _report(name, "video", w, h, count, find_label(meta), picked, tuple(meta))


def check_file(path: str) -> ProvenanceReport:
    """Check an image (png, jpg, webp, gif, …; animated ones frame by frame) or a video file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    if path.lower().endswith(IMAGE_SUFFIXES):
        return _check_image(path)
    return check_video(path)
