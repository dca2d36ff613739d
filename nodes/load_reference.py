"""MagicPoseLoadReference: fit the identity photo to the model size, VAE-encode it, wrap it as MAGICPOSE_REFERENCE.

Official preparation (docs/method.md §4, §5.5): centre square crop, bilinear resize to 512, VAE latent
(x0.18215 applied later by ``latent_format.process_in``). The fit is ``magicpose_core.media.geometry`` (shared with
Extract Pose and Frames to Video); the encode is ``nodes.vae_encode`` (ComfyUI mode, or the official sample).
"""
from __future__ import annotations

import logging

import torch

from ..magicpose_core.media.geometry import (
    FIT_MODES,
    PAD_MODES,
    FitGeometry,
    fit_geometry,
    fit_images,
    model_size_problem,
)
from ..magicpose_core.model.constants import OFFICIAL_SEED, OFFICIAL_SIZE
from ..magicpose_core.model.reference import MagicPoseReference, tensor_hash
from ..magicpose_core.pose.keypoints import PoseFrame
from ._api import io
from .pose_detectors import DETECTOR_CHOICES, detect_pose
from .types import MagicPoseReferenceType
from .vae_encode import ENCODE_MODES, encode_reference

log = logging.getLogger("MagicPose")
MAX_SIZE = 2048


def first_rgb_image(image: torch.Tensor) -> torch.Tensor:
    """The first image of an IMAGE batch as (1, H, W, 3); clear errors for empty or non-RGB input."""
    if image.ndim != 4 or image.shape[0] == 0 or image.shape[1] == 0 or image.shape[2] == 0:
        raise ValueError(f"MagicPose Load Reference got an empty image (shape {tuple(image.shape)}); connect a "
                         "Load Image node with a picture of the person.")
    if image.shape[-1] != 3:
        raise ValueError(f"MagicPose Load Reference needs an RGB image (3 channels), got {image.shape[-1]}. For RGBA, "
                         "split off the alpha with core 'Split Image with Alpha' (or composite it on a background) "
                         "first; for a greyscale image, convert it to RGB.")
    if image.shape[0] > 1:
        log.warning("MagicPose Load Reference got %d images: the reference is one identity, using the first",
                    image.shape[0])
    return image[:1]


def reference_keypoints(source: torch.Tensor, geometry: FitGeometry, detector: str,
                        allow_download: bool) -> PoseFrame | None:
    """Detect on the whole source photo (sharper, nothing cropped away), then map into the prepared image's pixels.
    Points the centre crop cuts off keep their (off-canvas) coordinates: retargeting needs the bone lengths."""
    if detector == "none":
        return None
    frame = detect_pose(source, detector, allow_download)[0]  # source pixels
    keypoints = frame.transformed(geometry.map_points, geometry.dst_w, geometry.dst_h)
    if keypoints.is_empty:
        log.warning("MagicPose Load Reference: %s found no person in the reference; retargeting will not have one",
                    detector)
    return keypoints


class LoadReference(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MagicPoseLoadReference",
            display_name="MagicPose Load Reference",
            category="MagicPose",
            search_aliases=["appearance", "reference image"],
            description=(
                "Prepares the identity photo as the model was trained: fits it to width x height (centre crop as "
                "the official code, letterbox or stretch; any aspect ratio, no distortion unless you ask for it) "
                "and VAE-encodes it; optionally detects the person's pose for retargeting. ComfyUI's VAE encode "
                "returns the posterior mode (mean, deterministic); the official code draws a posterior sample, "
                "offered as 'sample (official)' with a seed. The fit is kept so that Frames to Video can crop the "
                "results back."),
            inputs=[
                io.Image.Input("image", tooltip="The reference photo (RGB). With a batch, the first image is used."),
                io.Vae.Input("vae", tooltip="The SD1.5 VAE (e.g. from Load Checkpoint)."),
                io.Int.Input("width", default=OFFICIAL_SIZE, min=64, max=MAX_SIZE, step=8,
                             tooltip=f"Model width in pixels, a multiple of 8. Official: {OFFICIAL_SIZE}."),
                io.Int.Input("height", default=OFFICIAL_SIZE, min=64, max=MAX_SIZE, step=8,
                             tooltip=f"Model height in pixels, a multiple of 8. Official: {OFFICIAL_SIZE}."),
                io.Combo.Input("fit", options=list(FIT_MODES), default="center_crop",
                               tooltip="center_crop: largest centred region of the target aspect, then resize "
                                       "(official). letterbox: the whole photo, scaled to fit and padded. stretch: "
                                       "resized to width x height, aspect not kept."),
                io.Combo.Input("pad", options=list(PAD_MODES), default="black",
                               tooltip="Fill of the letterbox bars (letterbox only)."),
                io.Combo.Input("encode", options=list(ENCODE_MODES), default=ENCODE_MODES[0],
                               tooltip="mode: ComfyUI's VAE encode, the posterior mean (deterministic). sample: "
                                       "mean + std * noise from the seed, as the official code."),
                io.Int.Input("seed", default=OFFICIAL_SEED, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=False,
                             tooltip=f"Noise seed of encode 'sample' (unused with 'mode'). Official: {OFFICIAL_SEED}."),
                io.Combo.Input("detector", options=["none", *DETECTOR_CHOICES], default="none",
                               tooltip="Detect the reference person's pose (for retargeting in Extract Pose), with "
                                       "the detectors of Extract Pose (auto: DWPose, else MediaPipe). none: no "
                                       "keypoints (Extract Pose then detects the reference itself)."),
                io.Boolean.Input("allow_download", default=False, optional=True, advanced=True,
                                 tooltip="Let the detector download missing dwpose/openpose weights from Hugging "
                                         "Face into models/magicpose/<detector>/ when picked by name. auto downloads "
                                         "DWPose regardless; HF_HUB_OFFLINE=1 stops it."),
            ],
            outputs=[
                MagicPoseReferenceType.Output(display_name="reference",
                                              tooltip="The prepared reference: latent, size, source hash, fit and "
                                                      "keypoints (in the prepared image's pixels)."),
                io.Image.Output(display_name="image", tooltip="The fitted reference image (1, height, width, 3)."),
            ],
        )

    @classmethod
    def validate_inputs(cls, width: int | None = None, height: int | None = None) -> bool | str:
        if width is None or height is None:  # linked: checked in execute
            return True
        problem = model_size_problem(width, height, maximum=MAX_SIZE)
        return True if problem is None else f"MagicPose Load Reference: {problem}"

    @classmethod
    def execute(cls, image: torch.Tensor, vae, width: int, height: int, fit: str, pad: str,
                encode: str = ENCODE_MODES[0], seed: int = OFFICIAL_SEED, detector: str = "none",
                allow_download: bool = False) -> io.NodeOutput:
        if problem := model_size_problem(width, height, maximum=MAX_SIZE):
            raise ValueError(f"MagicPose Load Reference: {problem}")
        source = first_rgb_image(image).float().cpu()
        geometry = fit_geometry(source.shape[2], source.shape[1], width, height, fit)
        prepared = fit_images(source, geometry, pad)  # (1, H, W, 3) -> (1, height, width, 3)
        keypoints = reference_keypoints(source, geometry, detector, allow_download)
        latent = encode_reference(vae, prepared, encode, seed).cpu()
        reference = MagicPoseReference(latent=latent, width=width, height=height, source_hash=tensor_hash(source),
                                       keypoints=keypoints, geometry=geometry, image=prepared)
        return io.NodeOutput(reference, prepared)
