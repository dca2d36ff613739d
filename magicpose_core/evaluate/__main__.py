"""Command line: ``python -m magicpose_core.evaluate GENERATED [--gt GT] [--driving VIDEO] [--pose POSE.json]``.

GENERATED, GT and DRIVING are each a video file or an image folder (natural file order). Prints the table and
writes ``<out>/<name>.json`` and ``<out>/<name>.png`` (per-frame curves). Network weights are read from
``--weights-dir`` (default ``models/magicpose/eval``) and downloaded only with ``--download``.

``python -m magicpose_core.evaluate tiktok RESULTS --clips CLIPS --vae SD15`` is the TikTok reference table
(MagicPose Table 1's protocol, ``tiktok.py``): RESULTS/<video>/ holds the frames generated from CLIPS/<video>/
(frame 0 the reference, every later frame a target); the ground truth is built as the official test script
writes it (512², VAE round trip, JPEG) into ``<out>/gt/``; pooled and per-video FID/FID-VID are both reported.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..pose.detect import DETECTORS, MissingWeightsError, create_detector
from .frames import MAX_FRAMES, load_frames
from .pixel import MetricUnavailable
from .report import write_json, write_plot
from .runner import METRIC_GROUPS, EvaluationSettings, evaluate
from .tiktok import SIZE, TIKTOK_METRICS, evaluate_videos, load_vae, load_videos
from .weights import default_weights_dir

DEFAULT_DETECTOR = "auto" if "auto" in DETECTORS else "mediapipe"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m magicpose_core.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("generated", help="generated frames: a video file or an image folder")
    p.add_argument("--gt", help="ground-truth frames (video or folder), one per generated frame")
    p.add_argument("--gt-offset", type=int, default=0,
                   help="skip this many ground-truth frames first (e.g. 1 when frame 0 was the reference)")
    p.add_argument("--driving", help="driving video/folder for the flicker motion (default: the ground truth)")
    p.add_argument("--pose", help="target keypoints: a POSE_KEYPOINT JSON file (list of OpenPose frames)")
    p.add_argument("--detector", default=DEFAULT_DETECTOR, choices=list(DETECTORS),
                   help=f"pose detector for pose accuracy and Face-Cos (default {DEFAULT_DETECTOR})")
    p.add_argument("--detector-weights", help="folder of the detector's weights (dwpose/openpose)")
    p.add_argument("--metrics", default=",".join(METRIC_GROUPS),
                   help=f"comma-separated subset of {','.join(METRIC_GROUPS)} (default: all the inputs allow)")
    p.add_argument("--weights-dir", default=None, help="folder of the metric networks (default models/magicpose/eval)")
    p.add_argument("--download", action="store_true", help="download missing metric weights that have a public URL")
    p.add_argument("--device", default="cpu", help="torch device for LPIPS/FID/FID-VID (default cpu)")
    p.add_argument("--truncate", action="store_true", help="compare the first min(N, M) frames if counts differ")
    p.add_argument("--lpips-proper-range", action="store_true",
                   help="feed LPIPS [-1, 1] images (off = DisCo's [0, 1] quirk, the paper's protocol)")
    p.add_argument("--max-frames", type=int, default=MAX_FRAMES, help=f"refuse longer inputs (default {MAX_FRAMES})")
    p.add_argument("--out", default="evaluation", help="output folder for the JSON and PNG (default ./evaluation)")
    p.add_argument("--name", default="magicpose_eval", help="file name stem of the outputs")
    return p


def build_tiktok_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m magicpose_core.evaluate tiktok",
                                description="The TikTok reference table (MagicPose Table 1's protocol) over a folder "
                                            "of results, one subfolder per test video.")
    p.add_argument("results", help="RESULTS/<video>/: the generated frames of each test video, one per target "
                                   "(frames 1..N-1 of the clip); or the official script's <n>/gen_images + gt_images")
    p.add_argument("--clips", help="CLIPS/<video>/: the TikTok test clips (DisCo's disco_test_set), all frames")
    p.add_argument("--vae", help="an ldm-format SD1.5 checkpoint or VAE for the ground-truth reconstruction, e.g. "
                                 "models/checkpoints/model_state-110000.sd15.fp16.safetensors (needs diffusers)")
    p.add_argument("--size", type=int, default=SIZE, help=f"frame side (default {SIZE}, the official script's)")
    p.add_argument("--metrics", default=",".join(TIKTOK_METRICS),
                   help=f"comma-separated subset of {','.join(TIKTOK_METRICS)}")
    p.add_argument("--detector", default=DEFAULT_DETECTOR, choices=list(DETECTORS),
                   help="pose detector for Face-Cos face alignment")
    p.add_argument("--detector-weights", help="folder of the detector's weights (dwpose/openpose)")
    p.add_argument("--weights-dir", default=None, help="folder of the metric networks (default models/magicpose/eval)")
    p.add_argument("--download", action="store_true", help="download missing metric weights that have a public URL")
    p.add_argument("--device", default="cpu", help="torch device for the VAE and LPIPS/FID/FID-VID (default cpu)")
    p.add_argument("--out", default="evaluation", help="output folder (default ./evaluation)")
    p.add_argument("--name", default="tiktok", help="file name stem of the outputs")
    return p


def _detector(name: str, weights: str | None, download: bool):
    """(detector, None) or (None, why it is unavailable)."""
    try:
        return create_detector(name, weights_dir=weights, allow_download=download), None
    except (MissingWeightsError, ImportError, RuntimeError, ValueError) as e:
        return None, f"the {name} pose detector is unavailable: {e}"


def _write(result, out: Path, name: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    table = result.table()
    (out / f"{name}.txt").write_text(table + "\n", encoding="utf-8")
    print(table)
    print(f"\nwrote {out / f'{name}.txt'}, {write_json(result, out / f'{name}.json')} and "
          f"{write_plot(result, out / f'{name}.png')}")


def tiktok_main(argv: list[str]) -> int:
    args = build_tiktok_parser().parse_args(argv)
    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    out = Path(args.out)
    try:
        unknown = [m for m in metrics if m not in TIKTOK_METRICS]
        if unknown:
            raise ValueError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(TIKTOK_METRICS)}")
        settings = EvaluationSettings(metrics=metrics, weights_dir=str(args.weights_dir or default_weights_dir()),
                                      allow_download=args.download, device=args.device)
        reconstruct = load_vae(args.vae, args.device) if args.vae else None
        videos = load_videos(args.results, args.clips, reconstruct, args.size, out / "gt")
    except (ValueError, OSError, MetricUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    detector, detector_error = _detector(args.detector, args.detector_weights, args.download) \
        if "face_cos" in metrics else (None, None)
    result = evaluate_videos(videos, settings, detector)
    if detector_error and "face_cos" in result.unavailable:
        result.unavailable["face_cos"] = detector_error
    _write(result, out, args.name)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["tiktok"]:
        return tiktok_main(argv[1:])
    args = build_parser().parse_args(argv)
    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    try:
        settings = EvaluationSettings(metrics=metrics, weights_dir=str(args.weights_dir or default_weights_dir()),
                                      allow_download=args.download, device=args.device, truncate=args.truncate,
                                      lpips_proper_range=args.lpips_proper_range)
        if not 1 <= args.max_frames <= MAX_FRAMES:
            raise ValueError(f"--max-frames must be in 1..{MAX_FRAMES}")
        if args.gt_offset < 0:
            raise ValueError("--gt-offset must be >= 0")
        gen = load_frames(args.generated, "generated", args.max_frames)
        gt = load_frames(args.gt, "ground truth", args.max_frames)[args.gt_offset:] if args.gt else None
        driving = load_frames(args.driving, "driving", args.max_frames) if args.driving else None
        pose = json.loads(Path(args.pose).read_text()) if args.pose else None
    except (ValueError, OSError, json.JSONDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    detector, detector_error = None, None
    if (pose is not None and "pose" in metrics) or (gt is not None and "face_cos" in metrics):
        detector, detector_error = _detector(args.detector, args.detector_weights, args.download)
    try:
        result = evaluate(gen, gt, driving, pose, detector, settings)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if detector_error:
        for key in ("pose", "face_cos"):
            if key in result.unavailable:
                result.unavailable[key] = detector_error
    _write(result, Path(args.out), args.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
