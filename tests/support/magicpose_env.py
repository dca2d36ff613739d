"""In-process MagicPose fixtures on the factory checkpoints: fp32 ComfyUI models and plain tensors."""
from __future__ import annotations

import types
from functools import lru_cache

import torch


@lru_cache(maxsize=2)
def factory_parts(path: str):
    """Split of the official-layout factory file: main UNet (ldm keys), appearance (682), pose ControlNet (340)."""
    from magicpose_core import checkpoint

    sd = checkpoint.load_official(path)
    parts = checkpoint.split_official(sd)
    unet = {k[len("model.diffusion_model."):]: v for k, v in sd.items() if k.startswith("model.diffusion_model.")}
    return types.SimpleNamespace(unet=unet, appearance=parts.appearance, pose_controlnet=parts.pose_controlnet)


def comfy_models(pack, path: str, dtype: torch.dtype = torch.float32):
    """(main UNet ModelPatcher, MAGICPOSE_MODEL bundle) built by ComfyUI from the factory weights."""
    import comfy.sd

    parts = factory_parts(str(path))
    unet = comfy.sd.load_diffusion_model_state_dict(dict(parts.unet), model_options={"dtype": dtype})
    name = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]
    mp = pack.nodes.models.build_magicpose_model(parts, name)
    return unet, mp


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
