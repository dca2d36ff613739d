"""All-in-one MagicPose sampling over a batch of pose frames, in frame chunks, with ComfyUI's samplers.

Every frame uses the same reference and (by default) the same initial noise, as the official inference does
(magicpose-method.md §8, §9); the appearance bank of each step is computed once and reused by every chunk.
"""
from __future__ import annotations

import logging
import math

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview
import torch

from ..magicpose_core.guidance import ddim_uniform_timesteps
from ..magicpose_core.reference import MagicPoseReference
from .patching import MagicPoseOptions, apply_magicpose, attach_pose_control, magicpose_run

log = logging.getLogger("MagicPose")

OFFICIAL_SCHEDULE = "magicpose_official"
SCHEDULERS = list(comfy.samplers.KSampler.SCHEDULERS) + [OFFICIAL_SCHEDULE]


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


def official_sigmas(model, steps: int, denoise: float = 1.0) -> torch.Tensor:
    """The official DDIM schedule on this model's sigmas: uniform timesteps 1, 1+1000/steps, …, then sigma(t=0)
    instead of 0 (the official last step stops at alphas_cumprod[0])."""
    ms = model.get_model_object("model_sampling")
    total = steps if denoise >= 0.9999 else int(steps / denoise)
    ts = ddim_uniform_timesteps(total, len(ms.sigmas))[::-1]
    sig = torch.stack([ms.sigmas[t] for t in ts] + [ms.sigmas[0]]).float()
    return sig[-(steps + 1):]


def check_poses(poses: torch.Tensor) -> None:
    if poses.ndim != 4 or poses.shape[-1] != 3:
        raise ValueError(f"poses must be an IMAGE batch (N, H, W, 3), got shape {tuple(poses.shape)}")
    if poses.shape[0] == 0:
        raise ValueError("poses is an empty batch: connect pose maps (MagicPose Extract Pose)")
    h, w = poses.shape[1:3]
    if h % 8 or w % 8:
        raise ValueError(f"pose maps are {w}x{h}; MagicPose needs sizes that are multiples of 8 "
                         f"(set width/height on MagicPose Extract Pose)")


def magicpose_sample(model, magicpose, reference, poses: torch.Tensor, positive, negative, seed: int, steps: int,
                     cfg: float, sampler_name: str, scheduler: str, denoise: float = 1.0, frame_batch: int = 4,
                     shared_noise: bool = True, options: MagicPoseOptions | None = None,
                     pose_strength: float = 1.0) -> dict:
    """Sample one latent per pose frame; returns a LATENT {"samples": (N, 4, H/8, W/8)}."""
    check_poses(poses)
    ref = as_reference(reference)
    n, h, w = poses.shape[0], poses.shape[1] // 8, poses.shape[2] // 8
    m = apply_magicpose(model, magicpose, ref, options)
    run = magicpose_run(m)

    latent = comfy.sample.fix_empty_latent_channels(m, torch.zeros((n, 4, h, w)))
    if shared_noise:  # the official inference draws x_T once and reuses it for every frame
        noise = comfy.sample.prepare_noise(latent[:1], seed).expand(n, -1, -1, -1)
    else:
        noise = comfy.sample.prepare_noise(latent, seed)  # frame i's noise does not depend on the chunking

    sigmas, out_scale = None, 1.0
    comfy_scheduler = scheduler
    if scheduler == OFFICIAL_SCHEDULE:
        sigmas = official_sigmas(m, steps, denoise)
        comfy_scheduler = "ddim_uniform"
        ms = m.get_model_object("model_sampling")
        s0 = float(sigmas[0])
        if not math.isclose(s0, float(ms.sigma_max), rel_tol=1e-5):
            noise = noise * (math.sqrt(1 + s0 ** 2) / s0)  # official x_T has unit variance in DDPM space
        out_scale = 1 / math.sqrt(1 + float(sigmas[-1]) ** 2)  # back to DDPM space at alphas_cumprod[0]

    total = n * steps
    pbar = comfy.utils.ProgressBar(total)
    previewer = latent_preview.get_previewer(m.load_device, m.model.latent_format)
    out = torch.empty((n,) + tuple(latent.shape[1:]), dtype=torch.float32)
    frame_batch = max(1, int(frame_batch))
    with run.bank_scope():
        for start in range(0, n, frame_batch):
            comfy.model_management.throw_exception_if_processing_interrupted()
            end = min(n, start + frame_batch)
            pos = attach_pose_control(positive, magicpose.pose_controlnet, poses[start:end], pose_strength)

            def callback(step, x0, x, total_steps, _done=start * steps, _k=end - start):
                preview = previewer.decode_latent_to_preview_image("JPEG", x0) if previewer else None
                pbar.update_absolute(_done + (step + 1) * _k, total, preview)

            samples = comfy.sample.sample(
                m, noise[start:end].contiguous(), steps, cfg, sampler_name, comfy_scheduler, pos, negative,
                latent[start:end], denoise=denoise, sigmas=sigmas, callback=callback,
                disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
            out[start:end] = samples.float() * out_scale
    log.info("MagicPose: %d frames, %d steps: appearance model ran %d times (%d bank hits)",
             n, steps, run.stats.acm_calls, run.stats.hits)
    return {"samples": out}
