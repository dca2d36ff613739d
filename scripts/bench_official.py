"""The official MagicPose inference structure, driven on the same ComfyUI modules as ours (for `make bench`).

What the official code does per frame and per DDIM step (docs/method.md §4, §7, §8; docs/performance.md §3;
behaviour of MagicDance@a515a1f ddim.py p_sample_ddim and cldm.py ControlLDMReferenceOnlyPose.apply_model,
facts only), reproduced here with our modules:
1. the appearance UNet (ACM) on the clean reference latent at the current t, writing the bank (full forward: the
   official ACM does not stop after its last bank site);
2. the pose ControlNet on x_t;
3. the main UNet with the bank read and the pose residuals (conditional call, batch 1);
4. the pose ControlNet again (the official unconditional call computes it and throws the result away);
5. the plain main UNet (unconditional call, batch 1);
6. CFG 7 on eps and the DDIM update (eta 0, uniform timesteps, last step to alphas_cumprod[0]) in DDPM space.
Frames one after another, batch 1 (``frame``); ``start``/``step`` advance a frame one step at a time so that a
benchmark can interleave it with another run (same machine conditions for both). The bank is written by the pack's
own `BankWriter` into a dict and read by its `BankReader`, so the math is the same as ours; only the structure (what
runs how often) differs.

``OfficialStructure(..., autocast=dtype)`` runs fp32 weights under torch.autocast, as the official script does on
GPUs (``torch.cuda.amp.autocast`` over fp32 weights).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch


class OfficialStructure:
    """Per-frame official DDIM loop over ComfyUI modules: unet/acm are UNetModel modules, controlnet a core
    comfy.controlnet.ControlNet (its `control_model` is called directly, its `control_merge` shapes the result)."""

    def __init__(self, pack, unet, acm, controlnet, context: torch.Tensor, z_ref: torch.Tensor, device,
                 autocast: torch.dtype | None = None):
        self.P = pack.nodes.patch.model_patch
        self.bank_lib = pack.magicpose_core.model.attention_bank
        self.guidance = pack.magicpose_core.model.guidance
        self.unet, self.acm, self.cn = unet, acm, controlnet
        self.device = torch.device(device)
        self.dtype = next(unet.parameters()).dtype
        self.context = context.to(self.device, self.dtype)   # (1, 77, 768) text context of both calls
        self.z_ref = z_ref.to(self.device, self.dtype)       # (1, 4, h, w) clean latent, x0.18215
        self.autocast = autocast
        self.acm_calls = 0

    def _amp(self):
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast)

    @torch.no_grad()
    def eps(self, x: torch.Tensor, t: int, hint: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(eps_cond, eps_uncond) for DDPM-space x (1, 4, h, w) at timestep t; hint (1, 3, H, W) in [0, 1]."""
        P = self.P
        tt = torch.full((x.shape[0],), float(t), device=self.device, dtype=self.dtype)
        x = x.to(self.device, self.dtype)
        with self._amp():
            bank = {}
            writer = P.BankWriter(bank, last=None)  # no early stop: the official ACM runs its whole forward
            self.acm(self.z_ref, tt, context=self.context, control=None,
                     transformer_options={"patches": {"attn1_patch": [writer]}, "cond_or_uncond": [0]})
            self.acm_calls += 1
            control = self.cn.control_merge(
                self.cn.control_model(x=x, hint=hint, timesteps=tt, context=self.context), None, output_dtype=None)
            rows = torch.ones(x.shape[0], dtype=torch.bool)
            state = P.CallState([bank], rows, 1.0, self.bank_lib.BankStats())
            e_c = self.unet(x, tt, context=self.context, control=control, transformer_options={
                "patches": {"attn1_patch": [P.BankReader()]}, P.CALL_KEY: state, "cond_or_uncond": [0]})
            if len(state.seen) != 16:
                raise RuntimeError(f"official structure: the bank was read at {len(state.seen)} of 16 sites")
            self.cn.control_model(x=x, hint=hint, timesteps=tt, context=self.context)  # discarded, as officially
            e_u = self.unet(x, tt, context=self.context, control=None, transformer_options={"cond_or_uncond": [1]})
        return e_c.float(), e_u.float()

    def start(self, x_T: torch.Tensor, hint: torch.Tensor, steps: int) -> "Trajectory":
        """A frame's DDIM run from DDPM-space x_T (1, 4, h, w) with pose hint (1, 3, H, W), advanced by `step`."""
        return Trajectory(x_T.to(self.device, torch.float32), hint.to(self.device, self.dtype),
                          self.guidance.ddim_uniform_timesteps(steps))

    @torch.no_grad()
    def step(self, tr: "Trajectory", cfg: float = 7.0) -> None:
        """One official DDIM step (eta 0) of a trajectory, in DDPM space; the last one goes to alphas_cumprod[0]."""
        g = self.guidance
        ac = g.alphas_cumprod().float()  # the official sampler keeps alphas_cumprod as an fp32 buffer
        i = len(tr.timesteps) - 1 - tr.done
        t = tr.timesteps[i]
        a_t, a_prev = ac[t], (ac[tr.timesteps[i - 1]] if i > 0 else ac[0])
        e_c, e_u = self.eps(tr.x, t, tr.hint)
        e = e_u + cfg * (e_c - e_u)  # the official CFG (ComfyUI's default combines the same way)
        x0 = (tr.x - (1 - a_t).sqrt() * e) / a_t.sqrt()
        tr.x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * e
        tr.done += 1

    def frame(self, x_T: torch.Tensor, hint: torch.Tensor, steps: int, cfg: float = 7.0) -> torch.Tensor:
        """One frame's whole DDIM run; returns the final latent in DDPM space (x0.18215 scale)."""
        tr = self.start(x_T, hint, steps)
        while not tr.finished:
            self.step(tr, cfg)
        return tr.x


@dataclass
class Trajectory:
    """One frame of the official loop: the current DDPM-space latent and how many steps are done."""

    x: torch.Tensor            # (1, 4, h, w)
    hint: torch.Tensor         # (1, 3, H, W)
    timesteps: list[int]       # ascending official DDIM timesteps
    done: int = 0
    seconds: list[float] = field(default_factory=list)  # wall time of each step (filled by the caller)

    @property
    def finished(self) -> bool:
        return self.done >= len(self.timesteps)
