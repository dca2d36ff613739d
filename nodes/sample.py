"""MagicPoseSample: the all-in-one MagicPose sampler (reference + pose maps -> one latent per frame)."""
from __future__ import annotations

import comfy.samplers

from ..magicpose_core.model.constants import OFFICIAL_SIZE
from ..magicpose_core.model.temporal import TemporalOptions
from ._api import io
from .patch.model_patch import AUTOCAST_CHOICES, MagicPoseOptions
from .patch.official_schedule import SCHEDULER_NAME, scheduler_names
from .patch.run_sampling import SamplingSettings, magicpose_sample
from .temporal_inputs import temporal_inputs
from .types import MagicPoseModelType, MagicPoseReferenceType

_DEFAULTS = SamplingSettings()   # the official inference (model/constants.py)
_OPTIONS = MagicPoseOptions()


class MagicPoseSample(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MagicPoseSample",
            display_name="MagicPose Sampler",
            category="MagicPose",
            search_aliases=["magicdance", "pose transfer"],
            description=(
                "Renders the reference person in every pose of the batch: your SD1.5 MODEL with the MagicPose "
                "appearance bank (conditional pass) and pose ControlNet (positive only), sampled by ComfyUI's own "
                f"samplers. Defaults are the official inference: {_DEFAULTS.sampler_name}, {_DEFAULTS.scheduler}, cfg "
                f"{_DEFAULTS.cfg:g}, {_DEFAULTS.steps} steps, the same initial noise for every frame, empty prompts."),
            inputs=[
                io.Model.Input("model", tooltip="SD1.5 MODEL to sample (official: the SD1.5 bundled with MagicPose). "
                               "LoRAs and other model patches applied before this node are kept."),
                MagicPoseModelType.Input("magicpose", tooltip="MagicPose weights from MagicPose Load Model."),
                io.MultiType.Input("reference", [MagicPoseReferenceType, io.Latent],
                                   tooltip="The identity: MagicPose Load Reference output, or a LATENT from VAE Encode "
                                   "(first item). Resized to the pose size with a warning when it differs."),
                io.Image.Input("poses", tooltip="Pose maps, one per output frame (MagicPose Extract Pose), in [0,1], "
                               f"width and height multiples of 8 (official: {OFFICIAL_SIZE}x{OFFICIAL_SIZE})."),
                io.Conditioning.Input("positive", tooltip="Text conditioning of the conditional pass. Official: "
                                      "CLIP Text Encode with an empty prompt."),
                io.Conditioning.Input("negative", tooltip="Text conditioning of the unconditional (plain SD1.5) pass. "
                                      "Official: CLIP Text Encode with an empty prompt."),
                io.Int.Input("seed", default=_DEFAULTS.seed, min=0, max=0xffffffffffffffff,
                             control_after_generate=True,
                             tooltip=f"Seed of the initial noise. Official: {_DEFAULTS.seed}."),
                io.Int.Input("steps", default=_DEFAULTS.steps, min=1, max=1000,
                             tooltip=f"Denoising steps. Official: {_DEFAULTS.steps}; 20-30 usually suffice."),
                io.Float.Input("cfg", default=_DEFAULTS.cfg, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Image-CFG scale: pushes away from plain SD1.5 (no reference, no pose). "
                               f"Official: {_DEFAULTS.cfg:g}."),
                io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS,
                               default=_DEFAULTS.sampler_name,
                               tooltip=f"Sampler. Official: {_DEFAULTS.sampler_name} (deterministic DDIM, eta 0)."),
                io.Combo.Input("scheduler", options=scheduler_names(), default=_DEFAULTS.scheduler,
                               tooltip=f"Schedule. Official: {_DEFAULTS.scheduler}. '{SCHEDULER_NAME}' also "
                               "reproduces the official start noise scale and last step (to sigma(t=0), not 0) for "
                               "step-exact comparison with the official code; KSampler offers it too."),
                io.Float.Input("denoise", default=_DEFAULTS.denoise, min=0.0, max=1.0, step=0.01,
                               tooltip="Fraction of the schedule to run (1 = from pure noise)."),
                io.Int.Input("frame_batch", default=_DEFAULTS.frame_batch, min=1, max=256,
                             tooltip="Frames the networks process at once; larger is faster on a big GPU, needs more "
                             "memory. All frames advance step by step together, so the appearance model runs once "
                             "per step for the whole video and memory does not grow with steps or frames. Does not "
                             "change the result."),
                io.Boolean.Input("shared_noise", default=_DEFAULTS.shared_noise,
                                 tooltip="Use the same initial noise for every frame (official; steadier video)."),
                io.Float.Input("reference_strength", default=_OPTIONS.reference_strength, min=0.0, max=2.0,
                               step=0.05, optional=True, advanced=True,
                               tooltip="Softmax weight of the reference tokens in self-attention. 1 = official, "
                               "0 = no reference."),
                io.Float.Input("pose_strength", default=_DEFAULTS.pose_strength, min=0.0, max=2.0, step=0.05,
                               optional=True, advanced=True,
                               tooltip="Pose ControlNet strength. Official: 1."),
                io.Boolean.Input("park_bank_on_cpu", default=_OPTIONS.park_bank_on_cpu, optional=True, advanced=True,
                                 tooltip="Keep the current step's appearance features (one bank: about 22 MiB at "
                                 "512x512 in fp16, 44 MiB in fp32) in CPU memory between frame chunks; copied to the "
                                 "GPU for each chunk."),
                io.Combo.Input("autocast", options=list(AUTOCAST_CHOICES), default=_OPTIONS.autocast, optional=True,
                               advanced=True,
                               tooltip="Run the networks under torch autocast in this precision. off = the MODEL's "
                               "own dtype (official: fp32 on CPUs). bf16 is faster on CPUs with bf16 units and far "
                               "slower on others. auto = bf16 or fp16 only where a ~1 s probe measured it clearly "
                               "faster on this machine (measured once, then cached; the choice is logged), else off. "
                               "Half precision moves results slightly (see README, Performance)."),
                io.Noise.Input("noise", optional=True,
                               tooltip="Initial noise from a NOISE node (RandomNoise, DisableNoise, ...) instead of "
                               "the seed, e.g. a given x_T; with shared_noise one x_T (batch 1) serves every frame."),
                *temporal_inputs(),
                io.Image.Input("anchor_pose", optional=True, advanced=True,
                               tooltip="Only when rendering part of a video on its own with temporal_mode first or "
                               "both: the video's first pose map, rendered as a hidden first frame so that the part "
                               "anchors on the same frame as the whole video (use shared_noise)."),
            ],
            outputs=[io.Latent.Output(tooltip="One latent per pose frame; decode with VAE Decode.")],
        )

    @classmethod
    def execute(cls, model, magicpose, reference, poses, positive, negative, seed: int, steps: int, cfg: float,
                sampler_name: str, scheduler: str, denoise: float, frame_batch: int, shared_noise: bool,
                reference_strength: float = 1.0, pose_strength: float = 1.0, park_bank_on_cpu: bool = False,
                autocast: str = "off", noise=None, temporal_mode: str = "off", temporal_strength: float = 1.0,
                temporal_start: float = 0.0, temporal_end: float = 1.0, anchor_pose=None) -> io.NodeOutput:
        settings = SamplingSettings(seed=seed, steps=steps, cfg=cfg, sampler_name=sampler_name, scheduler=scheduler,
                                    denoise=denoise, frame_batch=frame_batch, shared_noise=shared_noise,
                                    pose_strength=pose_strength)
        options = MagicPoseOptions(reference_strength=reference_strength, park_bank_on_cpu=park_bank_on_cpu,
                                   autocast=autocast)
        temporal = TemporalOptions(mode=temporal_mode, strength=temporal_strength, start=temporal_start,
                                   end=temporal_end)
        latent = magicpose_sample(model, magicpose, reference, poses, positive, negative, settings, options=options,
                                  temporal=temporal, noise=noise, anchor_pose=anchor_pose)
        return io.NodeOutput(latent)
