"""MagicPoseEvaluate: generated frames against ground truth, target keypoints and/or the driving video; the paper's
metrics (DisCo protocol, plus the correct PSNR beside DisCo's), pose accuracy and flicker. Logic:
magicpose_core.evaluate; detectors: nodes.pose_detectors. Writes <prefix>.txt/.json/.png to the output folder."""
from __future__ import annotations

import json
import logging
import os

import comfy.model_management
import comfy.utils
import folder_paths
import numpy as np
import torch

from ..magicpose_core.evaluate import EvaluationSettings, evaluate, load_frames, write_json, write_plot
from ..magicpose_core.evaluate.runner import METRIC_GROUPS, NETWORK_METRICS
from ..magicpose_core.evaluate.weights import EVAL_SUBFOLDER, WEIGHTS
from ..magicpose_core.media.images import from_uint8, iter_uint8
from ..magicpose_core.pose.detect import MissingWeightsError
from ._api import io, ui
from .pose_detectors import DETECTOR_CHOICES, MODEL_FOLDER, get_detector
from .types import PoseKeypointType

log = logging.getLogger("MagicPose")
DEFAULT_DETECTOR = "auto" if "auto" in DETECTOR_CHOICES else "mediapipe"


def eval_weights_dir() -> str:
    """The first `<magicpose folder>/eval/` holding any metric network, else the default one (where messages
    point and downloads go)."""
    bases = list(folder_paths.get_folder_paths(MODEL_FOLDER)) if MODEL_FOLDER in folder_paths.folder_names_and_paths \
        else []
    default = os.path.join(folder_paths.models_dir, MODEL_FOLDER)
    if default not in bases:
        bases.append(default)
    for base in bases:
        d = os.path.join(base, EVAL_SUBFOLDER)
        if any(os.path.isfile(os.path.join(d, w.filename)) for w in WEIGHTS.values()):
            return d
    return os.path.join(bases[0], EVAL_SUBFOLDER)


def resolve_path(path: str, what: str) -> str:
    """A video file or image folder inside ComfyUI's input, output or temp folder (relative: input first)."""
    roots = [folder_paths.get_input_directory(), folder_paths.get_output_directory(), folder_paths.get_temp_directory()]
    candidates = [path] if os.path.isabs(path) else [os.path.join(r, path) for r in roots]
    for c in candidates:
        real = os.path.realpath(c)
        if any(os.path.commonpath([real, os.path.realpath(r)]) == os.path.realpath(r) for r in roots) \
                and os.path.exists(real):
            return real
    raise ValueError(f"MagicPose Evaluate: {what} {path!r} is not a video file or image folder inside ComfyUI's "
                     "input, output or temp folder; copy it there or connect the frames as IMAGE instead")


def frames_of(images: torch.Tensor | None, path: str, what: str) -> list[np.ndarray] | None:
    """IMAGE batch or a path -> HWC uint8 frames; None when neither is given; both is an error."""
    path = (path or "").strip()
    if images is not None and path:
        raise ValueError(f"MagicPose Evaluate: connect {what} as IMAGE or give its path, not both")
    if images is not None:
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] == 0:
            raise ValueError(f"MagicPose Evaluate: {what} must be a non-empty IMAGE batch (B, H, W, C)")
        return list(iter_uint8(images[..., :3]))
    if path:
        return load_frames(resolve_path(path, what), what)
    return None


def run_evaluation(images, generated_path, ground_truth, ground_truth_path, driving, pose_keypoint, detector: str,
                   learned_metrics: bool, allow_download: bool, truncate: bool, ground_truth_offset: int,
                   filename_prefix: str):
    """The node's work: (table text, JSON text, plot IMAGE, saved plot file name, subfolder)."""
    gen = frames_of(images, generated_path, "generated frames")
    if gen is None:
        raise ValueError("MagicPose Evaluate: connect the generated frames (images) or give generated_path")
    gt = frames_of(ground_truth, ground_truth_path, "ground truth")
    if gt is not None:
        gt = gt[ground_truth_offset:]
        if not gt:
            raise ValueError(f"MagicPose Evaluate: ground_truth_offset {ground_truth_offset} skips every frame")
    drv = frames_of(driving, "", "driving frames")
    metrics = tuple(m for m in METRIC_GROUPS if learned_metrics or m not in NETWORK_METRICS)
    det, det_error = None, None
    if (pose_keypoint is not None and "pose" in metrics) or (gt is not None and "face_cos" in metrics):
        try:
            det = get_detector(detector, allow_download)
        except (MissingWeightsError, ImportError, RuntimeError) as e:
            det_error = f"the {detector} pose detector is unavailable: {e}"
    pbar = comfy.utils.ProgressBar(1)

    def progress(stage: str, done: int, total: int) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        pbar.update_absolute(done, total)

    settings = EvaluationSettings(metrics=metrics, weights_dir=eval_weights_dir(), allow_download=allow_download,
                                  device=str(comfy.model_management.get_torch_device()), truncate=truncate)
    result = evaluate(gen, gt, drv, pose_keypoint, det, settings, progress)
    if det_error:
        for key in ("pose", "face_cos"):
            if key in result.unavailable:
                result.unavailable[key] = det_error
    folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
        filename_prefix, folder_paths.get_output_directory())
    stem = os.path.join(folder, f"{name}_{counter:05}_")
    table = result.table()
    with open(stem + ".txt", "w", encoding="utf-8") as f:
        f.write(table + "\n")
    write_json(result, stem + ".json")
    png = write_plot(result, stem + ".png")
    from PIL import Image

    plot = from_uint8(np.asarray(Image.open(png).convert("RGB")))  # (1, H, W, 3)
    return table, json.dumps(result.to_json()), plot, png.name, subfolder


class Evaluate(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MagicPoseEvaluate",
            display_name="MagicPose Evaluate",
            category="MagicPose",
            search_aliases=["metrics", "ssim psnr lpips fid", "pose accuracy", "flicker"],
            description=(
                "Scores generated frames: SSIM, PSNR, L1, LPIPS, FID, FID-VID and Face-Cos against ground-truth "
                "frames with the paper's definitions (DisCo's evaluation code), pose accuracy (PCK, face NME) "
                "against the target keypoints, and flicker (warping error along the driving video's optical flow). "
                "PSNR comes twice: the correct one (psnr) and DisCo's published protocol (psnr_disco: its uint8 "
                "MSE wraps around modulo 256), the number the TikTok tables print. Writes a table, a JSON file "
                "and a per-frame plot to the output folder."),
            inputs=[
                io.Image.Input("images", optional=True,
                               tooltip="Generated frames (IMAGE batch), e.g. MagicPose Sampler -> VAE Decode. "
                                       "Connect this or give generated_path."),
                io.String.Input("generated_path", default="", optional=True,
                                tooltip="Instead of images: a video file or image folder inside ComfyUI's input, "
                                        "output or temp folder (relative paths: input folder first)."),
                io.Image.Input("ground_truth", optional=True,
                               tooltip="Ground-truth frames, one per generated frame (for SSIM/PSNR/L1/LPIPS/FID/"
                                       "FID-VID/Face-Cos). In the paper: the real video frames."),
                io.String.Input("ground_truth_path", default="", optional=True,
                                tooltip="Instead of ground_truth: a video file or image folder inside ComfyUI's "
                                        "input, output or temp folder."),
                io.Image.Input("driving", optional=True,
                               tooltip="Driving frames whose optical flow defines the motion for the flicker metric "
                                       "(default: the ground truth)."),
                PoseKeypointType.Input("pose_keypoint", optional=True,
                                       tooltip="Target keypoints the frames were generated from (MagicPose Extract "
                                               "Pose output) for pose accuracy (PCK, face NME)."),
                io.Combo.Input("detector", options=DETECTOR_CHOICES, default=DEFAULT_DETECTOR,
                               tooltip="Pose detector run on the generated (and ground-truth) frames for pose "
                                       "accuracy and Face-Cos face alignment."),
                io.Boolean.Input("learned_metrics", default=True,
                                 tooltip="Also compute LPIPS, FID, FID-VID and Face-Cos where their network weights "
                                         "are in models/magicpose/eval/ (each missing one is listed in the report)."),
                io.Boolean.Input("allow_download", default=False, optional=True, advanced=True,
                                 tooltip="Download missing metric weights that have a public URL (LPIPS' VGG-16, "
                                         "FID's Inception) into models/magicpose/eval/ and pose-detector weights. "
                                         "Off = never download."),
                io.Boolean.Input("truncate", default=False, optional=True, advanced=True,
                                 tooltip="When frame counts differ, compare the first min(N, M) frames instead of "
                                         "failing."),
                io.Int.Input("ground_truth_offset", default=0, min=0, max=10000, optional=True, advanced=True,
                             tooltip="Skip this many ground-truth frames first (e.g. 1 when frame 0 was the "
                                     "reference image)."),
                io.String.Input("filename_prefix", default="MagicPose/eval",
                                tooltip="Output file prefix: <prefix>_NNNNN_.txt / .json / .png in the output "
                                        "folder."),
            ],
            outputs=[
                io.String.Output(display_name="report", tooltip="The metrics table as text, with a one-line "
                                                                "definition of each PSNR."),
                io.String.Output(display_name="json",
                                 tooltip="All values, per-frame curves, definitions and skipped metrics as JSON."),
                io.Image.Output(display_name="plot", tooltip="Per-frame curves of every per-frame metric."),
            ],
        )

    @classmethod
    def execute(cls, detector: str, learned_metrics: bool, filename_prefix: str, images: torch.Tensor | None = None,
                generated_path: str = "", ground_truth: torch.Tensor | None = None, ground_truth_path: str = "",
                driving: torch.Tensor | None = None, pose_keypoint: list | None = None, allow_download: bool = False,
                truncate: bool = False, ground_truth_offset: int = 0) -> io.NodeOutput:
        table, text, plot, png, subfolder = run_evaluation(
            images, generated_path, ground_truth, ground_truth_path, driving, pose_keypoint, detector,
            learned_metrics, allow_download, truncate, ground_truth_offset, filename_prefix)
        saved = ui.SavedImages([ui.SavedResult(png, subfolder, io.FolderType.output)])
        return io.NodeOutput(table, text, plot, ui=saved)
