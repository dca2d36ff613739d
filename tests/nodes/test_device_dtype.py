"""Device and dtype handling of the patch (the GPU review, checked on the CPU): the bank follows the main UNet's dtype
next to appearance weights of another dtype (float64 UNet, float32 ACM); the weighted-reference bias is built from
a row mask (no boolean indexing, which reads the device back) and equals the per-row definition; rows sharing
(timestep, context) form one group in one comparison; a parked bank waits where ComfyUI offloads models."""
from __future__ import annotations

import math

import pytest
import torch
from support.magicpose_env import (
    AttnProbe,
    comfy_models,
    conditioning,
    factory_parts,
    magicpose_reference,
    pose_maps,
    text_context,
)

pytestmark = [pytest.mark.comfy]


def test_bank_follows_the_unet_dtype_next_to_float32_appearance_weights(pack, factory_files):
    import comfy.sample

    P = pack.nodes.patch.model_patch
    unet, _ = comfy_models(pack, factory_files["magicpose"], torch.float64)
    bundle = pack.nodes.models.build_magicpose_model(factory_parts(str(factory_files["magicpose"])), torch.float32)
    seen = []

    class Probe(AttnProbe):
        def __call__(self, n, context, value, extra_options):
            seen.append((context.dtype, value.dtype, n.dtype, context.shape[1], n.shape[1]))
            return n, context, value

    m = P.apply_magicpose(unet.clone(), bundle, magicpose_reference(pack, 64))
    m.set_model_attn1_patch(Probe())                     # after MagicPose's reader: sees the extended keys
    ctx = text_context(0)
    pos = P.attach_pose_control(conditioning(ctx), bundle.pose_controlnet, pose_maps(1))
    latent = torch.zeros((1, 4, 8, 8))
    noise = comfy.sample.prepare_noise(latent, 3)
    comfy.sample.sample(m, noise, 1, 7.0, "euler", "simple", pos, conditioning(ctx), latent,
                        sigmas=torch.tensor([5.0, 0.0]), disable_pbar=True)
    extended = [s for s in seen if s[3] > s[4]]
    assert len(extended) >= 16
    assert all(s[:3] == (torch.float64,) * 3 for s in extended), extended[:2]


def test_weighted_reference_bias_from_a_row_mask_equals_the_per_row_definition(pack):
    P = pack.nodes.patch.model_patch
    stats = pack.magicpose_core.model.attention_bank.BankStats()
    g = torch.Generator().manual_seed(0)
    heads, b, n, n_ref, d = 2, 2, 6, 6, 8
    q = torch.randn(b, n, heads * d, generator=g, dtype=torch.float64)
    k = torch.randn(b, n + n_ref, heads * d, generator=g, dtype=torch.float64)
    v = torch.randn(b, n + n_ref, heads * d, generator=g, dtype=torch.float64)
    strength = 0.5
    state = P.CallState([], torch.tensor([True, False]), strength, stats)
    out = P.WeightedReferenceAttention()(q, k, v, {"n_heads": heads, P.CALL_KEY: state})

    def split(x):  # (B, N, H*D) -> (B, H, N, D)
        return x.view(b, -1, heads, d).transpose(1, 2)

    logits = split(q) @ split(k).transpose(-1, -2) / math.sqrt(d)        # (B, H, N, N + N_ref)
    logits[0, :, :, n:] += math.log(strength)                             # the conditional row only
    want = (logits.softmax(-1) @ split(v)).transpose(1, 2).reshape(b, n, heads * d)
    assert torch.allclose(out, want, atol=1e-10)
    all_cond = P.CallState([], torch.tensor([True, True]), strength, stats)
    assert all_cond.row_mask(q.device) is None
    assert torch.equal(state.row_mask(q.device), torch.tensor([True, False]))


def test_rows_with_one_timestep_and_context_form_one_group(pack):
    groups = pack.nodes.patch.model_patch._row_groups
    ctx = text_context(0).expand(4, -1, -1).clone()
    assert groups([0, 2, 3], [500.0] * 3, ctx) == [[0, 2, 3]]
    ctx[3] += 1
    assert groups([0, 2, 3], [500.0] * 3, ctx) == [[0, 2], [3]]
    assert groups([0, 1], [500.0, 400.0], ctx) == [[0], [1]]
    assert groups([], [], ctx) == []


def test_parked_bank_waits_where_comfyui_offloads_models(pack):
    import comfy.model_management

    P = pack.nodes.patch.model_patch
    run = P.MagicPoseRun(None, magicpose_reference(pack, 64), P.MagicPoseOptions(park_bank_on_cpu=True))
    assert run.policy().device == comfy.model_management.unet_offload_device()
    assert P.MagicPoseRun(None, magicpose_reference(pack, 64), P.MagicPoseOptions()).policy().device is None
