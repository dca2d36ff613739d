"""Temporal sources: multi-source self-attention across frames (a pack extension; the official code has none).

MagicPose (ICML 2024, arXiv 2311.12052) renders every frame on its own and names temporal consistency as its first
future work (docs/method.md §9). Its own mechanism, multi-source self-attention (§3.2), extends naturally: at
each of the 16 self-attention sites of the conditional pass, the post-``norm1`` states of an anchor frame at the
same sampling step are appended after the reference bank,

    K/V = cat([own, reference bank, anchor_1, anchor_2], dim=tokens)   through the main UNet's to_k / to_v,

with a ``log(strength)`` logit bias on the anchor keys (the semantics of the reference strength: each anchor key's
softmax weight is multiplied by the strength; 1 = plain concatenation, 0 = off). This is training-free cross-frame
attention as in Text2Video-Zero (Khachatryan et al., ICCV 2023, "cross-frame attention" to the first frame); no new
weights. The unconditional rows stay plain SD1.5.

Semantics, chosen so that the result does not depend on how frames are batched or cut into chunks:

- Frames advance together, step by step ("step-major"). Frame f's anchors at each model evaluation are
  ``first``: frame 0's states at the same evaluation; ``previous``: frame f-1's; ``both``: the two (frame 1
  reads frame 0 once). Frame 0 has no anchor: it renders exactly as without temporal sources.
- Inside one model call every row's post-norm1 states exist before that site's attention runs, so a row reads the
  anchor rows of the same forward at the same site; no sequential loop is needed. Frame f depends on frames < f
  only (a causal chain), so the frames of one evaluation can be cut into chunks evaluated in order: a later chunk
  reads the states of the frames it needs (frame 0, the last frame of the chunk before), recorded at the same site
  by the earlier chunks of the same evaluation. They live in an :class:`AnchorCache` keyed by (frame, call, site).
- Memory: only the current evaluation's states are kept: at most one frame's states per site for "first" (kept
  until the evaluation ends) and one for "previous" (dropped once read) — two bank-sized sets at most, whatever the
  number of steps or frames; none at all when every frame is in one call. They may wait on the CPU, like the bank.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Hashable, Sequence

import torch

MODES = ("off", "first", "previous", "both")
MAX_STRENGTH = 2.0  # upper limit of the temporal strength (also the nodes' temporal_strength maximum)

SiteKey = tuple[str, int, int]
Source = tuple[str, int]           # ("row", j): row j of the same call; ("frame", f): frame f from the cache


@dataclass(frozen=True)
class TemporalOptions:
    """Which anchors, how strongly, and in which part of the schedule (fractions of sampling progress)."""

    mode: str = "off"          # off | first | previous | both
    strength: float = 1.0      # softmax weight multiplier of the anchor keys (log-bias); 1 = plain concatenation
    start: float = 0.0         # sampling progress at which anchors start being read
    end: float = 1.0           # ... and after which they stop

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"temporal mode {self.mode!r} is not one of {', '.join(MODES)}")
        if not (math.isfinite(self.strength) and 0.0 <= self.strength <= MAX_STRENGTH):
            raise ValueError(f"temporal strength {self.strength} must be within 0..{MAX_STRENGTH} (1 = plain, 0 = off)")
        if not (0.0 <= self.start <= self.end <= 1.0):
            raise ValueError(f"temporal window {self.start}..{self.end} must satisfy 0 <= start <= end <= 1")

    @property
    def enabled(self) -> bool:
        return self.mode != "off" and self.strength > 0

    @property
    def slots(self) -> int:
        """Anchor slots per row (each as many tokens as the row's own)."""
        return 0 if not self.enabled else (2 if self.mode == "both" else 1)


def anchor_frames(frame: int, mode: str) -> tuple[int | None, ...]:
    """The anchor frame of each slot for global frame index ``frame``; None = no anchor (the slot is masked)."""
    first = 0 if frame > 0 else None
    prev = frame - 1 if frame > 0 else None
    if mode == "first":
        return (first,)
    if mode == "previous":
        return (prev,)
    if mode == "both":
        return (first, prev if prev != first else None)  # frame 1: frame 0 once, not twice
    return ()


def frames_needed_later(mode: str, chunk_end: int, total: int) -> set[int]:
    """Frames whose states the chunks from ``chunk_end`` on (the exclusive end of this chunk) will read."""
    if chunk_end >= total:
        return set()
    need = set()
    if mode in ("first", "both"):
        need.add(0)
    if mode in ("previous", "both"):
        need.add(chunk_end - 1)
    return need


@dataclass(frozen=True)
class CallPlan:
    """Where each row of one model call takes its anchors from, and which rows' states to record."""

    sources: tuple[tuple[Source | None, ...], ...]   # (B, slots): per row, per slot
    chunk_of_row: tuple[int, ...]                    # (B,): index into cond_or_uncond
    record: tuple[tuple[int, int], ...]              # (row, frame) whose states later chunks read

    @property
    def slots(self) -> int:
        return len(self.sources[0]) if self.sources else 0


def plan_call(mode: str, cond_or_uncond: Sequence[int], batch: int, offset: int, *,
              record_frames: set[int] = frozenset()) -> CallPlan:
    """Plan the anchors of one model call.

    The batch holds ``len(cond_or_uncond)`` chunks of equal size (0 = conditional, 1 = unconditional); each chunk
    holds the frames ``offset, offset + 1, ...`` of this sampling run in order. Unconditional rows get no anchor.
    """
    chunks = list(cond_or_uncond) or [0]
    if batch % len(chunks):
        raise ValueError(f"batch of {batch} rows does not split into {len(chunks)} cond/uncond chunks")
    rows = batch // len(chunks)
    n_slots = len(anchor_frames(1, mode))
    sources, chunk_of_row, record = [], [], []
    for ci, c in enumerate(chunks):
        base = ci * rows
        for i in range(rows):
            chunk_of_row.append(ci)
            if c != 0:
                sources.append((None,) * n_slots)
                continue
            f = offset + i
            row_src: list[Source | None] = []
            for a in anchor_frames(f, mode):
                if a is None:
                    row_src.append(None)
                elif a >= offset:
                    row_src.append(("row", base + a - offset))  # in this call, same site: no loop needed
                else:
                    row_src.append(("frame", a))               # recorded by an earlier chunk
            sources.append(tuple(row_src))
            if f in record_frames:
                record.append((base + i, f))
    return CallPlan(tuple(sources), tuple(chunk_of_row), tuple(record))


def gather_anchors(n: torch.Tensor, plan: CallPlan, strength: float,
                   fetch: Callable[[int, int], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The anchor tokens to append after the reference, and their logit bias.

    n: (B, N, C) post-norm1 states of this call at one site; fetch(chunk, frame) -> (1, N, C) cached states.
    Returns extra (B, S*N, C) and bias (B, S*N): log(strength) on real anchors, -inf on empty slots (their
    tokens are zeros and get exactly zero softmax weight, so those rows attend as without the slot).
    """
    b, tokens, _ = n.shape
    slots = plan.slots
    fetched: dict[tuple[int, int], int] = {}
    pool = [n]                                     # rows 0..B-1, then cached frames, then one zero row
    for r, row_src in enumerate(plan.sources):
        for src in row_src:
            if src is not None and src[0] == "frame":
                key = (plan.chunk_of_row[r], src[1])
                if key not in fetched:
                    fetched[key] = b + len(fetched)
                    pool.append(fetch(*key).to(n.device, n.dtype))   # (1, N, C)
    zero = b + len(fetched)
    pool.append(n.new_zeros((1,) + tuple(n.shape[1:])))
    idx = torch.empty((b, slots), dtype=torch.long)
    live = torch.zeros((b, slots), dtype=torch.bool)
    for r, row_src in enumerate(plan.sources):
        for s, src in enumerate(row_src):
            if src is None:
                idx[r, s] = zero
            elif src[0] == "row":
                idx[r, s], live[r, s] = src[1], True
            else:
                idx[r, s], live[r, s] = fetched[(plan.chunk_of_row[r], src[1])], True
    pool_t = torch.cat(pool)                                               # (B + F + 1, N, C)
    extra = pool_t[idx.to(n.device).flatten()].reshape(b, slots * tokens, -1)  # (B*S, N, C) -> (B, S*N, C)
    logit = torch.full((b, slots), -math.inf, dtype=n.dtype)
    logit[live] = math.log(strength)
    bias = logit.repeat_interleave(tokens, dim=1).to(n.device)             # (B, S) -> (B, S*N)
    return extra, bias


def attention_bias(batch: int, n_own: int, total: int, *, reference: tuple[int, float, torch.Tensor] | None = None,
                   temporal: tuple[int, torch.Tensor] | None = None, device=None,
                   dtype=torch.float32) -> torch.Tensor | None:
    """Additive logit bias (B, 1, K) over the keys [own | reference | ... | anchors | ...], or None if all zero.

    reference: (end of the reference segment, log-weight, (B,) bool rows it applies to) — the segment starts right
    after the own tokens; temporal: (start of the anchor segment, (B, S*N) bias from :func:`gather_anchors`).
    """
    bias = torch.zeros((batch, 1, total), device=device, dtype=dtype)
    nonzero = False
    if reference is not None and reference[1] != 0.0:
        end, logit, rows = reference
        bias[rows.to(bias.device), :, n_own:end] = logit
        nonzero = True
    if temporal is not None:
        start, tb = temporal
        bias[:, 0, start:start + tb.shape[1]] = tb.to(bias.device, dtype)
        nonzero = nonzero or bool((tb != 0).any())
    return bias if nonzero else None


class AnchorCache:
    """Recorded anchor-frame states by (frame, call, site) for the frame chunks of one model evaluation.

    ``call`` is any hashable naming one evaluation of one conditioning (the glue uses (cond uuid, evaluation
    number)). States of frame 0 (the "first" anchor) are read by every later chunk (``keep=True``); a "previous"
    state is read once and dropped. :meth:`discard` drops an evaluation's states when the next one starts.
    ``park_device`` (e.g. the CPU) holds them between uses.
    """

    def __init__(self, park_device: torch.device | str | None = None):
        self.park_device = park_device
        self._states: dict[tuple[int, Hashable, SiteKey], torch.Tensor] = {}
        self.peak_bytes = 0

    def __len__(self) -> int:
        return len(self._states)

    def put(self, frame: int, call: Hashable, site: SiteKey, states: torch.Tensor) -> None:
        """Record (1, N, C) states (copied, so the call's activations are not kept alive)."""
        dev = self.park_device if self.park_device is not None else states.device
        self._states[(frame, call, site)] = states.detach().to(dev, copy=True)
        self.peak_bytes = max(self.peak_bytes, self.nbytes())

    def take(self, frame: int, call: Hashable, site: SiteKey, keep: bool) -> torch.Tensor:
        """The recorded (1, N, C) states; removed unless ``keep``. A miss is an error naming its likely cause."""
        key = (frame, call, site)
        if key not in self._states:
            raise RuntimeError(
                f"MagicPose temporal sources: no recorded states of frame {frame} at {site} for this step: the frame "
                f"chunks of a step must be evaluated in order, frame 0 first, with the same conditioning")
        return self._states[key] if keep else self._states.pop(key)

    def discard(self, stale: Callable[[Hashable], bool]) -> None:
        """Drop the states of every call for which ``stale(call)`` is true."""
        self._states = {k: v for k, v in self._states.items() if not stale(k[1])}

    def nbytes(self) -> int:
        return sum(v.numel() * v.element_size() for v in self._states.values())

    def clear(self) -> None:
        self._states.clear()
