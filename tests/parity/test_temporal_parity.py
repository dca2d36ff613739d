"""Temporal sources vs an independent statement of their semantics on the independent implementation.

The reference (tests/parity/reference_impl.py: diffusers UNets, the official forward) renders the frames one at a
time, in order; at each self-attention site of the conditional pass a processor records the frame's attn1 input
(its post-norm1 states) and attends over [own, reference bank, recorded states of its anchor frames] with a
log(strength) bias on the anchor keys. Ours: MagicPose Apply's patch + temporal sources inside ComfyUI's sampler,
all frames in one sampling run, in step-major chunks of 2 (so anchors are read both inside a call and from the
states an earlier chunk recorded). Compared: the conditional eps of every frame at one timestep.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from support.figures import record
from support.magicpose_env import comfy_models, conditioning, factory_parts, pose_maps, reference_latent, text_context

from magicpose_core.model.constants import LATENT_SCALE_FACTOR

pytestmark = [pytest.mark.comfy]

SIZE, FRAMES, T = 64, 3, 501


def anchors_of(frame: int, mode: str) -> list[int]:
    """The documented anchor choice, stated here independently of magicpose_core.model.temporal: frame 0 has no
    anchor; otherwise "first" reads frame 0, "previous" frame f-1, "both" the two, each frame at most once."""
    if frame == 0:
        return []
    wanted = {"first": [0], "previous": [frame - 1], "both": [0, frame - 1]}[mode]
    return sorted(set(wanted))


class TemporalReadProcessor:
    """attn1 of the main UNet: bank read (as the official read) plus the recorded anchor states, one frame at a time."""

    def __init__(self, store: dict, index: int, temporal: dict):
        self.store, self.index, self.temporal = store, index, temporal

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        b, n, _ = hidden_states.shape
        kv, bias = hidden_states, None
        if self.store.get("read"):
            tm = self.temporal
            tm["states"][(tm["frame"], self.index)] = hidden_states
            anchors = [tm["states"][(a, self.index)] for a in anchors_of(tm["frame"], tm["mode"])]
            ref = self.store["bank"][self.index]
            kv = torch.cat([hidden_states, ref, *anchors], dim=1)  # (1, N + N_ref + A*N, C)
            bias = torch.zeros((1, 1, 1, kv.shape[1]), dtype=kv.dtype)
            bias[..., n + ref.shape[1]:] = math.log(tm["strength"])
            self.store.setdefault("reads", set()).add(self.index)
        q, k, v = attn.to_q(hidden_states), attn.to_k(kv), attn.to_v(kv)
        h = attn.heads
        q, k, v = (t.view(b, -1, h, t.shape[-1] // h).transpose(1, 2) for t in (q, k, v))  # (B, h, N, d)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias).transpose(1, 2).reshape(b, n, -1)
        return attn.to_out[1](attn.to_out[0](out))


@pytest.mark.parametrize("mode", ["both"])
def test_cond_eps_matches_frames_rendered_one_by_one(pack, factory_files, mode):
    import comfy.sample
    from parity.reference_impl import OfficialMagicPose, _attn1_names

    path = factory_files["magicpose"]
    unet, mp = comfy_models(pack, path)
    parts = factory_parts(str(path))
    official = OfficialMagicPose(parts.unet, parts.appearance, parts.pose_controlnet)
    strength = 0.7
    tm = {"states": {}, "frame": 0, "mode": mode, "strength": strength}
    for i, name in enumerate(_attn1_names(official.unet)):
        official.unet.get_submodule(name).set_processor(TemporalReadProcessor(official.store, i, tm))

    ctx, poses, z_raw = text_context(0), pose_maps(FRAMES, SIZE), reference_latent(SIZE)
    z_ref = z_raw * LATENT_SCALE_FACTOR
    g = torch.Generator().manual_seed(12)
    z0 = torch.randn((FRAMES, 4, SIZE // 8, SIZE // 8), generator=g)
    noise = torch.randn((FRAMES, 4, SIZE // 8, SIZE // 8), generator=g)
    ms = unet.get_model_object("model_sampling")
    sigma = float(ms.sigmas[T])
    x_t = (z0 + sigma * noise) / math.sqrt(1 + sigma ** 2)     # = sqrt(a) z0 + sqrt(1 - a) n

    theirs = []
    for f in range(FRAMES):
        tm["frame"] = f
        e_c, _ = official.eps(x_t[f:f + 1], T, ctx, z_ref, poses[f:f + 1].movedim(-1, 1))
        theirs.append(e_c)
    theirs = torch.cat(theirs)

    P, Tm = pack.nodes.patch.model_patch, pack.nodes.patch.temporal_sources
    captured = []

    def capture(args):
        captured.append((args["cond"] / args["sigma"].view(-1, 1, 1, 1)).clone())
        return args["uncond"] + (args["cond"] - args["uncond"]) * args["cond_scale"]

    base = unet.clone()
    base.set_model_sampler_cfg_function(capture)
    ref = pack.magicpose_core.model.reference.MagicPoseReference.from_latent(z_raw)
    m = P.apply_magicpose(base, mp, ref, P.MagicPoseOptions(strict_sites=True, frame_batch=2))
    options = pack.magicpose_core.model.temporal.TemporalOptions(mode, strength)
    m = Tm.add_temporal_sources(m, options, strict_sites=True)
    pos = P.attach_pose_control(conditioning(ctx), mp.pose_controlnet, poses)
    x_k = x_t * math.sqrt(1 + sigma ** 2)
    comfy.sample.sample(m, x_k / sigma, 1, 7.0, "euler", "simple", pos, conditioning(ctx), torch.zeros_like(x_k),
                        sigmas=torch.tensor([sigma, 0.0]), disable_pbar=True)
    (ours,) = captured
    rel = float((ours - theirs).abs().max()) / float(theirs.abs().max())
    record(f"temporal parity '{mode}': cond eps, 3 frames in chunks of 2 vs one-by-one reference, / max|eps|",
           f"{rel:.2e}")
    assert rel <= 1e-5
    plain_c = []
    for f in range(FRAMES):  # guard: the anchors matter (strength 0 would give the plain bank read)
        tm["frame"], tm["strength"] = f, 1e-30
        plain_c.append(official.eps(x_t[f:f + 1], T, ctx, z_ref, poses[f:f + 1].movedim(-1, 1))[0])
    assert float((torch.cat(plain_c)[1:] - theirs[1:]).abs().max()) > 1e-3 * float(theirs.abs().max())
