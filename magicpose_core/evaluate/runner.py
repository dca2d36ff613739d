"""One evaluation run: generated frames against ground-truth frames, target keypoints and/or driving frames.

Which metrics run depends on what is given: SSIM/PSNR (both)/L1/LPIPS/FID/FID-VID/Face-Cos need ground truth, pose
accuracy needs target keypoints (POSE_KEYPOINT) and a detector, flicker needs driving frames (the ground truth
is the driving video in the paper's self-reconstruction protocol, so it is used when no driving frames are
given). A metric that cannot run (missing library, weights, input) is listed in ``unavailable`` with the reason;
it never stops the others.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..pose.keypoints import PoseFrame, pose_keypoint_to_frames
from . import pixel
from .frames import align_lengths, resize_to
from .pixel import MetricUnavailable
from .report import EvaluationResult
from .weights import weight_path

log = logging.getLogger("MagicPose")

PIXEL_METRICS = ("ssim", "psnr", "psnr_disco", "l1")
NETWORK_METRICS = ("lpips", "fid", "fid_vid", "face_cos")
METRIC_GROUPS = PIXEL_METRICS + NETWORK_METRICS + ("pose", "flicker")

Progress = Callable[[str, int, int], None]  # (stage, done, total); may raise to stop (interruption)


@dataclass(frozen=True)
class EvaluationSettings:
    metrics: tuple[str, ...] = METRIC_GROUPS   # what to try; each still needs its inputs
    weights_dir: str | None = None             # models/magicpose/eval
    allow_download: bool = False
    device: str = "cpu"
    truncate: bool = False                     # compare the first min(N, M) frames when lengths differ
    lpips_proper_range: bool = False           # [-1, 1] LPIPS input; off = DisCo's [0, 1] quirk

    def __post_init__(self) -> None:
        unknown = [m for m in self.metrics if m not in METRIC_GROUPS]
        if unknown:
            raise ValueError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(METRIC_GROUPS)}")


def _mean(vals: Sequence[float]) -> float:
    finite = [v for v in vals if math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _detect(detector, frames: Sequence[np.ndarray], stage: str, progress: Progress | None) -> list[PoseFrame]:
    if hasattr(detector, "reset"):
        detector.reset()
    out = []
    for i, f in enumerate(frames):
        out.append(detector(f))
        if progress is not None:
            progress(stage, i + 1, len(frames))
    return out


class _Run:
    def __init__(self, settings: EvaluationSettings, progress: Progress | None) -> None:
        self.s, self.progress = settings, progress
        self.result: EvaluationResult | None = None
        self._detections: dict[str, list[PoseFrame]] = {}

    def tick(self, stage: str, i: int, n: int) -> None:
        if self.progress is not None:
            self.progress(stage, i, n)

    def weights(self, key: str) -> Path:
        return weight_path(key, self.s.weights_dir, self.s.allow_download)

    def attempt(self, name: str, fn: Callable[[], None]) -> None:
        if name not in self.s.metrics:
            return
        try:
            fn()
        except MetricUnavailable as e:
            log.info("MagicPose evaluate: %s skipped: %s", name, e)
            self.result.unavailable[name] = str(e)

    def detections(self, key: str, detector, frames) -> list[PoseFrame]:
        if key not in self._detections:
            self._detections[key] = _detect(detector, frames, f"detect {key}", self.progress)
        return self._detections[key]


def evaluate(generated: Sequence[np.ndarray], ground_truth: Sequence[np.ndarray] | None = None,
             driving: Sequence[np.ndarray] | None = None, target_pose: Any = None, detector=None,
             settings: EvaluationSettings = EvaluationSettings(), progress: Progress | None = None) -> EvaluationResult:
    """Evaluate HWC uint8 RGB frames (``frames.load_frames`` reads videos and folders).

    ``target_pose``: POSE_KEYPOINT (list of OpenPose-JSON dicts, 0-1 or pixel coordinates) the frames were
    generated from. ``detector``: a pose detector (``magicpose_core.pose.detect.create_detector``) for pose
    accuracy and Face-Cos.
    """
    if not generated:
        raise ValueError("no generated frames to evaluate")
    run = _Run(settings, progress)
    res = run.result = EvaluationResult(frames=len(generated))
    gen = list(generated)

    if ground_truth is not None:
        n = align_lengths(gen, ground_truth, ("generated", "ground truth"), settings.truncate)
        gt = list(ground_truth[:n])
        pairs = [(resize_to(g, t), t) for g, t in zip(gen[:n], gt)]  # generated at the GT size (DisCo)
        res.counts["pairs"] = n
        _pixel_metrics(run, pairs)
        _network_metrics(run, pairs, detector)
    else:
        for m in PIXEL_METRICS + NETWORK_METRICS:
            if m in settings.metrics:
                res.unavailable[m] = "needs ground-truth frames"

    def pose() -> None:
        if target_pose is None:
            raise MetricUnavailable("needs the target keypoints (POSE_KEYPOINT) the frames were generated from")
        if detector is None:
            raise MetricUnavailable("needs a pose detector")
        from .pose_accuracy import PCK_THRESHOLDS, pose_accuracy, scale_frame

        targets = pose_keypoint_to_frames(target_pose)
        n = align_lengths(gen, targets, ("generated", "target keypoints"), settings.truncate)
        h, w = gen[0].shape[:2]
        dets = run.detections("generated", detector, gen)[:n]
        acc = pose_accuracy([scale_frame(t, w, h) for t in targets[:n]], dets)
        for a in PCK_THRESHOLDS:
            res.summary[f"pck_body@{a:g}"] = acc.pck_body(a)
            res.summary[f"pck_hands@{a:g}"] = acc.pck_hands(a)
        res.summary["nme_face"] = acc.nme_face
        res.summary["face_detection_rate"] = acc.face_detection_rate
        res.per_frame["pck_body@0.1"] = acc.per_frame_body
        res.per_frame["nme_face"] = acc.per_frame_nme
        res.counts.update(body_points=acc.body_total, hand_points=acc.hand_total, face_frames=acc.face_frames)

    def flicker() -> None:
        from .flicker import warp_errors

        source = driving if driving is not None else ground_truth
        if source is None:
            raise MetricUnavailable("needs the driving frames (or ground-truth frames) for the motion")
        n = align_lengths(gen, source, ("generated", "driving"), settings.truncate)
        if n < 2:
            raise MetricUnavailable("needs at least 2 frames")
        gen_err, drv_err = warp_errors(gen[:n], list(source[:n]))
        res.summary["warp_error"] = _mean(gen_err)
        res.summary["warp_error_driving"] = _mean(drv_err)
        res.per_frame["warp_error"] = gen_err

    run.attempt("pose", pose)
    run.attempt("flicker", flicker)
    return res


def _pixel_metrics(run: _Run, pairs: list[tuple[np.ndarray, np.ndarray]]) -> None:
    fns = {"ssim": pixel.ssim, "psnr": pixel.psnr, "psnr_disco": pixel.psnr_disco, "l1": pixel.l1}
    for name, fn in fns.items():
        def one(name=name, fn=fn) -> None:
            vals = []
            for i, (g, t) in enumerate(pairs):
                vals.append(fn(g, t))
                run.tick(name, i + 1, len(pairs))
            run.result.summary[name] = _mean(vals)
            run.result.per_frame[name] = vals
        run.attempt(name, one)


def _network_metrics(run: _Run, pairs: list[tuple[np.ndarray, np.ndarray]], detector) -> None:
    s, res = run.s, run.result
    gen = [g for g, _ in pairs]
    gt = [t for _, t in pairs]

    def lpips() -> None:
        from .lpips_metric import LpipsMetric

        metric = LpipsMetric(run.weights("lpips"), s.device, s.lpips_proper_range)
        vals = []
        for i, (g, t) in enumerate(pairs):
            vals.append(metric(g, t))
            run.tick("lpips", i + 1, len(pairs))
        res.summary["lpips"] = _mean(vals)
        res.per_frame["lpips"] = vals

    def fid() -> None:
        from .fid import FID_RELIABLE_SAMPLES, InceptionFeatures, frechet_from_features

        feats = InceptionFeatures(run.weights("fid"), s.device)
        a, b = feats(gen), feats(gt)
        run.tick("fid", 1, 1)
        res.summary["fid"] = frechet_from_features(a, b)
        if len(a) < FID_RELIABLE_SAMPLES:
            log.info("MagicPose evaluate: FID over %d frames is biased upwards (reliable from ~%d)", len(a),
                     FID_RELIABLE_SAMPLES)

    def fid_vid() -> None:
        from .fid_vid import ClipFeatures
        from .fid_vid import fid_vid as compute

        value, clips = compute(ClipFeatures(run.weights("fid_vid"), s.device), gen, gt)
        res.summary["fid_vid"] = value
        res.counts["fid_vid_clips"] = clips

    def face_cos() -> None:
        if detector is None:
            raise MetricUnavailable("needs a pose detector (for the face landmarks)")
        from .face import FaceEmbedder, face_cosine

        embedder = FaceEmbedder(run.weights("face_cos"))
        dg = run.detections("generated at the GT size", detector, gen)
        dt = run.detections("ground truth", detector, gt)
        vals = [face_cosine(embedder, g, pg, t, pt) for g, pg, t, pt in zip(gen, dg, gt, dt)]
        res.summary["face_cos"] = _mean(vals)
        res.per_frame["face_cos"] = vals
        res.counts["face_cos_frames"] = int(np.isfinite(vals).sum())

    run.attempt("lpips", lpips)
    run.attempt("fid", fid)
    run.attempt("fid_vid", fid_vid)
    run.attempt("face_cos", face_cos)
