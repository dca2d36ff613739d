"""MagicPose classifier-free guidance ("image-CFG") and the official DDIM schedule.

The conditional branch is SD1.5 + appearance bank + pose residuals, the unconditional branch is plain SD1.5
with the same (empty) text: eps = eps_uncond + scale * (eps_cond - eps_uncond), official scale 7.
Ported from MagicDance@a515a1f model_lib/ControlNet/ldm/models/diffusion/ddim.py (p_sample_ddim,
controlnet_important): behaviour only (docs/method.md §7). ComfyUI's default CFG combines the same way, so the
pack has no CFG code: the patch decides only what each branch computes (nodes/patch/model_patch.py). This module
holds the official DDIM schedule: SD1.5's alphas_cumprod, the uniform DDIM timesteps, and the test for a run that
starts at the top of them.
"""
from __future__ import annotations

import math

import torch

from .constants import LINEAR_END, LINEAR_START, NUM_TRAIN_TIMESTEPS


def alphas_cumprod(num_timesteps: int = NUM_TRAIN_TIMESTEPS, linear_start: float = LINEAR_START,
                   linear_end: float = LINEAR_END) -> torch.Tensor:
    """SD1.5 "linear" schedule: betas = linspace(sqrt(start), sqrt(end))², cumulative product of 1 - beta (float64)."""
    betas = torch.linspace(math.sqrt(linear_start), math.sqrt(linear_end), num_timesteps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def ddim_uniform_timesteps(steps: int, num_timesteps: int = NUM_TRAIN_TIMESTEPS) -> list[int]:
    """Official DDIM timesteps (ddim_discretize="uniform"), ascending: range(0, T, T // steps) + 1, below T.

    For a step count that does not divide T this has more than `steps` entries (7 -> 8), as the official sampler
    and ComfyUI's ddim_uniform have; the official code would index past T where ComfyUI stops (3 -> 1, 334, 667).
    """
    if not 1 <= steps <= num_timesteps:
        raise ValueError(f"DDIM steps must be between 1 and {num_timesteps}, got {steps}")
    c = num_timesteps // steps
    return [t + 1 for t in range(0, num_timesteps, c) if t + 1 < num_timesteps]


def official_start(t0: int, t1: int, num_timesteps: int = NUM_TRAIN_TIMESTEPS) -> bool:
    """True when t0 > t1 are the first two timesteps of an official DDIM schedule (t1 = 0: its end, at
    alphas_cumprod[0]); i.e. a run that starts there starts from pure noise, as the official sampler does."""
    if t1 == 0:
        return t0 == 1                              # the one-step schedule: t = 1, then the end
    c = t0 - t1
    if c <= 0 or num_timesteps // c == 0 or num_timesteps // (num_timesteps // c) != c:
        return False                                # no step count has this spacing
    return t0 == 1 + c * ((num_timesteps - 2) // c)  # the top of the schedule with spacing c
