"""Pose extraction + rendering speed (frames per second) on this machine, 512 x 512 frames, MediaPipe.

Frames: a synthetic clip of the scikit-image astronaut moved by a known sway (docs/pose.md §6.1; no human video ships
in any registry package). Stages, each timed over the whole clip after one warm-up frame:
- detect: MediaPipe Holistic per frame (static mode) and in tracking mode (what ExtractPose uses for videos);
- process: person selection, hysteresis, gap filling, One Euro smoothing and the fit to 512 x 512;
- render: openpose_full drawing at source resolution + fit (render_pose_fitted);
- total: tracking detect + process + render = what ExtractPose does per frame.

    .venv/bin/python scripts/bench_pose.py [--frames 48] [--size 512] [--json out.json]

``bench(frames, size)`` returns the figures as a dict (used by ``make bench``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # appended, never prepended (our nodes/ must not shadow ComfyUI's)

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from magicpose_core.pose.detect import create_detector  # noqa: E402
from magicpose_core.pose.pipeline import ExtractSettings, process_sequence, render_sequence  # noqa: E402


def synthetic_clip(frames: int, size: int) -> list[np.ndarray]:
    """The astronaut, resized to size x size, swaying +-12 px / +-3 deg / +-5 % (docs/pose.md §6.1)."""
    import skimage.data

    img = cv2.resize(skimage.data.astronaut(), (size, size), interpolation=cv2.INTER_AREA)
    out = []
    for t in range(frames):
        ang, s = 3 * np.sin(t * 0.3), 1 + 0.05 * np.sin(t * 0.2)
        m = cv2.getRotationMatrix2D((size / 2, size / 2), ang, s)
        m[0, 2] += 12 * np.sin(t * 0.5) * size / 512
        out.append(cv2.warpAffine(img, m, (size, size), borderMode=cv2.BORDER_REFLECT))
    return out


def _timed(fn):
    t0 = time.perf_counter()
    res = fn()
    return res, time.perf_counter() - t0


def bench(frames: int = 48, size: int = 512) -> dict:
    clip = synthetic_clip(frames, size)
    static = create_detector("mediapipe")
    tracking = create_detector("mediapipe", video=True)
    static(clip[0])  # warm-up (graph start)
    tracking(clip[0])
    tracking.reset()
    _, t_static = _timed(lambda: [static.detect_raw(f) for f in clip])
    raw, t_track = _timed(lambda: [tracking.detect_raw(f) for f in clip])
    settings = ExtractSettings(width=size, height=size, smoothing="medium", threshold=tracking.threshold)
    seq, t_proc = _timed(lambda: process_sequence(raw, settings))
    maps, t_render = _timed(lambda: render_sequence(seq, settings))
    assert maps.shape == (frames, size, size, 3)
    total = t_track + t_proc + t_render
    return {
        "frames": frames, "size": size,
        "detect_static_fps": frames / t_static,
        "detect_tracking_fps": frames / t_track,
        "process_ms_per_frame": 1000 * t_proc / frames,
        "render_ms_per_frame": 1000 * t_render / frames,
        "total_fps": frames / total,
        "frames_with_person": sum(not f.is_empty for f in seq.source),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--json", type=str, default=None, help="also write the figures to this JSON file")
    args = ap.parse_args()
    r = bench(args.frames, args.size)
    print(f"pose extraction, {r['frames']} frames of {r['size']}x{r['size']}, MediaPipe Holistic (CPU)")
    print(f"  detect, per-frame (static) : {r['detect_static_fps']:7.1f} fps")
    print(f"  detect, tracking (video)   : {r['detect_tracking_fps']:7.1f} fps")
    print(f"  select + smooth + fit      : {r['process_ms_per_frame']:7.2f} ms/frame")
    print(f"  render openpose_full + fit : {r['render_ms_per_frame']:7.2f} ms/frame")
    print(f"  extraction + rendering     : {r['total_fps']:7.1f} fps  ({r['frames_with_person']}/{r['frames']} "
          "frames with a person)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
