"""Measure the invisible watermark: bit accuracy after real encoders and edits, false positives, cost.

On demand, not part of the test run; its output is the README's provenance table. Everything is real:
clips are slow pans over the photos shipped with scikit-image and matplotlib (512x512, moving content),
marked with ``magicpose_core.provenance.watermark`` and written with the pack's own encoder
(``magicpose_core.media.video.encode_video``: h264 / vp9 through PyAV's FFmpeg), then decoded, edited and
re-encoded. Checks use ``magicpose_core.provenance.check`` exactly as the CLI does.

Rows:
- "h264 crf 19" is Frames to Video's default output; crf 28 and vp9 (webm crf 32) are lossier writes;
- "resize 50%" / "crop 10%": the crf-19 file decoded, resized to half size (area) / cropped to its central
  90% x 90%, re-encoded with h264 crf 23 (an edit is always a re-encode);
- "re-encode twice": the crf-19 file decoded and re-encoded with h264 crf 23, twice;
- "JPEG q75 (one frame)": a single frame saved as JPEG quality 75 (a screenshot).
Columns: per-frame bit accuracy (mean and worst single frame), the share of single frames that alone pass
the threshold, the per-video accuracy (logits averaged over up to 16 frames) and how many videos pass.

False positives: unmarked photos, their crops / rescales / flips, and frames and whole videos of unmarked
clips (h264 crf 19), checked like marked files; target 0.

Usage: python scripts/measure_provenance.py [--clips 6] [--frames 16] [--workdir DIR]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))

from magicpose_core.media.video import encode_video  # noqa: E402
from magicpose_core.provenance import check, watermark  # noqa: E402
from magicpose_core.provenance.payload import BITS, payload_bits  # noqa: E402

SIDE = 512


def photos() -> dict[str, np.ndarray]:
    """The real photos shipped in scikit-image and matplotlib as HWC uint8 RGB (grey ones stacked)."""
    import matplotlib.cbook
    import skimage.data
    from PIL import Image

    out = {}
    names = ("astronaut", "camera", "cat", "coffee", "coins", "moon", "page", "rocket", "text", "clock", "brick",
             "grass", "gravel", "immunohistochemistry", "hubble_deep_field", "retina", "colorwheel")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in names:
            img = getattr(skimage.data, name)()
            out[name] = np.repeat(img[:, :, None], 3, axis=2) if img.ndim == 2 else img[:, :, :3]
        left, right, _ = skimage.data.stereo_motorcycle()
        out["motorcycle_left"], out["motorcycle_right"] = left, right
    for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png"):
        with Image.open(matplotlib.cbook.get_sample_data(name, asfileobj=False)) as im:
            out[Path(name).stem] = np.asarray(im.convert("RGB"))
    return out


def pan_clip(img: np.ndarray, frames: int, side: int = SIDE) -> list[np.ndarray]:
    """A slow pan and zoom over a photo: ``frames`` frames of side x side (moving content, like a video)."""
    import cv2

    h, w = img.shape[:2]
    out = []
    for i in range(frames):
        t = i / max(1, frames - 1)
        crop = int(min(h, w) * (0.8 - 0.1 * t))  # zooms in by 1/8 over the clip
        y, x = int((h - crop) * (0.3 + 0.4 * t)), int((w - crop) * (0.2 + 0.6 * t))
        out.append(cv2.resize(img[y:y + crop, x:x + crop], (side, side), interpolation=cv2.INTER_AREA))
    return out


def write(frames: list[np.ndarray], path: str, format: str = "mp4", crf: int = 19) -> str:
    encode_video(iter(frames), path, 24, format, crf)
    return path


def read(path: str) -> list[np.ndarray]:
    import av

    with av.open(path) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def even(frames: list[np.ndarray]) -> list[np.ndarray]:
    return [f[: f.shape[0] // 2 * 2, : f.shape[1] // 2 * 2] for f in frames]


def attacks(marked: list[np.ndarray], work: str) -> dict[str, str | list[np.ndarray]]:
    """Attack name -> a file to check (or frames)."""
    import cv2

    base = write(marked, f"{work}/crf19.mp4")
    decoded = read(base)
    half = [cv2.resize(f, (f.shape[1] // 2, f.shape[0] // 2), interpolation=cv2.INTER_AREA) for f in decoded]
    h, w = decoded[0].shape[:2]
    dy, dx = round(h * 0.05), round(w * 0.05)
    cropped = even([f[dy:h - dy, dx:w - dx] for f in decoded])
    twice = read(write(read(write(decoded, f"{work}/re1.mp4", crf=23)), f"{work}/re2.mp4", crf=23))
    ok, jpg = cv2.imencode(".jpg", decoded[len(decoded) // 2][:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 75])
    return {
        "h264 crf 19 (default)": base,
        "h264 crf 28": write(marked, f"{work}/crf28.mp4", crf=28),
        "vp9 crf 32 (webm)": write(marked, f"{work}/vp9.webm", "webm", crf=32),
        "resize 50% + h264 crf 23": write(half, f"{work}/half.mp4", crf=23),
        "crop 10% + h264 crf 23": write(cropped, f"{work}/crop.mp4", crf=23),
        "re-encode twice (h264 crf 23)": write(twice, f"{work}/twice.mp4", crf=23),
        "JPEG q75 (one frame)": [cv2.imdecode(jpg, cv2.IMREAD_COLOR)[:, :, ::-1]],
    }


def frame_stats(frames: list[np.ndarray]) -> np.ndarray:
    """Matching bits per frame vs this version's payload."""
    expected = payload_bits()
    return np.array([int(((watermark.decode(f) > 0) == expected).sum()) for f in frames])


def robustness(clips: dict[str, list[np.ndarray]], work: str) -> None:
    rows: dict[str, dict[str, list]] = {}
    for name, frames in clips.items():
        marked = [watermark.embed(f, payload_bits()) for f in frames]
        for attack, target in attacks(marked, f"{work}/{name}").items():
            frames_ = read(target) if isinstance(target, str) else target
            report = check.check_file(target) if isinstance(target, str) else check.check_frames(frames_)
            per = frame_stats([frames_[i] for i in check.spread(len(frames_))])
            r = rows.setdefault(attack, {"per": [], "video": [], "present": []})
            r["per"].extend(per.tolist())
            r["video"].append(report.watermark.matching_bits)
            r["present"].append(report.present)
    n = len(clips)
    print("\n| edit | bit accuracy per frame: mean / worst | single frames detected | per video (16 frames): "
          "worst | videos detected |\n|---|---|---|---|---|")
    for attack, r in rows.items():
        per = np.array(r["per"])
        single = (per >= check.PRESENT_MIN_BITS).mean()
        print(f"| {attack} | {per.mean() / BITS:.3f} / {per.min() / BITS:.3f} | {100 * single:.0f}% | "
              f"{min(r['video']) / BITS:.3f} | {sum(r['present'])}/{n} |")


def false_positives(pics: dict[str, np.ndarray], clips: dict[str, list[np.ndarray]], work: str) -> None:
    import cv2

    samples: list[tuple[str, list[np.ndarray]]] = []
    for name, img in pics.items():
        h, w = img.shape[:2]
        s = min(h, w) // 2
        centre = img[(h - s) // 2:(h + s) // 2, (w - s) // 2:(w + s) // 2]  # a square half the short side
        samples += [(f"{name}", [img]), (f"{name} flipped", [img[:, ::-1].copy()]), (f"{name} centre crop", [centre]),
                    (f"{name} 512", [cv2.resize(img, (SIDE, SIDE), interpolation=cv2.INTER_AREA)])]
    n_images = len(samples)
    n_frames = n_videos = 0
    for name, frames in clips.items():
        path = write(frames, f"{work}/{name}_plain.mp4")
        decoded = read(path)
        samples += [(f"{name} frame {i}", [f]) for i, f in enumerate(decoded)]
        samples.append((f"{name} video", path))
        n_frames += len(decoded)
        n_videos += 1
    worst, hits = 0, []
    for name, target in samples:
        report = check.check_file(target) if isinstance(target, str) else check.check_frames(target)
        worst = max(worst, report.watermark.matching_bits)
        if report.present:
            hits.append(name)
    print(f"\nFalse positives: {len(hits)} of {len(samples)} unmarked samples ({n_images} photos and crops / flips / "
          f"rescales of {len(pics)} photos, {n_frames} single frames and {n_videos} whole videos of unmarked "
          f"h264 clips); most matching bits on an unmarked sample: {worst}/{BITS} "
          f"(threshold {check.PRESENT_MIN_BITS}/{BITS}){': ' + ', '.join(hits) if hits else ''}")


def timing(img: np.ndarray, work: str, repeats: int = 10) -> None:
    import cv2

    frame = cv2.resize(img, (SIDE, SIDE), interpolation=cv2.INTER_AREA)
    bits = payload_bits()
    watermark.embed(frame, bits)
    watermark.decode(frame)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        marked = watermark.embed(frame, bits)
    t_embed, c_embed = (time.perf_counter() - t0) / repeats, (time.process_time() - c0) / repeats
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        watermark.decode(marked)
    t_decode, c_decode = (time.perf_counter() - t0) / repeats, (time.process_time() - c0) / repeats
    frames = [frame] * 16
    t0 = time.perf_counter()
    write(frames, f"{work}/plain_timing.mp4")
    t_plain = (time.perf_counter() - t0) / len(frames)
    t0 = time.perf_counter()
    write(list(watermark.mark_frames(frames)), f"{work}/marked_timing.mp4")
    t_marked = (time.perf_counter() - t0) / len(frames)
    psnr = cv2.PSNR(marked, frame)
    print(f"\nCost per {SIDE}x{SIDE} frame ({os.cpu_count()} CPU threads, onnxruntime CPU): "
          f"embed {1000 * t_embed:.0f} ms (CPU time {1000 * c_embed:.0f} ms), "
          f"check {1000 * t_decode:.0f} ms (CPU time {1000 * c_decode:.0f} ms); load average {os.getloadavg()[0]:.1f}; "
          f"h264 crf 19 write {1000 * t_plain:.0f} ms/frame without the mark, "
          f"{1000 * t_marked:.0f} ms/frame with it; PSNR of the marked frame {psnr:.1f} dB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=6, help="marked clips (pans over different photos)")
    parser.add_argument("--frames", type=int, default=16, help="frames per clip")
    parser.add_argument("--workdir", default=None, help="where the encoded files go (default: a temp folder)")
    args = parser.parse_args()
    reason = watermark.unavailable_reason()
    if reason:
        sys.exit(reason)
    pics = photos()
    order = ["astronaut", "coffee", "grace_hopper", "rocket", "motorcycle_left", "immunohistochemistry", "cat",
             "hubble_deep_field", "retina", "Minduka_Present_Blue_Pack"]
    clip_names = order[: args.clips]
    plain_names = [n for n in pics if n not in clip_names][:6]
    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        for n in clip_names + plain_names:
            os.makedirs(f"{work}/{n}", exist_ok=True)
        clips = {n: pan_clip(pics[n], args.frames) for n in clip_names}
        print(f"Payload: {check.describe_bits(payload_bits())}, {BITS} bits; marked clips: {', '.join(clip_names)} "
              f"({args.frames} frames of {SIDE}x{SIDE} each)")
        robustness(clips, work)
        false_positives(pics, {n: pan_clip(pics[n], args.frames) for n in plain_names}, work)
        timing(pics["astronaut"], work)


if __name__ == "__main__":
    main()
