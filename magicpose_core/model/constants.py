"""MagicPose constants and defaults: the 16 attention sites, the official inference settings.

Sources: MagicPose (ICML 2024, arXiv 2311.12052); Boese0601/MagicDance@a515a1f
model_lib/ControlNet/test_any_image_pose.py and ldm/models/diffusion/ddim.py (facts only), tabulated in
docs/method.md §3.3 and §8.1.
"""
from __future__ import annotations

# The 16 self-attention (attn1) sites of the SD1.5 UNet in forward order, keyed as ComfyUI names them:
# (extra_options["block"][0], extra_options["block"][1], extra_options["block_index"]).
# The Appearance Control Model writes bank entry k at the k-th site; the main UNet reads it at the same key.
SITES: tuple[tuple[str, int, int], ...] = (
    ("input", 1, 0), ("input", 2, 0), ("input", 4, 0), ("input", 5, 0), ("input", 7, 0), ("input", 8, 0),
    ("middle", 0, 0),
    ("output", 3, 0), ("output", 4, 0), ("output", 5, 0), ("output", 6, 0), ("output", 7, 0),
    ("output", 8, 0), ("output", 9, 0), ("output", 10, 0), ("output", 11, 0),
)

# Official inference (docs/method.md §8).
# MagicPose Sampler's defaults and the shipped workflows' settings are these.
OFFICIAL_SEED = 42
OFFICIAL_STEPS = 50
OFFICIAL_CFG = 7.0
OFFICIAL_SAMPLER = "ddim"             # deterministic DDIM, eta 0
OFFICIAL_SCHEDULER = "ddim_uniform"   # ComfyUI's name for the official uniform DDIM timesteps
OFFICIAL_SIZE = 512                   # square frames and reference, in pixels
LATENT_SCALE_FACTOR = 0.18215  # SD1.5 VAE scale factor (latent_format.process_in)

# DDPM schedule of SD1.5 ("linear" = sqrt-linear betas), docs/method.md §8.2.
NUM_TRAIN_TIMESTEPS = 1000
LINEAR_START = 0.00085
LINEAR_END = 0.012
