"""magicpose_core.weights.layout / keymap against ComfyUI's own classes, and the factory files against ComfyUI's
model detection and loaders.

ComfyUI's UNetModel, cldm ControlNet, AutoencoderKL and SD1ClipModel are built on the meta device (no
memory), so the comparison covers the real SD1.5 widths as well as the tiny test layout.
"""
import logging

import pytest
import torch
from safetensors.torch import load_file
from support import factories

from magicpose_core.weights import keymap
from magicpose_core.weights import layout as L
from magicpose_core.weights.convert import convert, split_official
from magicpose_core.weights.validate import load_official

pytestmark = pytest.mark.comfy

CONFIGS = {"sd15": L.SD15_UNET, "tiny": factories.TINY_UNET}


def sd15_unet_config(cfg: L.UNetConfig) -> dict:
    """ComfyUI's SD1.5 unet_config (comfy/model_detection.py, `SD15`), with the layout's widths."""
    return {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
            "legacy": False, "adm_in_channels": None, "dtype": torch.float32, "in_channels": 4,
            "model_channels": cfg.model_channels, "num_res_blocks": [2, 2, 2, 2],
            "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "channel_mult": list(cfg.channel_mult),
            "transformer_depth_middle": 1, "use_linear_in_transformer": False, "context_dim": 768, "num_heads": 8,
            "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
            "use_temporal_attention": False, "use_temporal_resblock": False}


def shapes(module: torch.nn.Module, prefix: str = "") -> dict[str, tuple[int, ...]]:
    return {k[len(prefix):]: tuple(v.shape) for k, v in module.state_dict().items() if k.startswith(prefix)}


def meta_sd(layout: dict) -> dict[str, torch.Tensor]:
    return {k: torch.empty(s, device="meta", dtype=torch.int64 if L.is_integer_key(k) else torch.float32)
            for k, s in layout.items()}


@pytest.mark.parametrize("cfg", CONFIGS.values(), ids=CONFIGS.keys())
def test_unet_layout_is_comfyui_unet(comfy, cfg):
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    unet = UNetModel(**sd15_unet_config(cfg), device="meta", operations=comfy.ops.disable_weight_init)
    assert L.unet_layout(cfg) == shapes(unet)
    missing, unexpected = unet.load_state_dict(meta_sd(L.appearance_layout(cfg, with_hint_block=False)),
                                                strict=False, assign=True)
    assert sorted(missing) == ["out.0.bias", "out.0.weight", "out.2.bias", "out.2.weight"] and not unexpected


@pytest.mark.parametrize("cfg", CONFIGS.values(), ids=CONFIGS.keys())
def test_controlnet_layout_is_comfyui_controlnet(comfy, cfg):
    import comfy.ops
    from comfy.cldm.cldm import ControlNet

    conf = {k: v for k, v in sd15_unet_config(cfg).items() if k != "out_channels"}
    cnet = ControlNet(**conf, hint_channels=3, device="meta", operations=comfy.ops.disable_weight_init)
    assert L.controlnet_layout(cfg) == shapes(cnet)


@pytest.mark.parametrize("decoder", [128, 32])
def test_vae_layout_is_comfyui_autoencoder(comfy, decoder):
    from comfy.ldm.models.autoencoder import AutoencoderKL

    dd = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
          "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
    with torch.device("meta"):
        vae = AutoencoderKL(ddconfig=dd, embed_dim=4, decoder_ddconfig={**dd, "ch": decoder})
    assert L.vae_layout(decoder) == shapes(vae)


def test_clip_layout_is_comfyui_clip_l(comfy):
    from comfy.sd1_clip import SD1ClipModel

    clip = SD1ClipModel(device="meta")
    text = shapes(clip, "clip_l.transformer.text_model.")
    assert L.clip_layout(with_position_ids=False) == text
    assert set(shapes(clip)) - {"clip_l.transformer.text_model." + k for k in text} == \
        {"clip_l.transformer.text_projection.weight", "clip_l.logit_scale"}   # not in SD1.5 checkpoints


def test_keymap_agrees_with_comfyui_unet_to_diffusers(comfy):
    import comfy.utils

    for cfg in CONFIGS.values():
        comfy_map = comfy.utils.unet_to_diffusers(sd15_unet_config(cfg))   # diffusers -> ldm
        ldm = L.unet_layout(cfg)
        covered = {k: v for k, v in comfy_map.items() if v in ldm}
        assert len(covered) > 600
        for dif, ldm_key in covered.items():
            assert factories.ldm_to_diffusers_key(ldm_key) == dif, ldm_key
            assert keymap.diffusers_to_ldm_key(dif) == ldm_key, dif


def test_detection_says_sd15(comfy, official_sd):
    import comfy.model_detection
    import comfy.supported_models

    for sd, prefix, mult in ((official_sd, L.MAIN_PREFIX, [1, 1, 1, 1]),
                             (split_official(official_sd).appearance, "", [1, 1, 1, 1]),
                             (meta_sd(L.official_layout()), L.MAIN_PREFIX, [1, 2, 4, 4])):
        config = comfy.model_detection.model_config_from_unet(sd, prefix)
        assert type(config) is comfy.supported_models.SD15
        assert config.unet_config["model_channels"] == 320 and config.unet_config["channel_mult"] == mult
        assert config.unet_config["context_dim"] == 768


@pytest.fixture(scope="module")
def official_sd():
    return load_official(factories.magicpose_checkpoint())


def test_pose_part_builds_a_comfyui_sd15_controlnet(comfy, official_sd, caplog):
    import comfy.controlnet

    pose = split_official(official_sd).pose_controlnet
    with caplog.at_level(logging.WARNING):
        cn = comfy.controlnet.load_controlnet_state_dict(dict(pose))
    assert isinstance(cn, comfy.controlnet.ControlNet)
    assert not [r for r in caplog.records if "missing" in r.getMessage()]
    got = cn.control_model.state_dict()
    assert set(got) == {k[len("control_model."):] for k in pose}
    for k, v in pose.items():
        assert torch.equal(got[k[len("control_model."):]].float(), v.to(got[k[len("control_model."):]].dtype).float())


def _load_checkpoint(path, caplog):
    import comfy.sd

    with caplog.at_level(logging.WARNING):
        model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(str(path), output_vae=True, output_clip=True)
    missing = [r.getMessage() for r in caplog.records if "missing" in r.getMessage().lower()]
    assert not missing, missing[:3]
    return model, clip, vae


def test_sd15_factory_loads_as_sd15_checkpoint(comfy, caplog):
    import comfy.supported_models

    model, clip, vae = _load_checkpoint(factories.sd15_checkpoint(), caplog)
    assert type(model.model.model_config) is comfy.supported_models.SD15
    assert clip is not None and vae is not None
    sd = load_file(factories.sd15_checkpoint())
    w = model.model.diffusion_model.input_blocks[1][1].transformer_blocks[0].attn1.to_k.weight
    key = L.MAIN_PREFIX + "input_blocks.1.1.transformer_blocks.0.attn1.to_k.weight"
    assert torch.equal(w.to(torch.float16).cpu(), sd[key])


def test_converted_sd15_part_loads_as_sd15_checkpoint(comfy, tmp_path, caplog):
    import comfy.supported_models

    paths = convert(factories.magicpose_checkpoint(), tmp_path, dtype="fp16", with_sd15=True)
    try:
        model, clip, vae = _load_checkpoint(paths["sd15"], caplog)
        assert type(model.model.model_config) is comfy.supported_models.SD15
        assert clip is not None and vae is not None
    finally:
        for p in paths.values():
            p.unlink(missing_ok=True)
