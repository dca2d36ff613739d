"""Model folders and model objects: the `magicpose` folder and the MAGICPOSE_MODEL bundle.

The bundle holds ComfyUI's own objects, so ComfyUI's memory manager loads and offloads them: the Appearance
Control Model as an SD1.5 `UNetModel` inside a `ModelPatcher`, and the pose ControlNet as a core `ControlNet`.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import comfy.controlnet
import comfy.model_management
import comfy.sd
import folder_paths
import torch

from ..magicpose_core.weights.parts import MagicPoseParts

log = logging.getLogger("MagicPose")

FOLDER = "magicpose"
EXTENSIONS = {".safetensors", ".sft", ".th", ".ckpt", ".pth", ".pt"}
DTYPES = {"default": None, "fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
DTYPE_NAMES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}


def register_model_folder() -> None:
    """Register models/magicpose (extra_model_paths.yaml entries named `magicpose` are kept) with the
    converted safetensors and the official .th/.ckpt/.pth extensions."""
    default = os.path.join(folder_paths.models_dir, FOLDER)
    folder_paths.add_model_folder_path(FOLDER, default)
    paths, _ = folder_paths.folder_names_and_paths[FOLDER]
    folder_paths.folder_names_and_paths[FOLDER] = (paths, set(EXTENSIONS))


@dataclass(frozen=True, eq=False)
class MagicPoseModel:
    """The MAGICPOSE_MODEL value: the appearance UNet and the pose ControlNet, under ComfyUI management."""

    appearance: object        # comfy.model_patcher.ModelPatcher around an SD1.5 BaseModel (the ACM)
    pose_controlnet: object   # comfy.controlnet.ControlNet (LDM ControlNet 1.1 layout)
    name: str


def _complete_unet(appearance: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ACM has no `out.*` head (never used: its bank is read before it). ComfyUI's ops leave missing
    weights uninitialised, so fill the head with zeros to get a complete, deterministic UNet."""
    sd = dict(appearance)
    if "out.2.weight" not in sd:
        w = sd["input_blocks.0.0.weight"]                   # (model_channels, 4, 3, 3)
        mc, cin = w.shape[0], w.shape[1]
        sd["out.0.weight"] = torch.zeros(mc, dtype=w.dtype)
        sd["out.0.bias"] = torch.zeros(mc, dtype=w.dtype)
        sd["out.2.weight"] = torch.zeros(cin, mc, 3, 3, dtype=w.dtype)
        sd["out.2.bias"] = torch.zeros(cin, dtype=w.dtype)
    return sd


def resolve_dtype(weight_dtype: str | torch.dtype, device: torch.device | None = None, params: int = 0) -> torch.dtype:
    """The weight dtype a `weight_dtype` choice means on `device` (default: ComfyUI's torch device).

    `default` is fp32 on the CPU (the official weights' precision) and, elsewhere, what ComfyUI picks for an SD1.5
    UNet on that device: fp16 on most GPUs, bf16 where fp16 is not usable, fp32 on old cards or with --fp32-unet.
    `params` (the weights' element count) lets ComfyUI weigh the free memory as it does for its own UNets.
    """
    if isinstance(weight_dtype, torch.dtype):  # given as such (the float64 invariance tests: ComfyUI's fp64 path)
        return weight_dtype
    if DTYPES[weight_dtype] is not None:
        return DTYPES[weight_dtype]
    device = device if device is not None else comfy.model_management.get_torch_device()
    if comfy.model_management.is_device_cpu(device):
        return torch.float32
    return comfy.model_management.unet_dtype(device=device, model_params=params,
                                             supported_dtypes=[torch.float16, torch.bfloat16, torch.float32])


def build_magicpose_model(parts: MagicPoseParts, weight_dtype: str | torch.dtype = "default",
                          name: str = "magicpose") -> MagicPoseModel:
    """ComfyUI objects from the split checkpoint parts (ldm UNet keys; `control_model.` ControlNet keys), with the
    weights in `resolve_dtype(weight_dtype)`."""
    params = sum(t.numel() for part in (parts.appearance, parts.pose_controlnet) for t in part.values())
    opts = {"dtype": resolve_dtype(weight_dtype, params=params)}
    acm = comfy.sd.load_diffusion_model_state_dict(_complete_unet(parts.appearance), model_options=dict(opts))
    if acm is None:
        raise ValueError(f"{name}: the appearance weights are not a UNet ComfyUI recognises")
    cn = comfy.controlnet.load_controlnet_state_dict(dict(parts.pose_controlnet), model_options=dict(opts))
    if cn is None:
        raise ValueError(f"{name}: the pose ControlNet weights were not recognised")
    return MagicPoseModel(appearance=acm, pose_controlnet=cn, name=name)


def writable_cache_dir() -> str:
    """Where converted parts go when the folder of an official checkpoint is read-only."""
    d = os.path.join(folder_paths.get_user_directory(), "magicpose_cache")
    os.makedirs(d, exist_ok=True)
    return d
