"""diffusers -> ldm key names for the SD1.5 UNet, the Appearance Control Model and the ControlNet.

MagicPose (ICML 2024, arXiv 2311.12052) stores all three networks in ldm naming
(Boese0601/MagicDance@a515a1f, `model_state-110000.th`); diffusers ports use UNet2DConditionModel /
ControlNetModel naming.

The rules are the standard checkpoint-conversion correspondences tabulated in docs/method.md §11.4,
written here as small regex rules (not derived from diffusers' conversion script):

| ldm                                              | diffusers                                   |
|--------------------------------------------------|---------------------------------------------|
| time_embed.0 / .2                                | time_embedding.linear_1 / linear_2          |
| input_blocks.0.0                                 | conv_in                                     |
| input_blocks.{(L+1)i+j+1}.0 (j < L)              | down_blocks.i.resnets.j                     |
| input_blocks.{(L+1)i+j+1}.1 (j < L)              | down_blocks.i.attentions.j                  |
| input_blocks.{(L+1)i+L+1}.0.op                   | down_blocks.i.downsamplers.0.conv           |
| middle_block.0 / .1 / .2                         | mid_block.resnets.0 / attentions.0 / resnets.1 |
| output_blocks.{(L+1)i+j}.0                       | up_blocks.i.resnets.j                       |
| output_blocks.{(L+1)i+j}.1 (attention levels)    | up_blocks.i.attentions.j                    |
| output_blocks.{(L+1)i+L}.{1,2}.conv              | up_blocks.i.upsamplers.0.conv               |
| out.0 / out.2                                    | conv_norm_out / conv_out                    |
| ResBlock in_layers.0 / .2, emb_layers.1          | norm1 / conv1, time_emb_proj                |
| ResBlock out_layers.0 / .3, skip_connection      | norm2 / conv2, conv_shortcut                |
| ControlNet input_hint_block.0 / .2k (k=1..6) / .14 | controlnet_cond_embedding.conv_in / blocks.{k-1} / conv_out |
| ControlNet zero_convs.i.0 / middle_block_out.0   | controlnet_down_blocks.i / controlnet_mid_block |

L is the number of res blocks per level (2 for SD1.5). SpatialTransformer internals (norm, proj_in,
transformer_blocks.*, proj_out; SD1.5 proj_in/proj_out are 1x1 convs) keep their names, so the tensors are
only renamed, never reshaped. The ACM is the UNet without `out.*` (so without conv_norm_out/conv_out).
The loader needs one direction, diffusers -> ldm (diffusers-layout weights get the official names); the tables are
written ldm -> diffusers, as above, and inverted. The ldm -> diffusers function, which only the tests use (to write
diffusers-layout files; the round trip is exact), lives with them in tests/support/factories.py.
"""
from __future__ import annotations

import re
from typing import Iterable, Mapping, TypeVar

V = TypeVar("V")

LAYERS_PER_BLOCK = 2  # SD1.5 num_res_blocks
NUM_HINT_CONVS = 8    # ControlNet 1.1 input_hint_block convs at indices 0, 2, ..., 14

_RES_TO_DIFFUSERS = {"in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj",
                     "out_layers.0": "norm2", "out_layers.3": "conv2", "skip_connection": "conv_shortcut"}
_RES_TO_LDM = {v: k for k, v in _RES_TO_DIFFUSERS.items()}
_SIMPLE_TO_DIFFUSERS = {"time_embed.0": "time_embedding.linear_1", "time_embed.2": "time_embedding.linear_2",
                        "input_blocks.0.0": "conv_in", "out.0": "conv_norm_out", "out.2": "conv_out",
                        "middle_block_out.0": "controlnet_mid_block",
                        "input_hint_block.0": "controlnet_cond_embedding.conv_in",
                        f"input_hint_block.{2 * (NUM_HINT_CONVS - 1)}": "controlnet_cond_embedding.conv_out"}
_SIMPLE_TO_LDM = {v: k for k, v in _SIMPLE_TO_DIFFUSERS.items()}
_MID = {"0": "resnets.0", "1": "attentions.0", "2": "resnets.1"}
_MID_LDM = {v: k for k, v in _MID.items()}

_PARAM = r"(?P<param>weight|bias)"


class KeyMapError(KeyError):
    """A key that is not part of the SD1.5 UNet / ControlNet layout in the given naming."""

    __module__ = "magicpose_core.weights.keymap"  # ComfyUI shows module + name; the pack's own module name is a path

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0]) if self.args else ""


def _res(rest: str, table: Mapping[str, str], key: str) -> str:
    """Rename a ResBlock sub-module (`in_layers.0.weight` <-> `norm1.weight`)."""
    for a, b in table.items():
        if rest == a or rest.startswith(a + "."):
            return b + rest[len(a):]
    raise KeyMapError(f"{key!r} is not an SD1.5 UNet/ControlNet key (unknown ResBlock parameter {rest!r})")


def _split_simple(key: str, table: Mapping[str, str]) -> str | None:
    for a, b in table.items():
        if key.startswith(a + "."):
            return b + key[len(a):]
    return None


_DIF_DOWN = re.compile(r"down_blocks\.(?P<i>\d+)\.(?P<kind>resnets|attentions|downsamplers)\.(?P<j>\d+)\.(?P<rest>.+)")
_DIF_UP = re.compile(r"up_blocks\.(?P<i>\d+)\.(?P<kind>resnets|attentions|upsamplers)\.(?P<j>\d+)\.(?P<rest>.+)")
_DIF_MID = re.compile(r"mid_block\.(?P<kind>resnets|attentions)\.(?P<j>\d+)\.(?P<rest>.+)")
_DIF_HINT = re.compile(r"controlnet_cond_embedding\.blocks\.(?P<n>\d+)\." + _PARAM)
_DIF_ZERO = re.compile(r"controlnet_down_blocks\.(?P<n>\d+)\." + _PARAM)


def diffusers_to_ldm_key(key: str, layers_per_block: int = LAYERS_PER_BLOCK,
                         up_attention_levels: Iterable[int] = (1, 2, 3)) -> str:
    """One diffusers UNet2DConditionModel / ControlNetModel key -> its ldm name. `up_attention_levels` are the
    up_blocks with attentions (SD1.5: all but up_blocks.0); it decides the Upsample's ldm slot (1 or 2)."""
    per = layers_per_block + 1
    simple = _split_simple(key, _SIMPLE_TO_LDM)
    if simple is not None:
        return simple
    if m := _DIF_DOWN.fullmatch(key):
        i, j, kind, rest = int(m["i"]), int(m["j"]), m["kind"], m["rest"]
        if kind == "resnets" and j < layers_per_block:
            return f"input_blocks.{per * i + j + 1}.0.{_res(rest, _RES_TO_LDM, key)}"
        if kind == "attentions" and j < layers_per_block:
            return f"input_blocks.{per * i + j + 1}.1.{rest}"
        if kind == "downsamplers" and j == 0 and rest.startswith("conv."):
            return f"input_blocks.{per * i + per}.0.op.{rest[5:]}"
    elif m := _DIF_MID.fullmatch(key):
        sub = _MID_LDM.get(f"{m['kind']}.{m['j']}")
        if sub is not None:
            rest = m["rest"] if m["kind"] == "attentions" else _res(m["rest"], _RES_TO_LDM, key)
            return f"middle_block.{sub}.{rest}"
    elif m := _DIF_UP.fullmatch(key):
        i, j, kind, rest = int(m["i"]), int(m["j"]), m["kind"], m["rest"]
        if kind == "resnets" and j < per:
            return f"output_blocks.{per * i + j}.0.{_res(rest, _RES_TO_LDM, key)}"
        if kind == "attentions" and j < per:
            return f"output_blocks.{per * i + j}.1.{rest}"
        if kind == "upsamplers" and j == 0 and rest.startswith("conv."):
            slot = 2 if i in set(up_attention_levels) else 1
            return f"output_blocks.{per * i + layers_per_block}.{slot}.{rest}"
    elif m := _DIF_HINT.fullmatch(key):
        n = int(m["n"])
        if n < NUM_HINT_CONVS - 2:
            return f"input_hint_block.{2 * (n + 1)}.{m['param']}"
    elif m := _DIF_ZERO.fullmatch(key):
        return f"zero_convs.{m['n']}.0.{m['param']}"
    raise KeyMapError(f"{key!r} is not an SD1.5 UNet/ControlNet key in diffusers naming")


def _rename(sd: Mapping[str, V], fn) -> dict[str, V]:
    out: dict[str, V] = {}
    bad: list[str] = []
    for k, v in sd.items():
        try:
            nk = fn(k)
        except KeyMapError:
            bad.append(k)
            continue
        if nk in out:
            raise KeyMapError(f"two keys map to {nk!r}")
        out[nk] = v
    if bad:
        raise KeyMapError(f"{len(bad)} keys are not SD1.5 UNet/ControlNet keys: {', '.join(bad[:5])}")
    return out


def diffusers_to_ldm(sd: Mapping[str, V], layers_per_block: int = LAYERS_PER_BLOCK) -> dict[str, V]:
    """Rename a whole diffusers UNet / ControlNet state dict to ldm naming; the up levels with attention are
    read from the keys themselves."""
    up_attn = {int(m.group(1)) for k in sd if (m := re.match(r"up_blocks\.(\d+)\.attentions\.", k))}
    return _rename(sd, lambda k: diffusers_to_ldm_key(k, layers_per_block, up_attn))


def is_diffusers_unet(keys: Iterable[str]) -> bool:
    """diffusers UNet2DConditionModel / ControlNetModel naming (as opposed to ldm)."""
    ks = set(keys)
    return "conv_in.weight" in ks and any(k.startswith("down_blocks.") for k in ks)
