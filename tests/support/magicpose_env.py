"""In-process MagicPose fixtures on the factory checkpoints: fp32 ComfyUI models and plain tensors."""
from __future__ import annotations

import types
from functools import lru_cache

import torch


@lru_cache(maxsize=2)
def factory_parts(path: str):
    """Split of the official-layout factory file: main UNet (ldm keys), appearance (682), pose ControlNet (340)."""
    from magicpose_core.weights.convert import split_official
    from magicpose_core.weights.validate import load_official

    sd = load_official(path)
    parts = split_official(sd)
    unet = {k[len("model.diffusion_model."):]: v for k, v in sd.items() if k.startswith("model.diffusion_model.")}
    return types.SimpleNamespace(unet=unet, appearance=parts.appearance, pose_controlnet=parts.pose_controlnet)


def comfy_models(pack, path: str, dtype: torch.dtype = torch.float32):
    """(main UNet ModelPatcher, MAGICPOSE_MODEL bundle) built by ComfyUI from the factory weights."""
    import comfy.sd

    parts = factory_parts(str(path))
    unet = comfy.sd.load_diffusion_model_state_dict(dict(parts.unet), model_options={"dtype": dtype})
    mp = pack.nodes.models.build_magicpose_model(parts, dtype)  # float64 too: ComfyUI runs it without a cast
    return unet, mp


def magicpose_reference(pack, size: int = 64):
    """The MAGICPOSE_REFERENCE of :func:`reference_latent`."""
    return pack.magicpose_core.model.reference.MagicPoseReference.from_latent(reference_latent(size))


class AttnProbe:
    """An attn1_patch registered after MagicPose's: sees the keys/values handed to attention, per call and site."""

    def __init__(self):
        self.calls = []  # (cond_or_uncond, site, own tokens, key tokens)

    def __call__(self, n, context, value, extra_options):
        block = extra_options.get("block")
        site = (block[0], block[1], extra_options.get("block_index", 0)) if block else None
        self.calls.append((tuple(extra_options.get("cond_or_uncond", ())), site, n.shape[1], context.shape[1]))
        return n, context, value


def text_context(seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    """A stand-in CLIP output (1, 77, 768): the tests need the same context on both sides, not real text."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn((1, 77, 768), generator=g) * scale


def conditioning(ctx: torch.Tensor) -> list:
    return [[ctx, {}]]


def pose_maps(n: int, size: int = 64, seed: int = 1) -> torch.Tensor:
    """n distinct random sparse 'pose maps' (n, size, size, 3) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand((n, size, size, 3), generator=g) > 0.9).float()


def reference_latent(size: int = 64, seed: int = 2) -> torch.Tensor:
    """A raw (unscaled) VAE-like reference latent (1, 4, size/8, size/8)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn((1, 4, size // 8, size // 8), generator=g) * 4.0
