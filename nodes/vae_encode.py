"""VAE encoding of the reference: ComfyUI's posterior mode, or a seeded posterior sample as the official code.

Finding (ComfyUI 0.30.0 source): ``comfy.sd.VAE.encode`` maps pixels to [-1, 1], loads the VAE through
``model_management.load_models_gpu([vae.patcher])`` and calls ``first_stage_model.encode``. For an SD1.5 VAE
that is ``AutoencoderKL`` (``comfy/ldm/models/autoencoder.py``): encoder -> ``quant_conv`` -> the moments
(mean, logvar) -> ``DiagonalGaussianRegularizer(sample=False)``, which returns ``posterior.mode()``, the
**mean**. So ComfyUI's latent is deterministic and unscaled (x0.18215 happens later in
``latent_format.process_in``).

The official code (MagicDance@a515a1f ``ddpm.py`` ``get_first_stage_encoding``, behaviour only) uses
``0.18215 * encode(ref).sample()``: mean + std * N(0, 1), std = exp(0.5 * clamp(logvar, -30, 20)).
``sample`` reproduces that here with a seeded CPU generator: a forward hook on the VAE's regulariser swaps
the mode for a sample for the duration of one ``vae.encode`` call, so ComfyUI's own encode path (model
management, dtype, device, batching) is unchanged. The latent stays unscaled in both modes.
"""
from __future__ import annotations

import logging

import torch
from comfy.ldm.models.autoencoder import DiagonalGaussianRegularizer

log = logging.getLogger("MagicPose")

ENCODE_MODES = ("mode (deterministic)", "sample (official)")
LOGVAR_RANGE = (-30.0, 20.0)  # clamp of ldm DiagonalGaussianDistribution (same in ComfyUI and the official code)


def posterior_sample(moments: torch.Tensor, seed: int) -> torch.Tensor:
    """(B, 2C, h, w) posterior moments -> (B, C, h, w) sample mean + std * eps, eps from a seeded CPU generator."""
    mean, logvar = moments.float().chunk(2, dim=1)  # (B, 2C, h, w) -> 2 x (B, C, h, w)
    std = torch.exp(0.5 * logvar.clamp(*LOGVAR_RANGE))
    eps = torch.randn(mean.shape, generator=torch.Generator("cpu").manual_seed(int(seed)), dtype=torch.float32)
    return (mean + std * eps.to(mean.device)).to(moments.dtype)


def encode_reference(vae, pixels: torch.Tensor, mode: str = ENCODE_MODES[0], seed: int = 0) -> torch.Tensor:
    """IMAGE (B, H, W, 3) in [0, 1] -> raw VAE latent (B, 4, H/8, W/8) float32 on the intermediate device."""
    if mode not in ENCODE_MODES:
        raise ValueError(f"encode must be one of {', '.join(ENCODE_MODES)}, got {mode!r}")
    if mode == ENCODE_MODES[0]:
        return vae.encode(pixels).detach().float()
    regulariser = getattr(getattr(vae, "first_stage_model", None), "regularization", None)
    if not isinstance(regulariser, DiagonalGaussianRegularizer):
        raise ValueError("encode 'sample (official)' needs a KL VAE with a Gaussian posterior (SD1.5 VAE); this VAE "
                         "has none. Use encode 'mode (deterministic)'.")
    calls = []

    def swap_mode_for_sample(module, args, output):
        calls.append(args[0].shape)
        return posterior_sample(args[0], seed), None

    handle = regulariser.register_forward_hook(swap_mode_for_sample)
    try:
        latent = vae.encode(pixels)
    finally:
        handle.remove()
    if len(calls) > 1:
        log.warning("the VAE encoded in %d pieces (tiled, low memory): each got the same noise seed", len(calls))
    return latent.detach().float()
