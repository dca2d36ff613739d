"""ComfyUI glue of MagicPose: the V3 extension, model-folder registration and the node list."""
from __future__ import annotations

import logging

from ._api import ComfyExtension, io

log = logging.getLogger("MagicPose")


class MagicPoseExtension(ComfyExtension):
    async def on_load(self) -> None:
        from .models import register_model_folder
        from .patch.official_schedule import register_official_scheduler

        register_model_folder()
        register_official_scheduler()  # KSampler / KSamplerAdvanced / BasicScheduler list magicpose_official

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        from .apply import MagicPoseApply
        from .check_provenance import CheckProvenance
        from .evaluate import Evaluate
        from .extract_pose import ExtractPose
        from .frames_to_video import FramesToVideo
        from .load_model import LoadModel
        from .load_reference import LoadReference
        from .render_video import RenderVideo
        from .sample import MagicPoseSample
        from .select_frames import SelectFrames
        from .watermark_image import WatermarkImage

        return [LoadModel, MagicPoseApply, MagicPoseSample, LoadReference, ExtractPose, FramesToVideo, SelectFrames,
                Evaluate, WatermarkImage, CheckProvenance, RenderVideo]
