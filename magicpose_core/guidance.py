"""MagicPose classifier-free guidance ("image-CFG").

The conditional branch is SD1.5 + appearance bank + pose residuals, the unconditional branch is plain SD1.5
with the same (empty) text: eps = eps_uncond + scale * (eps_cond - eps_uncond), official scale 7.
Ported from MagicDance@a515a1f model_lib/ControlNet/ldm/models/diffusion/ddim.py (p_sample_ddim,
controlnet_important): behaviour only (magicpose-method.md §7). ComfyUI's default CFG combines the same way.
"""
from __future__ import annotations

import math

import torch

from .config import LINEAR_END, LINEAR_START, NUM_TRAIN_TIMESTEPS


def magicpose_cfg(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, scale: float = 7.0) -> torch.Tensor:
    """Image-CFG: uncond is plain SD (no bank, no pose); official scale 7."""
    return eps_uncond + scale * (eps_cond - eps_uncond)


def alphas_cumprod(num_timesteps: int = NUM_TRAIN_TIMESTEPS, linear_start: float = LINEAR_START,
                   linear_end: float = LINEAR_END) -> torch.Tensor:
    """SD1.5 "linear" schedule: betas = linspace(sqrt(start), sqrt(end))², cumulative product of 1 - beta (float64)."""
    betas = torch.linspace(math.sqrt(linear_start), math.sqrt(linear_end), num_timesteps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def ddim_uniform_timesteps(steps: int, num_timesteps: int = NUM_TRAIN_TIMESTEPS) -> list[int]:
    """Official DDIM timesteps (ddim_discretize="uniform"): range(0, 1000, 1000 // steps) + 1, ascending."""
    c = num_timesteps // steps
    return [t + 1 for t in range(0, num_timesteps, c)][:steps]

