"""Patching the user's MODEL with MagicPose: the appearance bank inside ComfyUI's own sampling.

Over 400 lines: the wrapper, the per-call plan and the attn1 patch share one call state; split apart, each
piece would need the others' private fields.

`apply_magicpose` clones the MODEL (the input is never mutated) and adds:
- the appearance UNet (ACM) as an additional model, so ComfyUI loads and offloads it with the main model;
- a DIFFUSION_MODEL wrapper keyed "magicpose": per model call with conditional rows, it obtains the bank for
  this timestep (the ACM on the clean reference latent at the same timestep and text context; cached per
  (timestep, context)) and hands it to the call through ``transformer_options``;
- an attn1_patch that, on conditional rows only, appends the bank to the self-attention keys and values;
- an OUTER_SAMPLE wrapper that scopes the bank cache to one sampling run and releases it in ``finally``, and gives
  runs on the `magicpose_official` schedule the official start noise and last step (official_schedule.py);
- optionally a CALC_COND_BATCH wrapper that evaluates the frames in chunks, step-major (frame_chunks.py), under
  torch autocast when asked.
The bank cache keeps only the current step (one bank: ~44 MiB fp32 at 512x512), whatever the steps and chunks.
The pose ControlNet is attached to the positive conditioning only (`attach_pose_control`).

Behaviour ported from MagicDance@a515a1f cldm/cldm.py (ControlLDMReferenceOnlyPose.apply_model) and
ldm/modules/attention.py (BasicTransformerBlock.forward): facts only (docs/method.md §3, §4, §7).
"""
from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass, field

import comfy.model_management
import comfy.model_patcher
import comfy.patcher_extension
import torch
from comfy.ldm.modules.attention import optimized_attention

from ...magicpose_core.model.attention_bank import (
    REFERENCE,
    Bank,
    BankCache,
    BankStats,
    CachePolicy,
    bank_nbytes,
    check_sites,
    cond_row_mask,
    extend_kv,
    gather_sources,
    site_key,
)
from ...magicpose_core.model.constants import SITES
from ...magicpose_core.model.reference import MagicPoseReference
from .autocast_choice import CHOICES, AutocastResolver
from .frame_chunks import ChunkState, calc_in_chunks
from .official_schedule import official_scales

log = logging.getLogger("MagicPose")

WRAPPER_KEY = "magicpose"
CALL_KEY = "magicpose_call"  # transformer_options key carrying one model call's bank to the attn1 patches
WrappersMP = comfy.patcher_extension.WrappersMP
AUTOCAST = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # the concrete `autocast` choices
AUTOCAST_CHOICES = CHOICES   # the `autocast` option: AUTOCAST's keys + "auto" (measured per machine)


class _BankComplete(Exception):
    """Raised by the writer after the last site: the rest of the ACM forward cannot affect the bank."""


@dataclass
class CallState:
    """One main-UNet call: the sources of extra tokens (on the call's device and dtype; the reference bank first)
    and which rows are conditional."""

    sources: list[Bank]
    cond_rows: torch.Tensor       # (B,) bool, on the CPU (no device sync to read it)
    strength: float
    stats: BankStats
    seen: set = field(default_factory=set)
    _all_cond: bool | None = field(default=None, repr=False)
    _mask: torch.Tensor | None = field(default=None, repr=False)

    def row_mask(self, device) -> torch.Tensor | None:
        """None when every row is conditional, else the (B,) bool mask on `device`, moved there once per call (not
        once per attention site)."""
        if self._all_cond is None:
            self._all_cond = bool(self.cond_rows.all())
        if self._all_cond:
            return None
        if self._mask is None or self._mask.device != torch.device(device):
            self._mask = self.cond_rows.to(device)
        return self._mask


class BankWriter:
    """attn1_patch of the ACM pass: records the post-norm1 hidden states (B=1, N_ref, C) per site."""

    def __init__(self, sink: Bank, last: tuple = SITES[-1]):
        self.sink = sink
        self.last = last

    def __call__(self, n, context, value, extra_options):
        key = site_key(extra_options.get("block"), extra_options.get("block_index", 0))
        if key is not None:
            self.sink[key] = n
            if key == self.last:
                raise _BankComplete
        return n, context, value


class BankReader:
    """attn1_patch of the main UNet: K/V = cat([own, bank], tokens) on conditional rows; uncond rows plain."""

    def __call__(self, n, context, value, extra_options):
        state: CallState | None = extra_options.get(CALL_KEY)
        if state is None:
            return n, context, value
        key = site_key(extra_options.get("block"), extra_options.get("block_index", 0))
        ref = gather_sources(state.sources, key)  # (1 or R, N_ref, C)
        if ref is None:
            return n, context, value
        if ref.shape[-1] != context.shape[-1]:
            raise RuntimeError(f"MagicPose bank at {key} has {ref.shape[-1]} channels but the MODEL has "
                               f"{context.shape[-1]} there: MagicPose needs an SD1.5 MODEL")
        rows = state.row_mask(context.device)
        context, value = extend_kv(context, value, ref, rows)  # (B, N, C) -> (B, N + N_ref, C)
        state.seen.add(key)
        state.stats.reads[key] += 1
        return n, context, value

    def to(self, device):
        return self


class WeightedReferenceAttention:
    """attn1 replace used only when reference strength != 1: reference keys get a log(strength) logit bias,
    i.e. their softmax weight is multiplied by the strength (1 = official, 0 = plain SD1.5)."""

    def __call__(self, q, k, v, extra_options):
        heads = extra_options["n_heads"]
        precision = extra_options.get("attn_precision")
        state: CallState | None = extra_options.get(CALL_KEY)
        n_own = q.shape[1]
        if state is None or k.shape[1] == n_own:
            return optimized_attention(q, k, v, heads, attn_precision=precision)
        bias = torch.zeros((q.shape[0], 1, k.shape[1]), device=q.device, dtype=q.dtype)  # (B, 1, N + N_ref)
        rows = state.row_mask(q.device)  # None: every row conditional; a mask, not an index (no device sync)
        weight = math.log(state.strength)
        bias[:, :, n_own:] = weight if rows is None else rows.view(-1, 1, 1).to(q.dtype) * weight
        return optimized_attention(q, k, v, heads, mask=bias, attn_precision=precision)

    def to(self, device):
        return self


@dataclass
class MagicPoseOptions:
    reference_strength: float = 1.0  # softmax weight of the reference tokens; 1 = official
    reference_start: float = 0.0     # sampling-progress window in which the bank is read
    reference_end: float = 1.0
    park_bank_on_cpu: bool = False   # keep the step's cached bank in CPU memory between frame chunks
    strict_sites: bool = False       # raise instead of warn when a site never fires
    frame_batch: int = 0             # evaluate at most this many frames at once, step-major (0 = the whole batch)
    autocast: str = "off"            # "bf16" / "fp16": run the networks under torch autocast (not official);
                                     # "auto": what a probe measured faster on this machine (autocast_choice.py)
    autocast_cache: str | None = None   # auto's per-machine probe cache (None: ComfyUI's user directory)

    def __post_init__(self):
        if self.autocast not in AUTOCAST_CHOICES:
            raise ValueError(f"autocast must be one of {list(AUTOCAST_CHOICES)}, got {self.autocast!r}")
        if self.frame_batch < 0:
            raise ValueError(f"frame_batch must be >= 0 (0 = all frames at once), got {self.frame_batch}")


class MagicPoseRun:
    """State of one patched model: the ACM, the reference, the bank cache and the counters."""

    def __init__(self, acm, reference: MagicPoseReference, options: MagicPoseOptions):
        self.acm = acm                     # ModelPatcher of the ACM (its model: comfy BaseModel)
        self.reference = reference
        self.options = options
        self.cache = BankCache(self.policy())
        self.chunks = ChunkState()
        self.stats = BankStats()
        self._sigma_window: tuple[float, float] | None = None
        self._latent_format = None
        self._warned: set[str] = set()

    def policy(self) -> CachePolicy:
        """Only the current step's bank: frame chunks run step-major, so no later chunk needs an earlier step."""
        park = comfy.model_management.unet_offload_device() if self.options.park_bank_on_cpu else None
        return CachePolicy(keep_steps=1, device=park)  # parked where ComfyUI offloads models (the CPU by default)

    # --- one sampling run ----------------------------------------------------------------------------------
    def begin_sampling(self, model_patcher) -> None:
        ms = model_patcher.get_model_object("model_sampling")
        self._latent_format = model_patcher.get_model_object("latent_format")
        o = self.options
        self._sigma_window = (float(ms.percent_to_sigma(o.reference_start)),
                              float(ms.percent_to_sigma(o.reference_end)))
        self.cache = BankCache(self.policy())
        self.chunks.clear()

    def end_sampling(self) -> None:
        self.stats.peak_cache_bytes = max(self.stats.peak_cache_bytes, self.cache.peak_bytes)
        self.cache = BankCache(self.policy())  # release every bank of this run
        self.chunks.clear()

    # --- per call ----------------------------------------------------------------------------------------
    def active(self, transformer_options: dict) -> bool:
        if self.options.reference_strength <= 0:
            return False
        if self.options.reference_start <= 0 and self.options.reference_end >= 1:
            return True  # the whole schedule: no need to read sigma back from the device
        sigmas = transformer_options.get("sigmas")
        if sigmas is None or self._sigma_window is None:
            return True
        s = float(sigmas.max())
        hi, lo = self._sigma_window
        return lo <= s <= hi

    def bank_for(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor, rows: torch.Tensor) -> Bank:
        """The bank for the conditional rows of this call, on x's device and dtype: (1 or R, N_ref, C) per site."""
        idx = rows.nonzero().flatten().tolist()  # rows: a CPU mask
        ts = timesteps[idx].float().cpu().tolist()  # one device read per call, not one per row
        groups = _row_groups(idx, ts, context)  # conditional rows sharing (timestep, context); usually one group
        banks = []
        for g in groups:
            r = g[0]
            t, ctx, t_val = timesteps[r:r + 1], context[r:r + 1], ts[idx.index(r)]  # (1,), (1, T, C), float
            bank = self.cache.lookup(REFERENCE, t_val, ctx)
            if bank is None:
                self.stats.misses += 1
                bank = self.cache.store(REFERENCE, t_val, ctx, self._run_acm(t, ctx, x.shape[-2:], x.device))
                self.stats.bank_bytes = bank_nbytes(bank)
                self.stats.peak_cache_bytes = max(self.stats.peak_cache_bytes, self.cache.peak_bytes)
            else:
                self.stats.hits += 1
            banks.append(bank)
        if len(banks) == 1:
            return {k: v.to(x.device, x.dtype) for k, v in banks[0].items()}
        order = [next(j for j, g in enumerate(groups) if i in g) for i in idx]
        return {k: torch.cat([banks[j][k] for j in order]).to(x.device, x.dtype) for k in banks[0]}  # (R, N_ref, C)

    def _reference_latent(self, hw: tuple[int, int]) -> torch.Tensor:
        h, w = int(hw[0]), int(hw[1])
        if self.reference.latent_size != (h, w) and "resize" not in self._warned:
            self._warned.add("resize")
            rh, rw = self.reference.latent_size
            log.warning("MagicPose: the reference is %dx%d but the frames are %dx%d; resizing the reference latent "
                        "(prepare the reference at the frame size for best results)", rw * 8, rh * 8, w * 8, h * 8)
        return self.reference.latent_resized(h, w)

    def _run_acm(self, t: torch.Tensor, ctx: torch.Tensor, hw, device) -> Bank:
        """One ACM forward on the clean reference latent at timestep t with text ctx; returns its 16 norm1 states."""
        model = self.acm.model
        dtype = model.get_dtype_inference()
        z = self._latent_format.process_in(self._reference_latent(hw).float()).to(device, dtype)  # (1, 4, h, w)
        sink: Bank = {}
        topts = {"patches": {"attn1_patch": [BankWriter(sink)]}, "cond_or_uncond": [0]}
        with torch.no_grad():
            try:
                model.diffusion_model(z, t.float().to(device), context=ctx.to(device, dtype), control=None,
                                      transformer_options=topts)
            except _BankComplete:
                pass
        self.stats.acm_calls += 1
        for k in sink:
            self.stats.writes[k] += 1
        missing = check_sites(set(sink))
        if missing:
            raise RuntimeError(f"the appearance model wrote no bank entry at {sorted(missing)}: the MagicPose "
                               f"appearance weights are not an SD1.5 UNet")
        return sink

    def after_call(self, state: CallState) -> None:
        report_missing_sites(state.seen, "MagicPose: the appearance bank was", stats=self.stats,
                             strict=self.options.strict_sites, warned=self._warned)


def _row_groups(idx: list[int], ts: list[float], context: torch.Tensor) -> list[list[int]]:
    """Rows `idx` grouped by equal (timestep `ts[i]`, context row); one batched comparison in the usual case of a
    single group (every row the same prompt at the same step), row by row otherwise."""
    if not idx:
        return []
    if len(set(ts)) == 1:
        c = context[idx]  # (R, T, C)
        if len(idx) == 1 or bool((c == c[:1]).flatten(1).all()):
            return [list(idx)]
    groups: list[list[int]] = []
    for j, i in enumerate(idx):
        for g in groups:
            if ts[j] == ts[idx.index(g[0])] and torch.equal(context[i], context[g[0]]):
                g.append(i)
                break
        else:
            groups.append([i])
    return groups


def report_missing_sites(seen: set, what: str, *, stats, strict: bool, warned: set[str]) -> None:
    """After a conditional call: `what` ("... was") not read at all 16 sites is recorded in `stats.missing_sites`
    and raised when `strict`, else warned about once (`warned`: the run's warnings already given)."""
    missing = check_sites(seen)
    if not missing:
        return
    stats.missing_sites |= missing
    msg = (f"{what} not read at {len(missing)} of 16 attention sites {sorted(missing)[:4]}: is the MODEL an SD1.5 "
           f"UNet, or does another node replace its self-attention?")
    if strict:
        raise RuntimeError(msg)
    if "sites" not in warned:
        warned.add("sites")
        log.warning(msg)


class ConditionalCallWrapper:
    """DIFFUSION_MODEL wrapper base: a call with conditional rows, inside the run's window, gets a per-call state
    (:meth:`start_call`) in ``transformer_options[key]`` for the attn1 patches, dropped in finally, then
    ``run.after_call(state)``; other calls run plain. ``run`` has ``active``, ``after_call`` and ``stats.plain_calls``.
    """

    key = ""

    def __init__(self, run):
        self.run = run

    def start_call(self, x, timesteps, context, cond_or_uncond: list[int], transformer_options: dict):
        raise NotImplementedError

    def __call__(self, executor, x, timesteps, context, y, control, transformer_options, **kwargs):
        run = self.run
        coc = transformer_options.get("cond_or_uncond") or []
        if 0 not in coc or not run.active(transformer_options):
            run.stats.plain_calls += 1
            return executor(x, timesteps, context, y, control, transformer_options, **kwargs)
        state = self.start_call(x, timesteps, context, coc, transformer_options)
        topts = dict(transformer_options)
        topts[self.key] = state
        try:
            out = executor(x, timesteps, context, y, control, topts, **kwargs)
        finally:
            topts.pop(self.key, None)
        run.after_call(state)
        return out


class DiffusionModelWrapper(ConditionalCallWrapper):
    """DIFFUSION_MODEL wrapper: bank for conditional rows, then the UNet; per-call state dropped in finally."""

    key = CALL_KEY

    def start_call(self, x, timesteps, context, cond_or_uncond, transformer_options) -> CallState:
        run = self.run
        rows = cond_row_mask(cond_or_uncond, x.shape[0])
        run.stats.bank_calls += 1
        return CallState([run.bank_for(x, timesteps, context, rows)], rows, run.options.reference_strength,
                         run.stats)


class OuterSampleWrapper:
    """OUTER_SAMPLE wrapper: one sampling run; its banks are released in finally (success, error, interrupt).
    On the `magicpose_official` schedule it also scales the initial noise and the output as the official sampler
    (official_schedule.py: `official_scales`)."""

    def __init__(self, run: MagicPoseRun):
        self.run = run

    def __call__(self, executor, noise, latent_image, sampler, sigmas, *args, **kwargs):
        patcher = executor.class_obj.model_patcher
        start, end = official_scales(patcher.get_model_object("model_sampling"), sigmas)
        if start != 1.0:
            noise = noise * start  # official x_T: unit variance in DDPM space
        self.run.begin_sampling(patcher)
        try:
            out = executor(noise, latent_image, sampler, sigmas, *args, **kwargs)
        finally:
            self.run.end_sampling()
        return out * end if end != 1.0 else out  # k-diffusion x at sigma(t=0) -> DDPM space


class CondBatchWrapper:
    """CALC_COND_BATCH wrapper: the frames in chunks of `frame_batch`, step-major, under autocast when asked."""

    def __init__(self, run: MagicPoseRun):
        self.run = run
        self.autocast = AutocastResolver(run.options.autocast, run.options.autocast_cache)   # auto: resolved once

    def __call__(self, executor, model, conds, x_in, timestep, model_options):
        o = self.run.options
        dtype = self.autocast.dtype(x_in.device, model)
        ctx = contextlib.nullcontext() if dtype is None else torch.autocast(x_in.device.type, dtype=dtype)
        with ctx:
            return calc_in_chunks(executor, model, conds, x_in, timestep, model_options, rows=o.frame_batch,
                                  state=self.run.chunks)


def check_sd15(model) -> None:
    """Raise a clear error unless `model` is an SD1.5-architecture MODEL (what MagicPose was trained with)."""
    cfg = getattr(getattr(model.model, "model_config", None), "unet_config", {}) or {}
    if cfg.get("context_dim") != 768 or cfg.get("model_channels") != 320 or cfg.get("adm_in_channels"):
        name = type(model.model).__name__
        raise ValueError(f"MagicPose needs an SD1.5 MODEL (context 768, 320 channels); got {name} with "
                         f"context_dim={cfg.get('context_dim')}: load an SD1.5 checkpoint (or the SD1.5 bundled "
                         f"with MagicPose, converted with --with-sd15)")


def check_autocast(name: str, device) -> None:
    """Raise a clear error when torch has no autocast of this dtype on the MODEL's device (`auto` only picks what
    runs there)."""
    dtype = AUTOCAST.get(name)
    if dtype is None:
        return
    kind = torch.device(device).type
    if not torch.amp.is_autocast_available(kind):
        raise ValueError(f"autocast {name}: torch has no autocast on {kind}; set autocast to off")
    try:
        with torch.autocast(kind, dtype=dtype):
            pass
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"autocast {name} is not supported on {kind} by this torch ({e}); set autocast to off") from e


def apply_magicpose(model, magicpose, reference: MagicPoseReference, options: MagicPoseOptions | None = None):
    """Return a clone of `model` sampling with the MagicPose appearance bank; `model` itself is untouched.

    Args:
        model: the user's SD1.5 MODEL (ModelPatcher).
        magicpose: the MAGICPOSE_MODEL bundle (its `appearance` ModelPatcher is the ACM).
        reference: the prepared reference (its raw VAE latent).
        options: strengths, window and cache policy; the defaults are the official behaviour.
    """
    check_sd15(model)
    options = options or MagicPoseOptions()
    run = MagicPoseRun(magicpose.appearance, reference, options)
    m = model.clone()
    m.set_additional_models(WRAPPER_KEY, [magicpose.appearance])
    m.add_wrapper_with_key(WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY, DiffusionModelWrapper(run))
    m.add_wrapper_with_key(WrappersMP.OUTER_SAMPLE, WRAPPER_KEY, OuterSampleWrapper(run))
    if options.frame_batch > 0 or options.autocast != "off":
        check_autocast(options.autocast, model.load_device)
        m.add_wrapper_with_key(WrappersMP.CALC_COND_BATCH, WRAPPER_KEY, CondBatchWrapper(run))
    m.set_model_attn1_patch(BankReader())
    if options.reference_strength > 0 and not math.isclose(options.reference_strength, 1.0):
        replace = WeightedReferenceAttention()
        taken = m.model_options["transformer_options"].get("patches_replace", {}).get("attn1", {})
        for block, number, index in SITES:
            if (block, number, index) in taken:
                log.warning("MagicPose: replacing another node's attn1 replacement at %s to weight the reference",
                            (block, number, index))
            m.set_model_attn1_replace(replace, block, number, index)
    return m


def magicpose_run(model) -> MagicPoseRun:
    """The MagicPoseRun of a patched model (for the sampler node and tests)."""
    for w in model.get_wrappers(WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY):
        if isinstance(w, DiffusionModelWrapper):
            return w.run
    raise ValueError("this MODEL has no MagicPose patch: connect it through MagicPose Apply")


def attach_pose_control(positive, controlnet, poses: torch.Tensor, strength: float = 1.0,
                        start_percent: float = 0.0, end_percent: float = 1.0):
    """The pose ControlNet on the positive conditioning only (the official unconditional pass has no pose
    residuals); chains after any ControlNet already there. poses: IMAGE (B, H, W, 3) in [0, 1]."""
    if strength == 0:
        return positive
    hint = poses.movedim(-1, 1)  # (B, H, W, 3) -> (B, 3, H, W)
    out, made = [], {}
    for emb, d in positive:
        d = d.copy()
        prev = d.get("control")
        if prev not in made:
            c = controlnet.copy().set_cond_hint(hint, strength, (start_percent, end_percent))
            c.set_previous_controlnet(prev)
            made[prev] = c
        d["control"] = made[prev]
        d["control_apply_to_uncond"] = False
        out.append([emb, d])
    return out
