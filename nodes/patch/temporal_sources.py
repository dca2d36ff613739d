"""Temporal sources inside ComfyUI's sampling: anchor frames' self-attention states appended after the bank.

`add_temporal_sources` adds to a MagicPose-patched MODEL (the output of `apply_magicpose`):
- a DIFFUSION_MODEL wrapper keyed "magicpose_temporal": per model call with conditional rows inside the temporal
  window, it plans where each row's anchors come from (a row of the same call, or states recorded by an earlier
  frame chunk) and hands the plan to the call through ``transformer_options``;
- an attn1_patch, registered after MagicPose's bank reader, that appends the anchor tokens after the reference
  tokens (conditional rows only) and records the states later chunks will read;
- an attn1 replace at the 16 sites that applies the log-strength bias of the anchors (and of the reference, when
  its strength is not 1) and gives empty anchor slots (frame 0, unconditional rows) exactly zero weight;
- an OUTER_SAMPLE wrapper that scopes one sampling run and releases its state in ``finally``.
MagicPose's step-major frame chunks (`frame_batch`, frame_chunks.py) are followed per conditioning: a chunk reads
the anchors that earlier chunks of the same step recorded, so the result does not depend on the chunk size. The
math and its semantics are in magicpose_core/model/temporal.py; this is a pack extension, not official MagicPose
behaviour (off by default).
"""
from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field

import comfy.patcher_extension
import torch
from comfy.ldm.modules.attention import optimized_attention

from ...magicpose_core.model.attention_bank import site_key
from ...magicpose_core.model.constants import SITES
from ...magicpose_core.model.temporal import (
    AnchorCache,
    CallPlan,
    TemporalOptions,
    attention_bias,
    frames_needed_later,
    gather_anchors,
    plan_call,
)
from .model_patch import CALL_KEY, ConditionalCallWrapper, report_missing_sites

log = logging.getLogger("MagicPose")

TEMPORAL_KEY = "magicpose_temporal"  # wrapper key, and transformer_options key of one call's plan
WrappersMP = comfy.patcher_extension.WrappersMP
_SITE_SET = frozenset(SITES)


@dataclass
class TemporalStats:
    """Counters for tests, logs and the bench."""

    anchor_calls: int = 0                                # main-UNet calls that read anchors (had conditional rows)
    plain_calls: int = 0                                 # calls without (uncond only, or outside the window)
    extra_tokens: Counter = field(default_factory=Counter)   # site -> anchor tokens appended per row, summed over calls
    anchored_rows: Counter = field(default_factory=Counter)  # site -> conditional rows that read >= 1 real anchor
    cached_reads: int = 0                                # anchor states read from an earlier chunk
    recorded: int = 0                                    # anchor states recorded for later chunks
    missing_sites: set = field(default_factory=set)
    peak_cache_bytes: int = 0                            # the most the anchor cache held at once


@dataclass
class TemporalCall:
    """One main-UNet call: the plan, the cache key of each conditional chunk, and the key layout per site."""

    plan: CallPlan
    keys: dict[int, tuple]
    layout: dict = field(default_factory=dict)   # site -> (start of the anchor segment, (B, S*N) bias)
    seen: set = field(default_factory=set)


@dataclass
class _Stream:
    """Progress of one conditioning (cond uuid) through the frames of the current model evaluation."""

    next_frame: int = 0
    evaluation: int = -1
    timestep: float | None = None


class TemporalRun:
    """State of one patched model: the options, the anchor cache of the current evaluation, the counters.

    The frames of one sampling run are 0..N-1 (the latent batch). A model evaluation may come as one call or as
    frame chunks in order (MagicPose's step-major `frame_batch`); each call's first frame is found by following,
    per conditioning, how many frames of this evaluation were already seen.
    """

    def __init__(self, options: TemporalOptions, park_on_cpu: bool = False, strict_sites: bool = False):
        self.options = options
        self.park_on_cpu = park_on_cpu
        self.strict_sites = strict_sites
        self.cache = AnchorCache()
        self.stats = TemporalStats()
        self._frames: int | None = None       # latent batch of the current sampling run
        self._streams: dict = {}
        self._sigma_window: tuple[float, float] | None = None
        self._warned: set[str] = set()

    def begin_sampling(self, model_patcher, frames: int | None) -> None:
        ms = model_patcher.get_model_object("model_sampling")
        o = self.options
        self._sigma_window = (float(ms.percent_to_sigma(o.start)), float(ms.percent_to_sigma(o.end)))
        self._frames = frames
        self._streams = {}
        self.cache = AnchorCache(torch.device("cpu") if self.park_on_cpu else None)

    def end_sampling(self) -> None:
        self.stats.peak_cache_bytes = max(self.stats.peak_cache_bytes, self.cache.peak_bytes)
        self._frames, self._streams = None, {}
        self.cache = AnchorCache()

    # --- per call ------------------------------------------------------------------------------------------
    def active(self, transformer_options: dict) -> bool:
        sigmas = transformer_options.get("sigmas")
        if sigmas is None or self._sigma_window is None:
            return True
        hi, lo = self._sigma_window
        return lo <= float(sigmas.max()) <= hi

    def _first_frame(self, uuid, rows: int, timestep: float) -> tuple[int, tuple]:
        """(first frame of this call, cache key of its evaluation) for one conditioning; advances its stream."""
        total = self._frames or rows
        st = self._streams.setdefault(uuid, _Stream())
        if st.next_frame == 0:  # a new evaluation of this conditioning: drop the last one's states
            st.evaluation += 1
            st.timestep = timestep
            self.cache.discard(lambda call: call[0] == uuid and call[1] != st.evaluation)
        elif timestep != st.timestep:
            raise RuntimeError(f"MagicPose temporal sources: frames {st.next_frame}..{total - 1} of the step at "
                               f"timestep {st.timestep:g} were never evaluated (a call at {timestep:g} came first)")
        start = st.next_frame
        if start + rows > total:
            raise RuntimeError(f"MagicPose temporal sources: a call holds frames {start}..{start + rows - 1} of a "
                               f"{total}-frame batch: do not combine them with context windows or batch splitting")
        st.next_frame = (start + rows) % total
        return start, (uuid, st.evaluation)

    def start_call(self, batch: int, cond_or_uncond: list[int], uuids: list, timesteps: torch.Tensor) -> TemporalCall:
        rows = batch // len(cond_or_uncond)
        starts, keys = set(), {}
        for ci, c in enumerate(cond_or_uncond):
            if c == 0:
                uuid = uuids[ci] if ci < len(uuids) else ci
                start, keys[ci] = self._first_frame(uuid, rows, float(timesteps[ci * rows]))
                starts.add(start)
        if len(starts) != 1:
            raise RuntimeError(f"MagicPose temporal sources: the conditionings of one call are at different frames "
                               f"{sorted(starts)}")
        start = starts.pop()
        total = self._frames or rows
        record = frames_needed_later(self.options.mode, start + rows, total) & set(range(start, start + rows))
        return TemporalCall(plan_call(self.options.mode, cond_or_uncond, batch, start, record_frames=record), keys)

    def fetch(self, call: TemporalCall, site, chunk: int, frame: int) -> torch.Tensor:
        self.stats.cached_reads += 1
        keep = frame == 0 and self.options.mode in ("first", "both")  # frame 0 is read by every later chunk
        return self.cache.take(frame, call.keys[chunk], site, keep)

    def after_call(self, call: TemporalCall) -> None:
        report_missing_sites(call.seen, "MagicPose temporal sources were", stats=self.stats, strict=self.strict_sites,
                             warned=self._warned)


class TemporalReader:
    """attn1_patch after the bank reader: K/V = cat([own, reference, anchors]); records states for later chunks."""

    def __init__(self, run: TemporalRun):
        self.run = run

    def __call__(self, n, context, value, extra_options):
        call: TemporalCall | None = extra_options.get(TEMPORAL_KEY)
        if call is None:
            return n, context, value
        site = site_key(extra_options.get("block"), extra_options.get("block_index", 0))
        if site not in _SITE_SET:
            return n, context, value
        run, plan = self.run, call.plan
        extra, tb = gather_anchors(n, plan, run.options.strength,
                                   lambda chunk, frame: run.fetch(call, site, chunk, frame))  # (B, S*N, C), (B, S*N)
        for row, frame in plan.record:  # after the read: a "previous" chain holds one frame per call and site
            run.cache.put(frame, call.keys[plan.chunk_of_row[row]], site, n[row:row + 1])
            run.stats.recorded += 1
        call.layout[site] = (context.shape[1], tb)
        call.seen.add(site)
        live = torch.isfinite(tb.view(tb.shape[0], plan.slots, -1)[:, :, 0])  # (B, S): real anchors
        run.stats.extra_tokens[site] += extra.shape[1]
        run.stats.anchored_rows[site] += int(live.any(1).sum())
        return n, torch.cat([context, extra], dim=1), torch.cat([value, extra], dim=1)  # (B, K, C) -> (B, K + S*N, C)

    def to(self, device):
        return self


class TemporalAttention:
    """attn1 replace at the 16 sites: softmax(QKᵀ/√d + bias) V with the reference's and the anchors' log-weights."""

    def __call__(self, q, k, v, extra_options):
        heads = extra_options["n_heads"]
        precision = extra_options.get("attn_precision")
        n_own = q.shape[1]
        call: TemporalCall | None = extra_options.get(TEMPORAL_KEY)
        ref_state = extra_options.get(CALL_KEY)
        site = site_key(extra_options.get("block"), extra_options.get("block_index", 0))
        start, tb = call.layout.get(site, (k.shape[1], None)) if call is not None else (k.shape[1], None)
        reference = None
        if ref_state is not None and start > n_own and ref_state.strength != 1.0:
            reference = (start, math.log(ref_state.strength), ref_state.cond_rows)
        bias = attention_bias(q.shape[0], n_own, k.shape[1], reference=reference,
                              temporal=None if tb is None else (start, tb),
                              device=q.device, dtype=q.dtype)
        return optimized_attention(q, k, v, heads, mask=bias, attn_precision=precision)  # bias (B, 1, K) or None

    def to(self, device):
        return self


class TemporalWrapper(ConditionalCallWrapper):
    """DIFFUSION_MODEL wrapper: the anchor plan of one call with conditional rows; dropped in finally."""

    key = TEMPORAL_KEY

    def start_call(self, x, timesteps, context, cond_or_uncond, transformer_options) -> TemporalCall:
        call = self.run.start_call(x.shape[0], cond_or_uncond, transformer_options.get("uuids") or [], timesteps)
        self.run.stats.anchor_calls += 1
        return call


class TemporalOuterWrapper:
    """OUTER_SAMPLE wrapper: one sampling run; its state is released in finally."""

    def __init__(self, run: TemporalRun):
        self.run = run

    def __call__(self, executor, *args, **kwargs):
        noise = args[0] if args else kwargs.get("noise")
        self.run.begin_sampling(executor.class_obj.model_patcher, int(noise.shape[0]) if noise is not None else None)
        try:
            return executor(*args, **kwargs)
        finally:
            self.run.end_sampling()


def add_temporal_sources(model, options: TemporalOptions, park_on_cpu: bool = False,
                         strict_sites: bool = False):
    """Return `model` (a MagicPose-patched clone) with temporal sources added; a no-op when options are off.

    Call it on the output of `apply_magicpose` (it owns that clone). The anchors are appended after the reference
    bank's tokens, so the bank reader must already be registered.
    """
    if not options.enabled:
        return model
    run = TemporalRun(options, park_on_cpu, strict_sites)
    model.add_wrapper_with_key(WrappersMP.DIFFUSION_MODEL, TEMPORAL_KEY, TemporalWrapper(run))
    model.add_wrapper_with_key(WrappersMP.OUTER_SAMPLE, TEMPORAL_KEY, TemporalOuterWrapper(run))
    model.set_model_attn1_patch(TemporalReader(run))
    replace = TemporalAttention()
    taken = model.model_options["transformer_options"].get("patches_replace", {}).get("attn1", {})
    for block, number, index in SITES:
        other = taken.get((block, number, index))
        if other is not None and type(other).__name__ != "WeightedReferenceAttention":
            log.warning("MagicPose: replacing another node's attn1 replacement at %s for the temporal sources",
                        (block, number, index))
        model.set_model_attn1_replace(replace, block, number, index)  # also weights the reference (superset)
    return model


def temporal_run(model) -> TemporalRun | None:
    """The TemporalRun of a patched model, or None without temporal sources."""
    for w in model.get_wrappers(WrappersMP.DIFFUSION_MODEL, TEMPORAL_KEY):
        if isinstance(w, TemporalWrapper):
            return w.run
    return None


def with_anchor_frame(poses: torch.Tensor, anchor_pose: torch.Tensor | None,
                      options: TemporalOptions | None) -> tuple[torch.Tensor, int]:
    """Pose maps with the video's first pose map(s) prepended as hidden leading frames, and how many to drop.

    For rendering a frame range on its own: with ``anchor_pose`` = the video's first pose map (and shared noise),
    the range's "first" anchor is the video's frame 0, as when the whole video renders at once. Every map given is
    rendered hidden, the first being the anchor: with the video's first ``frame_batch`` maps (a range starting on a
    multiple of frame_batch), each chunk the networks see holds the same frames as in the whole render, so the
    range's frames are bit-identical to it (one map alone: equal within the fp32 batch-size floor).
    poses: IMAGE (N, H, W, 3); anchor_pose: IMAGE (A >= 1, H, W, 3).
    """
    if anchor_pose is None:
        return poses, 0
    if options is None or not options.enabled or options.mode not in ("first", "both"):
        log.warning("MagicPose: anchor_pose is used only with temporal_mode first or both; ignoring it")
        return poses, 0
    if anchor_pose.ndim != 4 or tuple(anchor_pose.shape[1:]) != tuple(poses.shape[1:]) or anchor_pose.shape[0] < 1:
        raise ValueError(f"anchor_pose {tuple(anchor_pose.shape)} must be a pose map of the same size as the poses "
                         f"{tuple(poses.shape[1:])}: give the video's first pose map from the same Extract Pose")
    return torch.cat([anchor_pose.to(poses), poses]), anchor_pose.shape[0]  # (N, H, W, 3) -> (A + N, H, W, 3)
