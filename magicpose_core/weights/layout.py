"""The exact tensor layout of the official MagicPose checkpoint, as data: {key: shape} for every network.

`model_state-110000.th` (HF `Boese0601/MagicDance`) is `ControlLDMReferenceOnlyPose.state_dict()` of
MagicPose (ICML 2024, arXiv 2311.12052; official code Boese0601/MagicDance@a515a1f,
model_lib/ControlNet/cldm/cldm.py and ldm/models/diffusion/ddpm.py). Its key groups
(docs/method.md §11.2):

| prefix                                      | tensors (real SD1.5 widths) |
|---------------------------------------------|-----------------------------|
| 13 DDPM schedule buffers                    | 13                          |
| `model.diffusion_model.` (ldm SD1.5 UNet)   | 686                         |
| `appearance_control_model.` (ACM)           | 698 = 682 UNet (no `out.*`) + 16 unused `input_hint_block` |
| `pose_control_model.` (ldm ControlNet 1.1)  | 340                         |
| `first_stage_model.` (ldm AutoencoderKL)    | 248                         |
| `cond_stage_model.transformer.text_model.`  | 197 (HF CLIPTextModel ViT-L/14, incl. `embeddings.position_ids`) |

Key names and shapes follow the ldm / ControlNet 1.1 module definitions (the same names ComfyUI's
`UNetModel`, `cldm.ControlNet`, `AutoencoderKL` and HF `CLIPTextModel` use); a test instantiates ComfyUI's
classes on the meta device and compares. Widths are parameters so that the tiny test checkpoints (real block
layout, shrunk widths) are described by the same code. No ComfyUI import here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

Shape = tuple[int, ...]
Layout = dict[str, Shape]

# Top-level prefixes of the official file (docs/method.md §11.2).
MAIN_PREFIX = "model.diffusion_model."
ACM_PREFIX = "appearance_control_model."
POSE_PREFIX = "pose_control_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer.text_model."
CONTROL_PREFIX = "control_model."  # ControlNet 1.1 .pth / ComfyUI ControlNet loader layout
POSITION_IDS = "embeddings.position_ids"  # int64 buffer of HF CLIPTextModel, (1, 77)

# ldm DDPM buffers registered by `register_schedule` (+ `logvar`); `lvlb_weights` is not persistent.
DDPM_BUFFERS = (
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
    "logvar",
)
NUM_TIMESTEPS = 1000

# ControlNet 1.1 hint embedding: 8 convs 3->16->16->32->32->96->96->256->model_channels (cldm.py, docs/method.md §5.1),
# at the even indices of `input_hint_block` (SiLU between them).
HINT_WIDTHS = (16, 16, 32, 32, 96, 96, 256)

# HF CLIPTextModel ViT-L/14 (openai/clip-vit-large-patch14 text config).
CLIP_VOCAB = 49408
CLIP_POSITIONS = 77
CLIP_WIDTH = 768
CLIP_LAYERS = 12
CLIP_MLP = 3072

# ldm AutoencoderKL (SD1.5 VAE): ch_mult (1, 2, 4, 4), 2 res blocks, z 4 (double_z), encoder width 128.
VAE_MULT = (1, 2, 4, 4)
VAE_RES_BLOCKS = 2
VAE_Z = 4
VAE_ENCODER_WIDTH = 128


@dataclass(frozen=True)
class UNetConfig:
    """Shape parameters of an ldm SD1.5-family UNet / ControlNet (defaults: real SD1.5)."""

    model_channels: int = 320
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attention_levels: tuple[int, ...] = (0, 1, 2)  # levels with a SpatialTransformer (depth 1, 8 heads)
    context_dim: int = 768
    in_channels: int = 4
    out_channels: int = 4
    hint_channels: int = 3

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.model_channels


SD15_UNET = UNetConfig()


# --------------------------------------------------------------------------------------------------
# building blocks


def _resblock(p: str, cin: int, cout: int, emb: int) -> Layout:
    """ldm ResBlock: GroupNorm-SiLU-conv, time projection, GroupNorm-SiLU-(dropout)-conv, 1x1 skip if widths differ."""
    d: Layout = {
        p + "in_layers.0.weight": (cin,), p + "in_layers.0.bias": (cin,),
        p + "in_layers.2.weight": (cout, cin, 3, 3), p + "in_layers.2.bias": (cout,),
        p + "emb_layers.1.weight": (cout, emb), p + "emb_layers.1.bias": (cout,),
        p + "out_layers.0.weight": (cout,), p + "out_layers.0.bias": (cout,),
        p + "out_layers.3.weight": (cout, cout, 3, 3), p + "out_layers.3.bias": (cout,),
    }
    if cin != cout:
        d[p + "skip_connection.weight"] = (cout, cin, 1, 1)
        d[p + "skip_connection.bias"] = (cout,)
    return d


def _transformer(p: str, c: int, context: int) -> Layout:
    """ldm SpatialTransformer, depth 1, conv (non-linear) proj_in/proj_out as in SD1.5; heads x dim_head = c."""
    b = p + "transformer_blocks.0."
    d: Layout = {p + "norm.weight": (c,), p + "norm.bias": (c,),
                 p + "proj_in.weight": (c, c, 1, 1), p + "proj_in.bias": (c,)}
    d.update({b + "attn1.to_q.weight": (c, c), b + "attn1.to_k.weight": (c, c), b + "attn1.to_v.weight": (c, c),
              b + "attn1.to_out.0.weight": (c, c), b + "attn1.to_out.0.bias": (c,)})
    # GEGLU: proj to 2 x inner (inner = 4c), then inner -> c
    d.update({b + "ff.net.0.proj.weight": (8 * c, c), b + "ff.net.0.proj.bias": (8 * c,),
              b + "ff.net.2.weight": (c, 4 * c), b + "ff.net.2.bias": (c,)})
    d.update({b + "attn2.to_q.weight": (c, c), b + "attn2.to_k.weight": (c, context),
              b + "attn2.to_v.weight": (c, context), b + "attn2.to_out.0.weight": (c, c),
              b + "attn2.to_out.0.bias": (c,)})
    for n in ("norm1", "norm2", "norm3"):
        d[b + n + ".weight"] = (c,)
        d[b + n + ".bias"] = (c,)
    d[p + "proj_out.weight"] = (c, c, 1, 1)
    d[p + "proj_out.bias"] = (c,)
    return d


def _conv(p: str, cout: int, cin: int, k: int) -> Layout:
    return {p + "weight": (cout, cin, k, k), p + "bias": (cout,)}


def _time_embed(cfg: UNetConfig) -> Layout:
    e, mc = cfg.time_embed_dim, cfg.model_channels
    return {"time_embed.0.weight": (e, mc), "time_embed.0.bias": (e,),
            "time_embed.2.weight": (e, e), "time_embed.2.bias": (e,)}


def _encoder(cfg: UNetConfig) -> tuple[Layout, list[int], int]:
    """`input_blocks` + `middle_block`; returns the layout, the skip widths (one per input block) and the
    bottleneck width."""
    mc, emb, ctx = cfg.model_channels, cfg.time_embed_dim, cfg.context_dim
    d: Layout = _conv("input_blocks.0.0.", mc, cfg.in_channels, 3)
    skips, ch, n = [mc], mc, 1
    for level, mult in enumerate(cfg.channel_mult):
        for _ in range(cfg.num_res_blocks):
            d.update(_resblock(f"input_blocks.{n}.0.", ch, mc * mult, emb))
            ch = mc * mult
            if level in cfg.attention_levels:
                d.update(_transformer(f"input_blocks.{n}.1.", ch, ctx))
            skips.append(ch)
            n += 1
        if level != len(cfg.channel_mult) - 1:
            d.update(_conv(f"input_blocks.{n}.0.op.", ch, ch, 3))  # stride-2 Downsample
            skips.append(ch)
            n += 1
    d.update(_resblock("middle_block.0.", ch, ch, emb))
    d.update(_transformer("middle_block.1.", ch, ctx))
    d.update(_resblock("middle_block.2.", ch, ch, emb))
    return d, skips, ch


def _decoder(cfg: UNetConfig, skips: list[int], ch: int) -> tuple[Layout, int]:
    """`output_blocks`: each ResBlock takes cat(h, skip) (so its input width differs and it has a skip conv)."""
    mc, emb, ctx = cfg.model_channels, cfg.time_embed_dim, cfg.context_dim
    skips = list(skips)
    d: Layout = {}
    n = 0
    for level in reversed(range(len(cfg.channel_mult))):
        for i in range(cfg.num_res_blocks + 1):
            cin = ch + skips.pop()  # (B, ch, H, W) ++ (B, skip, H, W)
            ch = mc * cfg.channel_mult[level]
            d.update(_resblock(f"output_blocks.{n}.0.", cin, ch, emb))
            k = 1
            if level in cfg.attention_levels:
                d.update(_transformer(f"output_blocks.{n}.1.", ch, ctx))
                k = 2
            if level != 0 and i == cfg.num_res_blocks:
                d.update(_conv(f"output_blocks.{n}.{k}.conv.", ch, ch, 3))  # nearest x2 Upsample + conv
            n += 1
    return d, ch


# --------------------------------------------------------------------------------------------------
# networks (keys without the checkpoint prefix)


def unet_layout(cfg: UNetConfig = SD15_UNET, with_out: bool = True) -> Layout:
    """The ldm SD1.5 UNet (`model.diffusion_model.` without its prefix); 686 tensors for real SD1.5."""
    enc, skips, ch = _encoder(cfg)
    dec, ch = _decoder(cfg, skips, ch)
    d = {**_time_embed(cfg), **enc, **dec}
    if with_out:
        d["out.0.weight"] = (ch,)
        d["out.0.bias"] = (ch,)
        d.update(_conv("out.2.", cfg.out_channels, ch, 3))
    return d


def hint_block_layout(cfg: UNetConfig = SD15_UNET) -> Layout:
    """ControlNet 1.1 `input_hint_block` (16 tensors at indices 0, 2, ..., 14)."""
    widths = (cfg.hint_channels, *HINT_WIDTHS, cfg.model_channels)
    d: Layout = {}
    for i in range(len(widths) - 1):
        d.update(_conv(f"input_hint_block.{2 * i}.", widths[i + 1], widths[i], 3))
    return d


def appearance_layout(cfg: UNetConfig = SD15_UNET, with_hint_block: bool = True) -> Layout:
    """The ACM as stored in the official file: the UNet without `out.*` (+ its unused `input_hint_block`).
    682 tensors without the hint block, 698 with it, for real SD1.5."""
    d = unet_layout(cfg, with_out=False)
    if with_hint_block:
        d.update(hint_block_layout(cfg))
    return d


def controlnet_layout(cfg: UNetConfig = SD15_UNET) -> Layout:
    """ldm ControlNet 1.1: time_embed, input_hint_block, input_blocks, zero_convs, middle_block,
    middle_block_out; 340 tensors for real SD1.5."""
    enc, skips, ch = _encoder(cfg)
    d = {**_time_embed(cfg), **hint_block_layout(cfg), **enc}
    for i, c in enumerate(skips):
        d.update(_conv(f"zero_convs.{i}.0.", c, c, 1))
    d.update(_conv("middle_block_out.0.", ch, ch, 1))
    return d


def _vae_resnet(p: str, cin: int, cout: int) -> Layout:
    d: Layout = {p + "norm1.weight": (cin,), p + "norm1.bias": (cin,), **_conv(p + "conv1.", cout, cin, 3),
                 p + "norm2.weight": (cout,), p + "norm2.bias": (cout,), **_conv(p + "conv2.", cout, cout, 3)}
    if cin != cout:
        d.update(_conv(p + "nin_shortcut.", cout, cin, 1))
    return d


def _vae_mid(p: str, c: int) -> Layout:
    d = _vae_resnet(p + "block_1.", c, c)
    d.update({p + "attn_1.norm.weight": (c,), p + "attn_1.norm.bias": (c,)})
    for n in ("q", "k", "v", "proj_out"):  # 1x1 convs in the ldm AttnBlock
        d.update(_conv(f"{p}attn_1.{n}.", c, c, 1))
    d.update(_vae_resnet(p + "block_2.", c, c))
    return d


def vae_layout(decoder_channels: int = VAE_ENCODER_WIDTH) -> Layout:
    """ldm AutoencoderKL (`first_stage_model.` without its prefix); 248 tensors. The decoder width is
    configurable (real 128; ComfyUI reads it as `decoder.conv_in.weight.shape[0] // 4`, minimum 32)."""
    d: Layout = _conv("encoder.conv_in.", VAE_ENCODER_WIDTH, 3, 3)
    cin = VAE_ENCODER_WIDTH
    for i, m in enumerate(VAE_MULT):
        for j in range(VAE_RES_BLOCKS):
            d.update(_vae_resnet(f"encoder.down.{i}.block.{j}.", cin, VAE_ENCODER_WIDTH * m))
            cin = VAE_ENCODER_WIDTH * m
        if i != len(VAE_MULT) - 1:
            d.update(_conv(f"encoder.down.{i}.downsample.conv.", cin, cin, 3))
    d.update(_vae_mid("encoder.mid.", cin))
    d.update({"encoder.norm_out.weight": (cin,), "encoder.norm_out.bias": (cin,)})
    d.update(_conv("encoder.conv_out.", 2 * VAE_Z, cin, 3))  # double_z: mean and logvar

    cin = decoder_channels * VAE_MULT[-1]
    d.update(_conv("decoder.conv_in.", cin, VAE_Z, 3))
    d.update(_vae_mid("decoder.mid.", cin))
    for i in reversed(range(len(VAE_MULT))):
        for j in range(VAE_RES_BLOCKS + 1):
            d.update(_vae_resnet(f"decoder.up.{i}.block.{j}.", cin, decoder_channels * VAE_MULT[i]))
            cin = decoder_channels * VAE_MULT[i]
        if i != 0:
            d.update(_conv(f"decoder.up.{i}.upsample.conv.", cin, cin, 3))
    d.update({"decoder.norm_out.weight": (cin,), "decoder.norm_out.bias": (cin,)})
    d.update(_conv("decoder.conv_out.", 3, cin, 3))
    d.update(_conv("quant_conv.", 2 * VAE_Z, 2 * VAE_Z, 1))
    d.update(_conv("post_quant_conv.", VAE_Z, VAE_Z, 1))
    return d


def clip_layout(with_position_ids: bool = True) -> Layout:
    """HF CLIPTextModel ViT-L/14 under `cond_stage_model.transformer.text_model.`; 197 tensors with
    `embeddings.position_ids` (int64), 196 without."""
    w, m = CLIP_WIDTH, CLIP_MLP
    d: Layout = {"embeddings.token_embedding.weight": (CLIP_VOCAB, w),
                 "embeddings.position_embedding.weight": (CLIP_POSITIONS, w)}
    if with_position_ids:
        d[POSITION_IDS] = (1, CLIP_POSITIONS)
    for i in range(CLIP_LAYERS):
        p = f"encoder.layers.{i}."
        for n in ("k_proj", "v_proj", "q_proj", "out_proj"):
            d[f"{p}self_attn.{n}.weight"] = (w, w)
            d[f"{p}self_attn.{n}.bias"] = (w,)
        d.update({p + "layer_norm1.weight": (w,), p + "layer_norm1.bias": (w,),
                  p + "mlp.fc1.weight": (m, w), p + "mlp.fc1.bias": (m,),
                  p + "mlp.fc2.weight": (w, m), p + "mlp.fc2.bias": (w,),
                  p + "layer_norm2.weight": (w,), p + "layer_norm2.bias": (w,)})
    d.update({"final_layer_norm.weight": (w,), "final_layer_norm.bias": (w,)})
    return d


def ddpm_layout() -> Layout:
    """The 13 DDPM schedule buffers, each (1000,)."""
    return {name: (NUM_TIMESTEPS,) for name in DDPM_BUFFERS}


# --------------------------------------------------------------------------------------------------
# whole files


def prefixed(prefix: str, layout: Mapping[str, Shape]) -> Layout:
    return {prefix + k: v for k, v in layout.items()}


def official_layout(unet: UNetConfig = SD15_UNET, vae_decoder_channels: int = VAE_ENCODER_WIDTH) -> Layout:
    """Every key of `model_state-110000.th` (2182 for real SD1.5 widths), in state_dict order."""
    return {
        **ddpm_layout(),
        **prefixed(MAIN_PREFIX, unet_layout(unet)),
        **prefixed(VAE_PREFIX, vae_layout(vae_decoder_channels)),
        **prefixed(CLIP_PREFIX, clip_layout(with_position_ids=True)),
        **prefixed(ACM_PREFIX, appearance_layout(unet, with_hint_block=True)),
        **prefixed(POSE_PREFIX, controlnet_layout(unet)),
    }


def sd15_checkpoint_layout(unet: UNetConfig = SD15_UNET, vae_decoder_channels: int = VAE_ENCODER_WIDTH) -> Layout:
    """An ordinary SD1.5 checkpoint (what CheckpointLoaderSimple loads); `position_ids` dropped."""
    return {
        **prefixed(MAIN_PREFIX, unet_layout(unet)),
        **prefixed(VAE_PREFIX, vae_layout(vae_decoder_channels)),
        **prefixed(CLIP_PREFIX, clip_layout(with_position_ids=False)),
    }


def is_integer_key(key: str) -> bool:
    """Keys stored as int64 (everything else in the official file is fp32)."""
    return key.endswith(POSITION_IDS)


def count_params(layout: Mapping[str, Sequence[int]]) -> int:
    return sum(math.prod(s) for s in layout.values())


# --------------------------------------------------------------------------------------------------
# reading the widths back from a state dict


def infer_unet_config(shapes: Mapping[str, Sequence[int]], prefix: str = "") -> UNetConfig | None:
    """model_channels from `input_blocks.0.0.weight` and each level's channel_mult from its first ResBlock
    (SD1.5 block layout assumed: 4 levels, 2 res blocks); None when those keys are absent or inconsistent."""
    w = shapes.get(prefix + "input_blocks.0.0.weight")
    if w is None or len(w) != 4 or w[0] <= 0:
        return None
    mc = int(w[0])
    mults = []
    for level in range(len(SD15_UNET.channel_mult)):
        s = shapes.get(f"{prefix}input_blocks.{level * (SD15_UNET.num_res_blocks + 1) + 1}.0.out_layers.3.weight")
        if s is None or len(s) != 4 or s[0] % mc:
            return None
        mults.append(int(s[0]) // mc)
    return UNetConfig(model_channels=mc, channel_mult=tuple(mults))


def infer_vae_decoder_channels(shapes: Mapping[str, Sequence[int]], prefix: str = "") -> int | None:
    """VAE decoder width = `decoder.conv_in.weight.shape[0] // ch_mult[-1]` (as ComfyUI reads it)."""
    s = shapes.get(prefix + "decoder.conv_in.weight")
    if s is None or len(s) != 4 or s[0] % VAE_MULT[-1]:
        return None
    return int(s[0]) // VAE_MULT[-1]
