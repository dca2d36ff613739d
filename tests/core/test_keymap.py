"""ldm <-> diffusers key maps: exact round trips, the docs/method.md §11.4 table, and diffusers' own
module names and shapes (UNet2DConditionModel / ControlNetModel built on the meta device)."""
import pytest
import torch
from support import factories

from magicpose_core.weights import keymap
from magicpose_core.weights import layout as L

CONFIGS = {"sd15": L.SD15_UNET, "tiny": factories.TINY_UNET}
NETS = {
    "unet": lambda c: L.unet_layout(c),
    "acm": lambda c: L.appearance_layout(c, with_hint_block=False),
    "controlnet": lambda c: L.controlnet_layout(c),
}


@pytest.mark.parametrize("cfg", CONFIGS.values(), ids=CONFIGS.keys())
@pytest.mark.parametrize("net", NETS.keys())
def test_round_trip_is_exact(net, cfg):
    ldm = NETS[net](cfg)
    dif = factories.ldm_to_diffusers(ldm)
    assert len(dif) == len(ldm)                                   # no two keys collapse
    assert keymap.diffusers_to_ldm(dif) == ldm                    # same keys, same order, same shapes
    assert factories.ldm_to_diffusers(keymap.diffusers_to_ldm(dif)) == dif
    assert keymap.is_diffusers_unet(dif) and not keymap.is_diffusers_unet(ldm)


def test_acm_has_no_output_head_in_diffusers_naming():
    dif = factories.ldm_to_diffusers(L.appearance_layout(with_hint_block=False))
    assert not any(k.startswith(("conv_norm_out.", "conv_out.")) for k in dif)
    assert len(dif) == 682


# Facts from docs/method.md §11.4 (and the diffusers column of the §3.3 site table).
TABLE = {
    "time_embed.0.weight": "time_embedding.linear_1.weight",
    "time_embed.2.bias": "time_embedding.linear_2.bias",
    "input_blocks.0.0.weight": "conv_in.weight",
    "input_blocks.1.0.in_layers.0.weight": "down_blocks.0.resnets.0.norm1.weight",
    "input_blocks.2.0.in_layers.2.bias": "down_blocks.0.resnets.1.conv1.bias",
    "input_blocks.4.0.skip_connection.weight": "down_blocks.1.resnets.0.conv_shortcut.weight",
    "input_blocks.5.0.emb_layers.1.weight": "down_blocks.1.resnets.1.time_emb_proj.weight",
    "input_blocks.7.1.proj_in.weight": "down_blocks.2.attentions.0.proj_in.weight",
    "input_blocks.3.0.op.weight": "down_blocks.0.downsamplers.0.conv.weight",
    "input_blocks.9.0.op.bias": "down_blocks.2.downsamplers.0.conv.bias",
    "input_blocks.11.0.out_layers.3.weight": "down_blocks.3.resnets.1.conv2.weight",
    "middle_block.0.out_layers.0.bias": "mid_block.resnets.0.norm2.bias",
    "middle_block.1.transformer_blocks.0.attn1.to_q.weight":
        "mid_block.attentions.0.transformer_blocks.0.attn1.to_q.weight",
    "middle_block.2.in_layers.0.weight": "mid_block.resnets.1.norm1.weight",
    "output_blocks.0.0.skip_connection.bias": "up_blocks.0.resnets.0.conv_shortcut.bias",
    "output_blocks.2.1.conv.weight": "up_blocks.0.upsamplers.0.conv.weight",
    "output_blocks.5.2.conv.bias": "up_blocks.1.upsamplers.0.conv.bias",
    "output_blocks.8.2.conv.weight": "up_blocks.2.upsamplers.0.conv.weight",
    "output_blocks.11.1.transformer_blocks.0.norm1.weight":
        "up_blocks.3.attentions.2.transformer_blocks.0.norm1.weight",
    "output_blocks.6.1.transformer_blocks.0.ff.net.0.proj.weight":
        "up_blocks.2.attentions.0.transformer_blocks.0.ff.net.0.proj.weight",
    "out.0.weight": "conv_norm_out.weight",
    "out.2.bias": "conv_out.bias",
    "input_hint_block.0.weight": "controlnet_cond_embedding.conv_in.weight",
    "input_hint_block.2.bias": "controlnet_cond_embedding.blocks.0.bias",
    "input_hint_block.12.weight": "controlnet_cond_embedding.blocks.5.weight",
    "input_hint_block.14.weight": "controlnet_cond_embedding.conv_out.weight",
    "zero_convs.0.0.weight": "controlnet_down_blocks.0.weight",
    "zero_convs.11.0.bias": "controlnet_down_blocks.11.bias",
    "middle_block_out.0.weight": "controlnet_mid_block.weight",
}

# docs/method.md §3.3: ldm block of each bank site -> diffusers module.
SITES = {
    "input_blocks.1.1": "down_blocks.0.attentions.0", "input_blocks.2.1": "down_blocks.0.attentions.1",
    "input_blocks.4.1": "down_blocks.1.attentions.0", "input_blocks.5.1": "down_blocks.1.attentions.1",
    "input_blocks.7.1": "down_blocks.2.attentions.0", "input_blocks.8.1": "down_blocks.2.attentions.1",
    "middle_block.1": "mid_block.attentions.0",
    "output_blocks.3.1": "up_blocks.1.attentions.0", "output_blocks.4.1": "up_blocks.1.attentions.1",
    "output_blocks.5.1": "up_blocks.1.attentions.2", "output_blocks.6.1": "up_blocks.2.attentions.0",
    "output_blocks.7.1": "up_blocks.2.attentions.1", "output_blocks.8.1": "up_blocks.2.attentions.2",
    "output_blocks.9.1": "up_blocks.3.attentions.0", "output_blocks.10.1": "up_blocks.3.attentions.1",
    "output_blocks.11.1": "up_blocks.3.attentions.2",
}


@pytest.mark.parametrize("ldm,dif", TABLE.items())
def test_table_entries(ldm, dif):
    assert factories.ldm_to_diffusers_key(ldm) == dif
    assert keymap.diffusers_to_ldm_key(dif) == ldm


def test_the_16_attention_sites():
    suffix = ".transformer_blocks.0.attn1.to_k.weight"
    ldm = L.unet_layout()
    for block, module in SITES.items():
        assert block + suffix in ldm
        assert factories.ldm_to_diffusers_key(block + suffix) == module + suffix


@pytest.mark.parametrize("key", ["label_emb.0.0.weight", "input_blocks.1.2.weight", "middle_block.3.foo.weight",
                                 "output_blocks.0.0.in_layers.1.weight", "input_hint_block.1.weight",
                                 "first_stage_model.encoder.conv_in.weight"])
def test_unknown_ldm_keys_raise(key):
    with pytest.raises(keymap.KeyMapError, match="not an SD1.5"):
        factories.ldm_to_diffusers_key(key)


def test_unknown_diffusers_keys_are_listed():
    sd = {"conv_in.weight": 0, "add_embedding.linear_1.weight": 0, "down_blocks.0.resnets.0.norm1.weight": 0}
    with pytest.raises(keymap.KeyMapError, match="add_embedding.linear_1.weight"):
        keymap.diffusers_to_ldm(sd)


def _meta_state(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("cfg", CONFIGS.values(), ids=CONFIGS.keys())
def test_matches_diffusers_modules(cfg):
    """diffusers' own UNet2DConditionModel / ControlNetModel (SD1.5 config) have exactly the mapped names and
    the same shapes: the layout's tensors need renaming only."""
    diffusers = pytest.importorskip("diffusers")
    widths = tuple(cfg.model_channels * m for m in cfg.channel_mult)
    with torch.device("meta"):
        unet = diffusers.UNet2DConditionModel(block_out_channels=widths, cross_attention_dim=768,
                                              attention_head_dim=8, sample_size=64)
        cnet = diffusers.ControlNetModel(block_out_channels=widths, cross_attention_dim=768, attention_head_dim=8)
    assert factories.ldm_to_diffusers(L.unet_layout(cfg)) == _meta_state(unet)        # dict ==: keys and shapes
    assert factories.ldm_to_diffusers(L.controlnet_layout(cfg)) == _meta_state(cnet)
