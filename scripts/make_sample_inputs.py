"""Sample inputs for `make demo` and the end-to-end workflow tests, synthesised at run time.

Nothing is downloaded and nothing binary is committed: the two people are portraits that ship inside
registry packages the test environment installs, and the motion and sound are made by code.

- Reference photo: scikit-image's ``astronaut`` (NASA portrait of Eileen Collins, public domain; bundled in the
  scikit-image wheel, ``skimage.data.astronaut()`` reads it from disk).
- Driving person: matplotlib's ``grace_hopper.jpg`` sample (US Navy portrait of Grace Hopper, public domain;
  bundled in the matplotlib wheel, ``matplotlib.cbook.get_sample_data``).
- ``driving.mp4``: the driving portrait under a known affine motion (``dance_motion``: a sway of rotation,
  sideways shift, bob and zoom, one period over the clip), h264, with a short synthesised melody as AAC audio.
- ``driving_poses.png``: an animated PNG with one fixed pose of the driving portrait per frame (``POSES``); core
  Load Image reads every frame, so it loads as an IMAGE batch of target poses.
- ``face_driving.mp4``: a close-up of the driving face with a small head motion and a mouth that opens and
  closes (a smooth vertical stretch of the lower face, ``face_motion``), h264 + AAC.

    .venv/bin/python scripts/make_sample_inputs.py OUTDIR [--frames 8] [--fps 8] [--height 448]

The functions are importable (the tests load this file with importlib); the frames they make are deterministic
(the same arguments give the same pixels before encoding).
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # appended, never prepended (our nodes/ must not shadow ComfyUI's)

SAMPLE_RATE = 44100
# Approximate box of Grace Hopper's face in grace_hopper.jpg (512x600): x0, y0, x1, y1; and the nose-to-chin band
# the mouth motion stretches (measured on the image once, by eye).
FACE_BOX = (140, 100, 390, 360)
JAW_BAND = (255, 335)


@dataclass(frozen=True)
class Affine:
    """A similarity transform about the image centre: rotation (degrees, counter-clockwise), zoom, shift
    (fractions of the width / height)."""

    angle: float = 0.0
    scale: float = 1.0
    dx: float = 0.0
    dy: float = 0.0


# The target poses of driving_poses.png: upright, tilted both ways, closer, shifted.
POSES = (Affine(), Affine(angle=12.0, dx=-0.06), Affine(angle=-12.0, dx=0.06), Affine(scale=1.2, dy=0.08),
         Affine(angle=6.0, scale=0.85, dy=-0.04))


# --- the pictures ------------------------------------------------------------------------------------------

def reference_photo() -> np.ndarray:
    """The identity: (512, 512, 3) uint8 RGB."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def driver_photo() -> np.ndarray:
    """The driving person: (600, 512, 3) uint8 RGB."""
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        return np.asarray(Image.open(f).convert("RGB")).copy()


def warp(image: np.ndarray, a: Affine, width: int, height: int) -> np.ndarray:
    """`image` transformed by `a` about its centre, then resized to width x height (edges replicated)."""
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), a.angle, a.scale)  # (2, 3)
    m[0, 2] += a.dx * w
    m[1, 2] += a.dy * h
    moved = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return cv2.resize(moved, (width, height), interpolation=cv2.INTER_AREA)


def dance_motion(i: int, n: int) -> Affine:
    """The known motion of frame i of n: one period of a sway over the clip."""
    p = 2.0 * math.pi * i / max(n, 1)
    return Affine(angle=10.0 * math.sin(p), scale=1.0 + 0.08 * math.sin(2 * p), dx=0.08 * math.sin(p),
                  dy=0.03 * math.sin(2 * p))


def dance_frames(n: int, width: int, height: int) -> np.ndarray:
    """(n, height, width, 3) uint8: the driving portrait under `dance_motion`."""
    photo = driver_photo()
    return np.stack([warp(photo, dance_motion(i, n), width, height) for i in range(n)])


def pose_frames(width: int, height: int, count: int = len(POSES)) -> np.ndarray:
    """(count, height, width, 3) uint8: the driving portrait in the first `count` POSES."""
    if not 1 <= count <= len(POSES):
        raise ValueError(f"count must be 1..{len(POSES)}, got {count}")
    photo = driver_photo()
    return np.stack([warp(photo, a, width, height) for a in POSES[:count]])


def face_motion(i: int, n: int) -> tuple[Affine, float]:
    """(head motion, mouth opening in [0, 1]) of frame i of n: a nod and two open-close cycles."""
    p = 2.0 * math.pi * i / max(n, 1)
    return Affine(angle=5.0 * math.sin(p), dy=0.02 * math.sin(p)), 0.5 - 0.5 * math.cos(2 * p)


def open_mouth(image: np.ndarray, opening: float) -> np.ndarray:
    """Stretch the band between nose and chin downwards by up to 12 % (a jaw drop), smoothly across the face."""
    h, w = image.shape[:2]
    x0, _, x1, _ = FACE_BOX
    top, bottom = JAW_BAND
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    # horizontal weight: 1 in the middle of the face, 0 at its sides (a raised cosine)
    u = np.clip((xs - x0) / (x1 - x0), 0.0, 1.0)
    across = 0.5 - 0.5 * np.cos(2.0 * np.pi * u)
    # vertical displacement: 0 above the band, growing linearly through it, fading out below the chin
    drop = 0.12 * (bottom - top) * opening
    t = np.clip((ys - top) / (bottom - top), 0.0, 1.0)
    fade = np.clip(1.0 - (ys - bottom) / (0.3 * (bottom - top)), 0.0, 1.0)
    shift = drop * t * np.where(ys > bottom, fade, 1.0) * across
    return cv2.remap(image, xs, ys - shift, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def face_frames(n: int, width: int, height: int) -> np.ndarray:
    """(n, height, width, 3) uint8: a close-up of the driving face, nodding and talking."""
    photo = driver_photo()
    x0, y0, x1, y1 = FACE_BOX
    pad = 60
    out = []
    for i in range(n):
        head, opening = face_motion(i, n)
        frame = open_mouth(photo, opening)
        crop = frame[max(y0 - pad, 0):y1 + 2 * pad, max(x0 - pad, 0):x1 + pad]  # head and shoulders
        out.append(warp(crop, head, width, height))
    return np.stack(out)


def melody(seconds: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(2, S) float32 stereo: a short arpeggio (A major) with soft attacks, left and right slightly apart."""
    s = int(round(seconds * sample_rate))
    t = np.arange(s, dtype=np.float64) / sample_rate
    notes = (440.0, 554.37, 659.25, 880.0)
    step = 0.25
    idx = (t // step).astype(int) % len(notes)
    freq = np.asarray(notes)[idx]
    env = np.minimum(1.0, (t % step) / 0.02) * np.exp(-3.0 * (t % step))
    left = 0.3 * env * np.sin(2 * np.pi * freq * t)
    right = 0.3 * env * np.sin(2 * np.pi * freq * 1.003 * t)
    return np.stack([left, right]).astype(np.float32)


# --- files -------------------------------------------------------------------------------------------------

def write_video(path: str | Path, frames: np.ndarray, fps: float, with_audio: bool = True) -> Path:
    """An h264 mp4 of `frames` at `fps` with `melody` as its sound (the pack's own PyAV encoder)."""
    import torch

    from magicpose_core.media.video import encode_video

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    audio = None
    if with_audio:
        wave = torch.from_numpy(melody(len(frames) / fps))[None]  # (2, S) -> (1, 2, S), ComfyUI AUDIO layout
        audio = {"waveform": wave, "sample_rate": SAMPLE_RATE}
    encode_video(iter(frames), str(path), fps, "mp4", crf=18, audio=audio)
    return path


def write_png(path: str | Path, image: np.ndarray) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def write_animated_png(path: str | Path, frames: np.ndarray, ms_per_frame: int = 1000) -> Path:
    """An animated PNG (APNG), every frame stored whole, shown `ms_per_frame` each."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    first, *rest = [Image.fromarray(f) for f in frames]
    first.save(path, save_all=True, append_images=rest, duration=ms_per_frame, loop=0, disposal=0, blend=0)
    return path


def make_all(outdir: str | Path, frames: int = 8, fps: float = 8.0, height: int = 448,
             poses: int = 3) -> dict[str, Path]:
    """Write every sample input into `outdir`; returns {name: path}. Sizes keep the portraits' aspect
    (the driver is 512x600, so width = height * 512 / 600, rounded to even)."""
    outdir = Path(outdir)
    width = 2 * round(height * 512 / 600 / 2)
    return {
        "reference": write_png(outdir / "reference.png", reference_photo()),
        "driving": write_video(outdir / "driving.mp4", dance_frames(frames, width, height), fps),
        "poses": write_animated_png(outdir / "driving_poses.png", pose_frames(width, height, poses)),
        "face": write_video(outdir / "face_driving.mp4", face_frames(frames, height, height), fps),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", help="folder for reference.png, driving.mp4, driving_poses.png, face_driving.mp4")
    parser.add_argument("--frames", type=int, default=8, help="frames of the driving videos (default 8)")
    parser.add_argument("--fps", type=float, default=8.0, help="their frame rate (default 8)")
    parser.add_argument("--height", type=int, default=448, help="their height in pixels (default 448)")
    parser.add_argument("--poses", type=int, default=3, help=f"target poses in driving_poses.png (1-{len(POSES)})")
    args = parser.parse_args(argv)
    if args.frames < 1 or args.fps <= 0 or args.height < 16:
        parser.error("need --frames >= 1, --fps > 0 and --height >= 16")
    for name, path in make_all(args.outdir, args.frames, args.fps, args.height, args.poses).items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
