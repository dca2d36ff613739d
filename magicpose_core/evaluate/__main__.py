"""Command line: ``python -m magicpose_core.evaluate GENERATED [--gt GT] [--driving VIDEO] [--pose POSE.json]``.

GENERATED, GT and DRIVING are each a video file or an image folder (natural file order). Prints the table and
writes ``<out>/<name>.json`` and ``<out>/<name>.png`` (per-frame curves). Network weights are read from
``--weights-dir`` (default ``models/magicpose/eval``) and downloaded only with ``--download``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..pose.detect import DETECTORS, MissingWeightsError, create_detector
from .frames import MAX_FRAMES, load_frames
from .report import write_json, write_plot
from .runner import METRIC_GROUPS, EvaluationSettings, evaluate
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


def main(argv: list[str] | None = None) -> int:
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
        try:
            detector = create_detector(args.detector, weights_dir=args.detector_weights, allow_download=args.download)
        except (MissingWeightsError, ImportError, RuntimeError, ValueError) as e:
            detector_error = f"the {args.detector} pose detector is unavailable: {e}"
    try:
        result = evaluate(gen, gt, driving, pose, detector, settings)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if detector_error:
        for key in ("pose", "face_cos"):
            if key in result.unavailable:
                result.unavailable[key] = detector_error
    out = Path(args.out)
    print(result.table())
    print(f"\nwrote {write_json(result, out / f'{args.name}.json')} and {write_plot(result, out / f'{args.name}.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
