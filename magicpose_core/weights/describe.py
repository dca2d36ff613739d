"""What a state dict is: key groups, a short guess at its kind ("a plain SD1.5 checkpoint", "a ControlNet", ...)
and how its {key: shape} differs from an expected layout (layout.py), for error messages and `inspect`.

The groups are the top-level prefixes of the official MagicPose checkpoint (MagicPose, ICML 2024, arXiv 2311.12052;
Boese0601/MagicDance@a515a1f `model_state-110000.th`; docs/method.md §11.2).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from . import keymap
from . import layout as L
from .errors import SHOW

Shapes = Mapping[str, Sequence[int]]


def shapes_of(sd: Mapping[str, object]) -> dict[str, tuple[int, ...]]:
    """{key: shape} of a state dict (tensors) or of a layout (shapes)."""
    return {k: tuple(v.shape) if hasattr(v, "shape") else tuple(v) for k, v in sd.items()}


def has_prefix(keys: Iterable[str], prefix: str) -> bool:
    return any(k.startswith(prefix) for k in keys)


def key_group(key: str) -> str:
    """The group a key belongs to, for summaries: a known checkpoint prefix, else its first component."""
    if key in L.DDPM_BUFFERS:
        return "DDPM buffers"
    for p in (L.MAIN_PREFIX, L.ACM_PREFIX, L.POSE_PREFIX, L.VAE_PREFIX, L.CLIP_PREFIX, L.CONTROL_PREFIX):
        if key.startswith(p):
            return p + "*"
    head = key.split(".", 1)[0]
    return head + ".*" if "." in key else head


def group_counts(keys: Iterable[str]) -> dict[str, int]:
    """Keys per group, in order of first appearance."""
    return dict(Counter(map(key_group, keys)))


def _examples(keys: Sequence[str], n: int = SHOW) -> str:
    """Up to n keys, the first of each group before any second one, so every group is represented."""
    firsts: dict[str, str] = {}
    for k in keys:
        firsts.setdefault(key_group(k), k)
    shown = list(firsts.values())[:n]
    shown += [k for k in keys if k not in shown][: n - len(shown)]
    return ", ".join(shown) + (f" (+{len(keys) - len(shown)} more)" if len(keys) > len(shown) else "")


def _fmt_groups(keys: Iterable[str]) -> str:
    return ", ".join(f"{g} {n}" for g, n in group_counts(keys).items())


def describe(shapes: Shapes) -> str:
    """A short guess at what a state dict is ("a plain SD1.5 checkpoint", "a ControlNet", ...)."""
    keys = list(shapes)
    if not keys:
        return "an empty state dict"
    ks = set(keys)

    def ctx(prefix: str) -> int | None:
        s = shapes.get(prefix + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight")
        return int(s[1]) if s is not None and len(s) == 2 else None

    if has_prefix(keys, L.ACM_PREFIX) or has_prefix(keys, L.POSE_PREFIX):
        return f"a MagicPose-style checkpoint with a different layout (groups: {_fmt_groups(keys)})"
    if has_prefix(keys, "conditioner.embedders.") or L.MAIN_PREFIX + "label_emb.0.0.weight" in ks:
        return "an SDXL checkpoint"
    if "label_emb.0.0.weight" in ks or "add_embedding.linear_1.weight" in ks:
        return "an SDXL UNet"
    if has_prefix(keys, L.MAIN_PREFIX):
        c = ctx(L.MAIN_PREFIX)
        if c == 1024:
            return "a plain SD2.x checkpoint"
        if has_prefix(keys, L.CONTROL_PREFIX):
            return "an SD1.5 + ControlNet training checkpoint (the control_sd15_ini.ckpt layout)"
        if has_prefix(keys, L.VAE_PREFIX) or has_prefix(keys, "cond_stage_model."):
            return "a plain SD1.5 checkpoint (UNet + VAE + text encoder, no appearance or pose networks)"
        return "an SD1.5 UNet with a model.diffusion_model. prefix"
    if "control_model.zero_convs.0.0.weight" in ks or "zero_convs.0.0.weight" in ks:
        return "a ControlNet (ldm layout, like control_v11p_sd15_openpose.pth)"
    if "controlnet_cond_embedding.conv_in.weight" in ks:
        return "a ControlNet in diffusers layout"
    if keymap.is_diffusers_unet(ks):
        return "a UNet in diffusers layout"
    if "input_blocks.0.0.weight" in ks:
        if "out.2.weight" not in ks:
            return "a bare ldm UNet without out.* (like a converted MagicPose appearance part)"
        return "a bare ldm UNet (SD1.5-style, no prefix)"
    if has_prefix(keys, "encoder.down.") and has_prefix(keys, "decoder.up."):
        return "a VAE"
    if has_prefix(keys, "text_model.") or has_prefix(keys, "transformer.text_model."):
        return "a CLIP text encoder"
    if any("lora" in k.lower() for k in keys[:100]):
        return "a LoRA"
    return f"an unrecognised state dict ({len(keys)} tensors, e.g. {', '.join(keys[:3])})"


@dataclass
class LayoutDiff:
    """How a state dict's {key: shape} differs from an expected layout."""

    missing: list[str]
    unexpected: list[str]
    wrong_shape: list[tuple[str, tuple[int, ...], tuple[int, ...]]]  # (key, expected, found)

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.wrong_shape)

    def summary(self) -> str:
        parts = []
        if self.missing:
            parts.append(f"missing {len(self.missing)} ({_fmt_groups(self.missing)}): "
                         f"{_examples(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected {len(self.unexpected)} ({_fmt_groups(self.unexpected)}): "
                         f"{_examples(self.unexpected)}")
        if self.wrong_shape:
            shown = ", ".join(f"{k} expected {tuple(e)} found {tuple(f)}" for k, e, f in self.wrong_shape[:SHOW])
            parts.append(f"wrong shape {len(self.wrong_shape)}: {shown}")
        return "; ".join(parts)


def compare_layout(shapes: Shapes, expected: Shapes) -> LayoutDiff:
    missing = [k for k in expected if k not in shapes]
    unexpected = [k for k in shapes if k not in expected]
    wrong = [(k, tuple(expected[k]), tuple(shapes[k])) for k in expected
             if k in shapes and tuple(shapes[k]) != tuple(expected[k])]
    return LayoutDiff(missing, unexpected, wrong)
