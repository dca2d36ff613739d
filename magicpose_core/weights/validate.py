"""Exact validation of MagicPose weights against layout.py: the official checkpoint and its two trained parts.

`model_state-110000.th` (HF `Boese0601/MagicDance`) is a raw `torch.save(state_dict)` of MagicPose (ICML 2024,
arXiv 2311.12052; Boese0601/MagicDance@a515a1f, `ControlLDMReferenceOnlyPose` in model_lib/ControlNet/cldm/cldm.py):
2182 fp32 tensors (docs/method.md §11). Its exact key set and shapes are asserted, with the widths read from
the file's own main UNet and VAE decoder, so tiny test files with the real block layout validate too; errors name
the file, the first offending keys and what the file looks like instead (nanoGPT-style asserted loading). The
appearance UNet and pose ControlNet are accepted in ldm, official-prefixed or diffusers naming (keymap.py).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Mapping

import torch

from . import hub, keymap
from . import layout as L
from .describe import Shapes, compare_layout, describe, has_prefix, shapes_of
from .errors import HINT, CheckpointError
from .safe_load import read_state_dict

log = logging.getLogger("MagicPose")


def expected_official_layout(shapes: Shapes) -> tuple[L.Layout, L.UNetConfig, int]:
    """The official layout with the widths of this file's own main UNet and VAE decoder (SD1.5 defaults when
    those cannot be read)."""
    cfg = L.infer_unet_config(shapes, L.MAIN_PREFIX) or L.SD15_UNET
    dec = L.infer_vae_decoder_channels(shapes, L.VAE_PREFIX) or L.VAE_ENCODER_WIDTH
    return L.official_layout(cfg, dec), cfg, dec


def validate_official(sd: Mapping[str, object], name: str = "state dict") -> L.UNetConfig:
    """Assert the exact key set and shapes of `model_state-110000.th`; returns the UNet widths found."""
    shapes = shapes_of(sd)
    expected, cfg, _ = expected_official_layout(shapes)
    diff = compare_layout(shapes, expected)
    if diff:
        raise CheckpointError(
            f"{name} is not the official MagicPose checkpoint ({hub.FILENAME} layout): expected {len(expected)} "
            f"tensors, found {len(shapes)}; {diff.summary()}. This looks like {describe(shapes)}. {HINT}")
    return cfg


def load_official(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The official checkpoint as a validated {key: tensor} (memory-mapped for zip `.th` files)."""
    path = Path(path)
    sd = read_state_dict(path)
    validate_official(sd, str(path))
    return sd


def _keymap_error(path: Path, e: keymap.KeyMapError) -> CheckpointError:
    return CheckpointError(f"{path.name}: diffusers-layout weights that are not an SD1.5 UNet/ControlNet: {e}")


def _assert_layout(sd: Mapping[str, torch.Tensor], expected: L.Layout, path: Path, what: str) -> None:
    diff = compare_layout(shapes_of(sd), expected)
    if diff:
        raise CheckpointError(f"{path.name}: not a MagicPose {what}: expected {len(expected)} tensors, found "
                              f"{len(sd)}; {diff.summary()}. This looks like {describe(shapes_of(sd))}. {HINT}")


def normalize_appearance(sd: Mapping[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """Appearance weights in any accepted naming -> ldm UNet keys without out.* (validated exactly)."""
    sd = dict(sd)
    if has_prefix(sd, L.ACM_PREFIX):
        sd = {k[len(L.ACM_PREFIX):] if k.startswith(L.ACM_PREFIX) else k: v for k, v in sd.items()}
    if keymap.is_diffusers_unet(sd):
        try:
            sd = keymap.diffusers_to_ldm(sd)
        except keymap.KeyMapError as e:
            raise _keymap_error(path, e) from None
    unused = [k for k in sd if k.startswith(("out.", "input_hint_block."))]  # unused by the ACM (docs/method.md §3.4)
    for k in unused:
        del sd[k]
    if unused:
        log.debug("MagicPose: %s: ignoring %d unused appearance tensors (out.*, input_hint_block.*)", path.name,
                  len(unused))
    cfg = L.infer_unet_config(shapes_of(sd)) or L.SD15_UNET
    expected = L.appearance_layout(cfg, with_hint_block=False)
    _assert_layout(sd, expected, path, "appearance UNet")
    return sd


def normalize_pose_controlnet(sd: Mapping[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """Pose ControlNet weights in any accepted naming -> `control_model.` ldm keys (validated exactly)."""
    sd = dict(sd)
    if has_prefix(sd, L.POSE_PREFIX):
        sd = {L.CONTROL_PREFIX + k[len(L.POSE_PREFIX):] if k.startswith(L.POSE_PREFIX) else k: v
              for k, v in sd.items()}
    elif "controlnet_cond_embedding.conv_in.weight" in sd:
        try:
            sd = {L.CONTROL_PREFIX + k: v for k, v in keymap.diffusers_to_ldm(sd).items()}
        except keymap.KeyMapError as e:
            raise _keymap_error(path, e) from None
    elif "zero_convs.0.0.weight" in sd:
        sd = {L.CONTROL_PREFIX + k: v for k, v in sd.items()}
    cfg = L.infer_unet_config(shapes_of(sd), L.CONTROL_PREFIX) or L.SD15_UNET
    expected = L.prefixed(L.CONTROL_PREFIX, L.controlnet_layout(cfg))
    _assert_layout(sd, expected, path, "pose ControlNet")
    return sd


def check_pair(appearance: Mapping[str, torch.Tensor], pose: Mapping[str, torch.Tensor], a: Path, p: Path) -> None:
    """An appearance UNet and a pose ControlNet of different widths do not belong together."""
    ca = L.infer_unet_config(shapes_of(appearance))
    cp = L.infer_unet_config(shapes_of(pose), L.CONTROL_PREFIX)
    if ca != cp:
        raise CheckpointError(f"{a.name} and {p.name} do not belong together: appearance UNet widths "
                              f"{ca.model_channels if ca else '?'} x {ca.channel_mult if ca else '?'}, pose ControlNet "
                              f"{cp.model_channels if cp else '?'} x {cp.channel_mult if cp else '?'}")
