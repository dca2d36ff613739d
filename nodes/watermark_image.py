"""MagicPoseWatermarkImage: the invisible MagicPose watermark on still images (Frames to Video marks videos)."""
from __future__ import annotations

import comfy.model_management
import comfy.utils
import torch

from ..magicpose_core.media.images import from_uint8, iter_uint8
from ..magicpose_core.provenance import pack_version
from ..magicpose_core.provenance.watermark import WatermarkUnavailable, mark_frames
from ._api import io


def watermark_images(images: torch.Tensor) -> torch.Tensor:
    """IMAGE (B, H, W, 3) -> the same frames, each carrying the watermark; raises with the install hint."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"MagicPose Watermark Image needs RGB images (B, H, W, 3), got {tuple(images.shape)}; "
                         "split off an alpha channel first (core 'Split Image with Alpha').")
    pbar = comfy.utils.ProgressBar(images.shape[0])
    out = []
    try:
        for i, frame in enumerate(mark_frames(iter_uint8(images, chunk=1), pack_version())):
            comfy.model_management.throw_exception_if_processing_interrupted()
            out.append(frame)
            pbar.update_absolute(i + 1)
    except WatermarkUnavailable as e:
        raise RuntimeError(f"MagicPose Watermark Image: {e}") from e
    return from_uint8(out)


class WatermarkImage(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MagicPoseWatermarkImage",
            display_name="MagicPose Watermark Image",
            category="MagicPose/provenance",
            search_aliases=["invisible watermark", "ai label"],
            description=(
                "Adds MagicPose's invisible watermark (RivaGAN, 32 bits naming the pack and its version) to each "
                "image, e.g. before core Save Image. MagicPose Frames to Video marks videos by itself. Check with "
                "MagicPose Check Provenance or 'python -m magicpose_core.provenance check FILE'. The RivaGAN "
                "model files ship with the pack (run on onnxruntime)."),
            inputs=[io.Image.Input("images", tooltip="RGB images to mark, e.g. the decoded MagicPose Sampler "
                                                     "output. Short side at least 32 px; best from 256 px up.")],
            outputs=[io.Image.Output(display_name="images", tooltip="The same images with the invisible "
                                                                    "watermark (PSNR about 39 dB).")],
        )

    @classmethod
    def execute(cls, images: torch.Tensor) -> io.NodeOutput:
        return io.NodeOutput(watermark_images(images))
