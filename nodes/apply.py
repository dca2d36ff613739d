"""MagicPoseApply: MagicPose as a MODEL patch + positive conditioning, for any KSampler / SamplerCustom."""
from __future__ import annotations

from ..magicpose_core.model.temporal import TemporalOptions
from ._api import io
from .patch.model_patch import AUTOCAST_CHOICES, MagicPoseOptions, apply_magicpose, attach_pose_control
from .patch.run_sampling import as_reference, check_poses
from .patch.temporal_sources import add_temporal_sources
from .temporal_inputs import temporal_inputs
from .types import MagicPoseModelType, MagicPoseReferenceType

_OPTIONS = MagicPoseOptions()   # the official behaviour


class MagicPoseApply(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MagicPoseApply",
            display_name="MagicPose Apply",
            category="MagicPose",
            search_aliases=["appearance attention"],
            description=(
                "Patches your SD1.5 MODEL with the MagicPose appearance bank (read on conditional rows only) and "
                "puts the pose ControlNet on the positive conditioning only, as the official model does. Sample "
                "with any KSampler; use a latent batch of one latent per pose map and the same noise for every "
                "frame for the official behaviour (MagicPose Sampler does all of this for you). Scheduler "
                "magicpose_official gives the official start noise and last step in any sampler node."),
            inputs=[
                io.Model.Input("model", tooltip="SD1.5 MODEL to patch; the input MODEL itself is not changed."),
                MagicPoseModelType.Input("magicpose", tooltip="MagicPose weights from MagicPose Load Model."),
                io.MultiType.Input("reference", [MagicPoseReferenceType, io.Latent],
                                   tooltip="The identity: MagicPose Load Reference output, or a LATENT (first item)."),
                io.Image.Input("poses", tooltip="Pose maps, one per latent of the batch you sample (MagicPose Extract "
                               "Pose), width and height multiples of 8."),
                io.Conditioning.Input("positive",
                                      tooltip="Positive conditioning; the pose ControlNet is attached here."),
                io.Conditioning.Input("negative", tooltip="Negative conditioning; passed through unchanged (the "
                                      "official unconditional pass has no pose and no reference)."),
                io.Float.Input("reference_strength", default=_OPTIONS.reference_strength, min=0.0, max=2.0, step=0.05,
                               tooltip="Softmax weight of the reference tokens. 1 = official, 0 = off."),
                io.Float.Input("reference_start", default=_OPTIONS.reference_start, min=0.0, max=1.0, step=0.01,
                               optional=True, advanced=True,
                               tooltip="Sampling progress at which the reference starts being used. Official: 0."),
                io.Float.Input("reference_end", default=_OPTIONS.reference_end, min=0.0, max=1.0, step=0.01,
                               optional=True, advanced=True,
                               tooltip="Sampling progress after which the reference stops. Official: 1."),
                io.Float.Input("pose_strength", default=1.0, min=0.0, max=2.0, step=0.05,
                               tooltip="Pose ControlNet strength. Official: 1."),
                io.Float.Input("pose_start", default=0.0, min=0.0, max=1.0, step=0.01, optional=True,
                               advanced=True,
                               tooltip="Sampling progress at which the pose ControlNet starts. Official: 0."),
                io.Float.Input("pose_end", default=1.0, min=0.0, max=1.0, step=0.01, optional=True,
                               advanced=True,
                               tooltip="Sampling progress after which the pose ControlNet stops. Official: 1."),
                io.Int.Input("frame_batch", default=_OPTIONS.frame_batch, min=0, max=256, optional=True,
                             advanced=True,
                             tooltip="Frames of the sampled batch the networks process at once (0 = all). Smaller "
                             "needs less memory for long videos; does not change the result."),
                io.Combo.Input("autocast", options=list(AUTOCAST_CHOICES), default=_OPTIONS.autocast, optional=True,
                               advanced=True,
                               tooltip="Run the networks under torch autocast in this precision. off = the MODEL's "
                               "own dtype (official: fp32 on CPUs). auto = bf16 or fp16 only where a ~1 s probe "
                               "measured it clearly faster on this machine (measured once, then cached; the choice "
                               "is logged), else off. Half precision moves results slightly (README, Performance)."),
                *temporal_inputs(),
            ],
            outputs=[
                io.Model.Output(display_name="MODEL", tooltip="The patched MODEL (sample it with the outputs below)."),
                io.Conditioning.Output(display_name="positive", tooltip="Positive with the pose ControlNet attached."),
                io.Conditioning.Output(display_name="negative", tooltip="Negative, unchanged."),
            ],
        )

    @classmethod
    def execute(cls, model, magicpose, reference, poses, positive, negative, reference_strength: float,
                pose_strength: float, reference_start: float = 0.0, reference_end: float = 1.0,
                pose_start: float = 0.0, pose_end: float = 1.0, frame_batch: int = 0,
                autocast: str = "off", temporal_mode: str = "off", temporal_strength: float = 1.0,
                temporal_start: float = 0.0, temporal_end: float = 1.0) -> io.NodeOutput:
        check_poses(poses)
        options = MagicPoseOptions(reference_strength=reference_strength, reference_start=reference_start,
                                   reference_end=reference_end, frame_batch=frame_batch, autocast=autocast)
        temporal = TemporalOptions(mode=temporal_mode, strength=temporal_strength, start=temporal_start,
                                   end=temporal_end)
        m = add_temporal_sources(apply_magicpose(model, magicpose, as_reference(reference), options), temporal)
        pos = attach_pose_control(positive, magicpose.pose_controlnet, poses, pose_strength,
                                  start_percent=pose_start, end_percent=pose_end)
        return io.NodeOutput(m, pos, negative)
