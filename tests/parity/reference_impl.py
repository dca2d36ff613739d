"""An independent implementation of the official MagicPose forward and DDIM loop, for parity tests.

Built from the same factory weights but not through ComfyUI: diffusers' UNet2DConditionModel (main UNet and
ACM) and ControlNetModel, after the ldm -> diffusers key map (support.factories, the reverse of
magicpose_core.weights.keymap), with MagicPose write and read attention processors (docs/method.md §3.2, §11.4):
- write (ACM): record the attn1 input (= post-norm1 hidden states) of every transformer block;
- read (main UNet, conditional pass): K/V = cat([own, bank]) through the main UNet's to_k / to_v, one softmax,
  no scaling; the unconditional pass is plain SD1.5 with no pose residuals (docs/method.md §7).
The DDIM loop follows the official sampler in DDPM space: x_T = noise, uniform timesteps, eta 0, CFG 7 on eps,
last step to alphas_cumprod[0] (docs/method.md §8.2).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from support.factories import ldm_to_diffusers

from magicpose_core.model.guidance import alphas_cumprod, ddim_uniform_timesteps


def magicpose_cfg(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, scale: float = 7.0) -> torch.Tensor:
    """Image-CFG as the official sampler combines it: uncond is plain SD (no bank, no pose); official scale 7."""
    return eps_uncond + scale * (eps_cond - eps_uncond)


class MagicPoseProcessor:
    """attn1 processor: "write" records its input; "read" attends over [own, bank] when a bank is set."""

    def __init__(self, mode: str, store: dict, index: int):
        self.mode, self.store, self.index = mode, store, index

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        b, n, c = hidden_states.shape
        kv = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if self.mode == "write":
            self.store.setdefault("bank", {})[self.index] = hidden_states
        elif self.mode == "read" and self.store.get("read"):
            ref = self.store["bank"][self.index]
            kv = torch.cat([hidden_states, ref.expand(b, -1, -1)], dim=1)  # (B, N, C) -> (B, N + N_ref, C)
            self.store.setdefault("reads", set()).add(self.index)
        q, k, v = attn.to_q(hidden_states), attn.to_k(kv), attn.to_v(kv)
        h = attn.heads
        q, k, v = (t.view(b, -1, h, t.shape[-1] // h).transpose(1, 2) for t in (q, k, v))  # (B, h, N, d)
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(1, 2).reshape(b, n, -1)  # (B, h, N, d) -> (B, N, h*d)
        return attn.to_out[1](attn.to_out[0](out))


def _unet_config(block_out: tuple[int, ...]) -> dict:
    return dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, cross_attention_dim=768,
                attention_head_dim=8, norm_num_groups=32, block_out_channels=block_out,
                down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)


def _attn1_names(model) -> list[str]:
    """attn1 module names in forward order: down blocks, mid block, up blocks (docs/method.md §3.3)."""
    names = [n for n, _ in model.named_modules() if n.endswith("transformer_blocks.0.attn1")]
    order = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}
    return sorted(names, key=lambda s: (order[s.split(".")[0]], [int(p) for p in s.split(".") if p.isdigit()]))


class OfficialMagicPose:
    """Main UNet + ACM + pose ControlNet, wired as the official ControlLDMReferenceOnlyPose."""

    def __init__(self, unet_ldm, acm_ldm, controlnet_ldm, dtype=torch.float32):
        """Each part: an ldm state dict, or a function returning one (built when loaded, then dropped: the
        benchmark's full-size parts are 3.4 GB each)."""
        from diffusers import ControlNetModel, UNet2DConditionModel

        unet_ldm = unet_ldm() if callable(unet_ldm) else unet_ldm
        mc = unet_ldm["input_blocks.0.0.weight"].shape[0]
        mult = [unet_ldm[f"input_blocks.{i}.0.out_layers.3.weight"].shape[0] // mc for i in (1, 4, 7, 10)]
        block_out = tuple(mc * m for m in mult)
        cfg = _unet_config(block_out)
        self.unet = UNet2DConditionModel(**cfg).to(dtype).eval()
        self.acm = UNet2DConditionModel(**cfg).to(dtype).eval()
        self.cn = ControlNetModel(in_channels=4, conditioning_channels=3, layers_per_block=2,
                                  cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32,
                                  block_out_channels=block_out, down_block_types=cfg["down_block_types"],
                                  conditioning_embedding_out_channels=(16, 32, 96, 256)).to(dtype).eval()
        self._load(self.unet, ldm_to_diffusers(unet_ldm), set())
        del unet_ldm
        acm_ldm = acm_ldm() if callable(acm_ldm) else acm_ldm
        self._load(self.acm, ldm_to_diffusers(acm_ldm), {"conv_norm_out", "conv_out"})
        del acm_ldm
        controlnet_ldm = controlnet_ldm() if callable(controlnet_ldm) else controlnet_ldm
        cn = {k[len("control_model."):] if k.startswith("control_model.") else k: v for k, v in controlnet_ldm.items()}
        del controlnet_ldm
        self._load(self.cn, ldm_to_diffusers(cn), set())
        del cn
        self.store: dict = {}
        for i, name in enumerate(_attn1_names(self.acm)):
            self.acm.get_submodule(name).set_processor(MagicPoseProcessor("write", self.store, i))
        for i, name in enumerate(_attn1_names(self.unet)):
            self.unet.get_submodule(name).set_processor(MagicPoseProcessor("read", self.store, i))
        self.dtype = dtype

    @staticmethod
    def _load(model, sd: dict, allowed_missing_prefixes: set[str]) -> None:
        missing, unexpected = model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=False)
        missing = [k for k in missing if k.split(".")[0] not in allowed_missing_prefixes]
        assert not missing and not unexpected, f"missing {missing[:5]} unexpected {unexpected[:5]}"

    @torch.no_grad()
    def eps(self, x_t: torch.Tensor, t: int, ctx: torch.Tensor, z_ref: torch.Tensor, hint: torch.Tensor):
        """(eps_cond, eps_uncond) at DDPM-space x_t (B, 4, h, w); z_ref: (1, 4, h, w) clean latent ×0.18215;
        hint: (B, 3, H, W) in [0, 1]; ctx: (1, 77, 768)."""
        b = x_t.shape[0]
        tt = torch.full((b,), float(t))
        self.store.clear()
        self.acm(z_ref.to(self.dtype), torch.tensor([float(t)]), encoder_hidden_states=ctx.to(self.dtype))
        ctxb = ctx.expand(b, -1, -1).to(self.dtype)
        down, mid = self.cn(x_t.to(self.dtype), tt, encoder_hidden_states=ctxb, controlnet_cond=hint.to(self.dtype),
                            return_dict=False)
        self.store["read"] = True
        e_c = self.unet(x_t.to(self.dtype), tt, encoder_hidden_states=ctxb, down_block_additional_residuals=down,
                        mid_block_additional_residual=mid).sample
        assert len(self.store.get("reads", ())) == 16, f"bank read at {len(self.store.get('reads', ()))} of 16 sites"
        self.store["read"] = False
        e_u = self.unet(x_t.to(self.dtype), tt, encoder_hidden_states=ctxb).sample
        return e_c.float(), e_u.float()

    @torch.no_grad()
    def ddim(self, noise: torch.Tensor, steps: int, ctx, z_ref, hint, cfg: float = 7.0) -> torch.Tensor:
        """The official DDIM (eta 0, uniform), in fp32 tensors with the fp32 alphas_cumprod buffer as the official
        sampler keeps them; returns the final latent in DDPM space (x0.18215 scale)."""
        ac = alphas_cumprod().float()
        ts = ddim_uniform_timesteps(steps)
        x = noise.float()
        for i in reversed(range(len(ts))):
            t = ts[i]
            a_t, a_prev = ac[t], (ac[ts[i - 1]] if i > 0 else ac[0])
            e_c, e_u = self.eps(x, t, ctx, z_ref, hint)
            e = magicpose_cfg(e_u, e_c, cfg)
            x0 = (x - (1 - a_t).sqrt() * e) / a_t.sqrt()
            x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * e
        return x
