"""All-in-one MagicPose sampling over a batch of pose frames with ComfyUI's samplers.

Every frame uses the same reference and (by default) the same initial noise, as the official inference does
(docs/method.md §8, §9). One sampling run covers every frame; the networks see `frame_batch` frames at a
time, step-major (frame_chunks.py), so the appearance bank of each step is computed once, serves every chunk and
is dropped at the next step: memory does not grow with the number of steps, and the result does not depend on the
chunk size.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import comfy.model_management
import comfy.sample
import comfy.utils
import latent_preview
import torch

from ...magicpose_core.model.constants import (
    OFFICIAL_CFG,
    OFFICIAL_SAMPLER,
    OFFICIAL_SCHEDULER,
    OFFICIAL_SEED,
    OFFICIAL_STEPS,
)
from ...magicpose_core.model.reference import MagicPoseReference
from ...magicpose_core.model.temporal import TemporalOptions
from .model_patch import MagicPoseOptions, apply_magicpose, attach_pose_control, magicpose_run
from .official_schedule import register_official_scheduler
from .temporal_sources import add_temporal_sources, with_anchor_frame

log = logging.getLogger("MagicPose")


@dataclass(frozen=True)
class SamplingSettings:
    """How MagicPose Sampler samples; the defaults are the node's (the official inference, model/constants.py)."""

    seed: int = OFFICIAL_SEED
    steps: int = OFFICIAL_STEPS
    cfg: float = OFFICIAL_CFG
    sampler_name: str = OFFICIAL_SAMPLER
    scheduler: str = OFFICIAL_SCHEDULER
    denoise: float = 1.0          # fraction of the schedule to run (1 = from pure noise)
    frame_batch: int = 4          # frames the networks see at once; does not change the result
    shared_noise: bool = True     # one x_T for every frame (official)
    pose_strength: float = 1.0    # pose ControlNet strength (official: 1)


def as_reference(reference) -> MagicPoseReference:
    """A MAGICPOSE_REFERENCE, or a plain LATENT (its first item) until LoadReference is in the graph."""
    # by name as well: a pack loaded twice (two module copies) makes instances of two distinct classes
    if isinstance(reference, MagicPoseReference) or type(reference).__name__ == "MagicPoseReference":
        return reference
    if isinstance(reference, dict) and "samples" in reference:
        samples = reference["samples"]
        if samples.shape[0] > 1:
            log.warning("MagicPose: the reference LATENT has %d items; using the first", samples.shape[0])
        return MagicPoseReference.from_latent(samples)
    raise ValueError("reference must be a MAGICPOSE_REFERENCE (MagicPose Load Reference) or a LATENT (VAE Encode)")


def check_poses(poses: torch.Tensor) -> None:
    if poses.ndim != 4 or poses.shape[-1] != 3:
        raise ValueError(f"poses must be an IMAGE batch (N, H, W, 3), got shape {tuple(poses.shape)}")
    if poses.shape[0] == 0:
        raise ValueError("poses is an empty batch: connect pose maps (MagicPose Extract Pose)")
    h, w = poses.shape[1:3]
    if h % 8 or w % 8:
        raise ValueError(f"pose maps are {w}x{h}; MagicPose needs sizes that are multiples of 8 "
                         f"(set width/height on MagicPose Extract Pose)")


def initial_noise(noise_source, latent: torch.Tensor, seed: int, shared: bool) -> torch.Tensor:
    """x_T for every frame (N, 4, h, w): from a NOISE object (core RandomNoise / DisableNoise or any object with
    `generate_noise(latent_dict)`) or, without one, from `seed`; `shared`: one x_T for every frame (official)."""
    n = latent.shape[0]
    want = latent[:1] if shared else latent
    if noise_source is None:
        noise = comfy.sample.prepare_noise(want, seed)
    else:
        noise = noise_source.generate_noise({"samples": want})
        if not torch.is_tensor(noise) or tuple(noise.shape) != tuple(want.shape):
            got = tuple(noise.shape) if torch.is_tensor(noise) else type(noise).__name__
            raise ValueError(f"the NOISE input gave {got} for a latent batch of shape {tuple(want.shape)}: connect "
                             f"RandomNoise / DisableNoise, or a NOISE node that follows the latent's shape")
    return noise.expand(n, -1, -1, -1) if shared else noise  # (1, 4, h, w) -> (N, 4, h, w)


def magicpose_sample(model, magicpose, reference, poses: torch.Tensor, positive, negative,
                     settings: SamplingSettings | None = None, *, options: MagicPoseOptions | None = None,
                     temporal: TemporalOptions | None = None, noise=None,
                     anchor_pose: torch.Tensor | None = None) -> dict:
    """Sample one latent per pose frame; returns a LATENT {"samples": (N, 4, H/8, W/8)}.

    `settings`: seed, steps, sampler, ... (default: the official inference). `options`: the patch's options;
    its `frame_batch` is set from `settings.frame_batch`. `noise`: an optional core NOISE object giving x_T instead
    of the seed. `temporal`: temporal sources (temporal_sources.py; off by default); `anchor_pose`: the video's first
    pose map, rendered as a hidden frame 0 when a frame range renders on its own (temporal mode first/both)."""
    s = settings or SamplingSettings()
    check_poses(poses)
    poses, hidden = with_anchor_frame(poses, anchor_pose, temporal)  # temporal sources: a range's hidden frame 0
    register_official_scheduler()  # idempotent; normally done at pack load
    ref = as_reference(reference)
    n, h, w = poses.shape[0], poses.shape[1] // 8, poses.shape[2] // 8
    options = dataclasses.replace(options or MagicPoseOptions(), frame_batch=max(1, int(s.frame_batch)))
    m = apply_magicpose(model, magicpose, ref, options)
    m = add_temporal_sources(m, temporal or TemporalOptions(), park_on_cpu=options.park_bank_on_cpu,
                             strict_sites=options.strict_sites)
    run = magicpose_run(m)

    latent = comfy.sample.fix_empty_latent_channels(m, torch.zeros((n, 4, h, w)))
    x_T = initial_noise(noise, latent, s.seed, s.shared_noise)
    seed = int(getattr(noise, "seed", s.seed)) if noise is not None else s.seed  # the sampler's own randomness
    pos = attach_pose_control(positive, magicpose.pose_controlnet, poses, s.pose_strength)

    pbar = comfy.utils.ProgressBar(n * s.steps)
    previewer = latent_preview.get_previewer(m.load_device, m.model.latent_format)

    def callback(step, x0, x, total_steps):
        preview = previewer.decode_latent_to_preview_image("JPEG", x0) if previewer else None
        pbar.update_absolute((step + 1) * n, total_steps * n, preview)

    comfy.model_management.throw_exception_if_processing_interrupted()
    samples = comfy.sample.sample(m, x_T, s.steps, s.cfg, s.sampler_name, s.scheduler, pos, negative, latent,
                                  denoise=s.denoise, callback=callback, seed=seed,
                                  disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED)
    log.info("MagicPose: %d frames (%d at a time), %d steps: appearance model ran %d times (%d bank hits), "
             "bank cache peak %.1f MiB", n, options.frame_batch, s.steps, run.stats.acm_calls, run.stats.hits,
             run.stats.peak_cache_bytes / 2 ** 20)
    return {"samples": samples[hidden:].float()}
