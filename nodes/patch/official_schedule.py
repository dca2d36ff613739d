"""The `magicpose_official` scheduler: the official DDIM schedule in every ComfyUI sampler node.

The schedule is the official uniform DDIM timesteps (what `ddim_uniform` gives) ending at sigma(t=0), where the
official last step stops (alphas_cumprod[0] = 0.99915), instead of at sigma = 0. Registered in ComfyUI's scheduler
tables at pack load, so KSampler, KSamplerAdvanced and BasicScheduler list it.

A schedule only returns sigmas. The two other official details live on the MagicPose-patched MODEL (its
OUTER_SAMPLE wrapper calls `official_scales` on every run's sigmas): a run over a whole official schedule starts
from pure noise of unit variance in DDPM space (x_T = noise; ComfyUI would scale it by sigma / sqrt(1 + sigma^2) =
0.9971 at t = 981), and a run that ends at sigma(t=0) returns the latent in DDPM space (k-diffusion
x / sqrt(1 + sigma^2)), as the official sampler does. A schedule split in two runs (KSamplerAdvanced steps, SplitSigmas)
gets the official last step but ComfyUI's start-noise scale: its first part cannot be told from `ddim_uniform`.
Behaviour of MagicDance@a515a1f
ldm/models/diffusion/ddim.py (facts only, docs/method.md §8).
"""
from __future__ import annotations

import logging
import math

import comfy.samplers
import torch

from ...magicpose_core.model.guidance import ddim_uniform_timesteps, official_start

log = logging.getLogger("MagicPose")

SCHEDULER_NAME = "magicpose_official"  # the official uniform DDIM timesteps, ending at sigma(t=0)


def official_sigmas(model_sampling, steps: int) -> torch.Tensor:
    """Scheduler handler (ComfyUI's `SchedulerHandler(use_ms=True)` signature): the official DDIM sigmas,
    descending, then sigma(t=0) instead of 0."""
    table = getattr(model_sampling, "sigmas", None)
    if table is None or table.ndim != 1 or len(table) < 2:
        raise ValueError(f"the {SCHEDULER_NAME} schedule needs a discrete-timestep (SD1.5-style) model; "
                         f"this MODEL's sampling is {type(model_sampling).__name__}: pick another scheduler")
    ts = ddim_uniform_timesteps(max(1, min(int(steps), len(table) - 1)), len(table))[::-1]
    return torch.stack([table[t] for t in ts] + [table[0]]).float().cpu()


def official_scales(model_sampling, sigmas: torch.Tensor) -> tuple[float, float]:
    """(factor on the initial noise, factor on the output) that make a run on these sigmas the official DDIM.

    The output factor is 1 / sqrt(1 + s^2) when the run ends at s = sigma(t=0) (> 0: only the official schedule
    ends there); the noise factor is sqrt(1 + s0^2) / s0 when it also starts at the top of an official schedule (a
    whole official run: the official x_T is pure noise; ComfyUI does the same only at sigma_max; `ddim_uniform`,
    which ends at 0, keeps ComfyUI's scale). Both are 1 for any other run.
    """
    table = getattr(model_sampling, "sigmas", None)
    if table is None or sigmas is None or sigmas.ndim != 1 or len(sigmas) < 2:
        return 1.0, 1.0
    s = [float(v) for v in sigmas[:2].float().cpu()] + [float(sigmas[-1])]
    s_end = float(table[0])
    end = 1 / math.sqrt(1 + s_end ** 2) if math.isclose(s[2], s_end, rel_tol=1e-5) else 1.0
    t0, t1 = _timestep(table, s[0]), _timestep(table, s[1])
    start = 1.0
    top = float(model_sampling.sigma_max)
    if end != 1.0 and t0 is not None and t1 is not None and official_start(t0, t1, len(table)) \
            and not (math.isclose(s[0], top, rel_tol=1e-5) or s[0] > top):  # at sigma_max ComfyUI already does it
        start = math.sqrt(1 + s[0] ** 2) / s[0]
    return start, end


def _timestep(table: torch.Tensor, sigma: float) -> int | None:
    """The index t with table[t] == sigma (relative 1e-5), or None: only exact table sigmas count."""
    t = int(torch.argmin((table.float().cpu() - sigma).abs()))
    return t if math.isclose(float(table[t]), sigma, rel_tol=1e-5) else None


def register_official_scheduler() -> None:
    """Add `magicpose_official` to ComfyUI's scheduler tables (idempotent; appends, so other names keep their
    place). `KSampler.SCHEDULERS` is the list core nodes offer; another pack may have replaced it by a copy."""
    if SCHEDULER_NAME not in comfy.samplers.SCHEDULER_HANDLERS:
        comfy.samplers.SCHEDULER_HANDLERS[SCHEDULER_NAME] = comfy.samplers.SchedulerHandler(official_sigmas)
    for names in (comfy.samplers.SCHEDULER_NAMES, comfy.samplers.KSampler.SCHEDULERS):
        if SCHEDULER_NAME not in names:
            names.append(SCHEDULER_NAME)


def scheduler_names() -> list[str]:
    """ComfyUI's scheduler names with `magicpose_official` (once), for the sampler node's combo."""
    names = list(comfy.samplers.KSampler.SCHEDULERS)
    return names if SCHEDULER_NAME in names else names + [SCHEDULER_NAME]
