"""Multi-source self-attention: the appearance bank, its read as extra keys/values, and the bank cache.

MagicPose (ICML 2024, arXiv 2311.12052), "multi-source attention": at each of the 16 self-attention sites the
Appearance Control Model (ACM) records its post-``norm1`` hidden states (write); the main UNet's conditional
pass attends over ``cat([own, reference], dim=tokens)`` with its own frozen ``to_k``/``to_v`` (read); the
unconditional pass is plain SD1.5. No scaling, masking or new parameters.

Ported from MagicDance@a515a1f model_lib/ControlNet/ldm/modules/attention.py (BasicTransformerBlock.forward,
write and read modes): behaviour only (docs/method.md §3.2, §3.5, §10).

Caching (docs/method.md §10): the bank depends only on the reference latent, the timestep, the text
context and the ACM weights, so one ACM pass per (timestep, context) serves every frame and frame chunk. The
cache is general: a *source* is a set of 16 per-site tensors cached per step under a `CachePolicy` (the reference
bank is the source ``"reference"``), and the read appends every source's tokens (`gather_sources`).
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import torch

from .constants import SITES

log = logging.getLogger("MagicPose")

SiteKey = tuple[str, int, int]
Bank = dict[SiteKey, torch.Tensor]  # site -> (1 or R, N_ref, C) post-norm1 hidden states of the ACM
REFERENCE = "reference"             # the source name of the appearance bank


def site_key(block: tuple[str, int] | None, block_index: int) -> SiteKey | None:
    """ComfyUI's (extra_options["block"], ["block_index"]) -> the bank key, or None outside the UNet blocks."""
    if block is None:
        return None
    return (str(block[0]), int(block[1]), int(block_index))


def cond_row_mask(cond_or_uncond: list[int], batch: int) -> torch.Tensor:
    """Per-row flags (B,) bool: True for rows of conditional chunks (``cond_or_uncond`` entry 0)."""
    if not cond_or_uncond:
        return torch.ones(batch, dtype=torch.bool)
    if batch % len(cond_or_uncond):
        raise ValueError(f"batch of {batch} rows does not split into {len(cond_or_uncond)} cond/uncond chunks")
    rows = batch // len(cond_or_uncond)
    flags = torch.tensor([c == 0 for c in cond_or_uncond], dtype=torch.bool)
    return flags.repeat_interleave(rows)  # (chunks,) -> (B,)


def extend_kv(context: torch.Tensor, value: torch.Tensor, ref: torch.Tensor,
              cond_rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Append reference tokens to self-attention keys and values on conditional rows.

    context, value: (B, N, C) what attn1 will project with to_k / to_v; ref: (1 or B_cond, N_ref, C), the tokens
    of every source concatenated (`gather_sources`). Rows not in ``cond_rows`` (unconditional rows of a mixed batch)
    get their own tokens appended N_ref / N more times: softmax attention over key/value pairs that all appear
    equally often is mathematically unchanged, so they stay plain SD while the batch keeps one key length. That
    needs N_ref to be a multiple of N (reference resized to the frame size).
    """
    b, n = context.shape[:2]
    if cond_rows is None or (cond_rows.device.type == "cpu" and bool(cond_rows.all())):  # no device sync
        extra_k = extra_v = ref.expand(b, -1, -1) if ref.shape[0] == 1 else ref  # (1, N_ref, C) -> (B, N_ref, C)
    else:
        if ref.shape[1] % n:
            raise RuntimeError(
                f"a batch mixing conditional and unconditional rows needs reference tokens ({ref.shape[1]}) that are a "
                f"multiple of the frame tokens ({n}); keep the reference the same size as the frames")
        reps = ref.shape[1] // n
        mask = cond_rows.to(context.device).view(b, 1, 1)  # (B,) -> (B, 1, 1)
        refb = ref.expand(b, -1, -1) if ref.shape[0] == 1 else _scatter_rows(ref, cond_rows, b)
        extra_k = torch.where(mask, refb, context.repeat(1, reps, 1))  # uncond rows: their own keys again
        extra_v = torch.where(mask, refb, value.repeat(1, reps, 1))
    return torch.cat([context, extra_k], dim=1), torch.cat([value, extra_v], dim=1)  # (B, N, C) -> (B, N + N_ref, C)


def gather_sources(sources: list[Bank], key: SiteKey) -> torch.Tensor | None:
    """The tokens every source holds at one site, concatenated: list of (R, N_i, C) -> (R, sum N_i, C); None if none."""
    parts = [src[key] for src in sources if key in src]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def _scatter_rows(ref: torch.Tensor, cond_rows: torch.Tensor, b: int) -> torch.Tensor:
    """(B_cond, N, C) per-cond-row banks -> (B, N, C) with zeros on the other rows."""
    out = ref.new_zeros((b,) + tuple(ref.shape[1:]))
    out[cond_rows.to(ref.device)] = ref
    return out


@dataclass
class BankStats:
    """Counters for one patched model, readable by tests and logs."""

    acm_calls: int = 0                                   # appearance-model forward passes
    hits: int = 0                                        # bank lookups served from the cache
    misses: int = 0                                      # lookups that ran the ACM
    writes: Counter = field(default_factory=Counter)     # site -> entries written
    reads: Counter = field(default_factory=Counter)      # site -> attn1 calls whose K/V were extended
    bank_calls: int = 0                                  # main-UNet calls that carried a bank (had conditional rows)
    plain_calls: int = 0                                 # main-UNet calls without one (uncond, or outside the window)
    missing_sites: set = field(default_factory=set)      # expected sites that never fired in a conditional call
    bank_bytes: int = 0                                  # bytes of one bank as cached (16 sites)
    peak_cache_bytes: int = 0                            # the most the bank cache held at once

    def reset(self) -> None:
        self.__init__()

    def summary(self) -> dict:
        return {"acm_calls": self.acm_calls, "hits": self.hits, "misses": self.misses,
                "sites_written": len(self.writes), "sites_read": len(self.reads),
                "reads": sum(self.reads.values()), "bank_calls": self.bank_calls, "plain_calls": self.plain_calls,
                "bank_bytes": self.bank_bytes, "peak_cache_bytes": self.peak_cache_bytes}


def check_sites(seen: set[SiteKey], expected: tuple[SiteKey, ...] = SITES) -> set[SiteKey]:
    """Expected sites that did not fire (guards against keys that silently never match)."""
    return set(expected) - set(seen)


def bank_nbytes(bank: Bank) -> int:
    """Bytes held by one bank (16 sites)."""
    return sum(v.numel() * v.element_size() for v in bank.values())


@dataclass(frozen=True)
class CachePolicy:
    """How long cached sources live and where they wait between reads.

    keep_steps: timesteps kept per source; 1 (default) keeps only the current one, so memory does not grow with the
    number of steps (frame chunks run step-major and share it); 0 keeps every timestep.
    device: where cached tensors wait (e.g. "cpu": copied to the compute device for each read); None = where written.
    dtype: storage dtype (e.g. torch.float16 halves the memory, lossy for fp32 models); None = as written.
    """

    keep_steps: int = 1
    device: torch.device | str | None = None
    dtype: torch.dtype | None = None


@dataclass
class _Entry:
    source: str
    timestep: float
    context: torch.Tensor | None  # (1, T, C) text context the source was computed with (None: does not depend on it)
    bank: Bank


class BankCache:
    """Cached sources of extra self-attention tokens, by (source, timestep, text context), under a `CachePolicy`.

    A source is one set of 16 per-site tensors computed once per step and read by every frame chunk of that step:
    ``"reference"`` is the appearance bank (the ACM on the reference latent); other sources (e.g. an anchor frame's
    own states) use other names and the same policy. ``peak_bytes`` is the most the cache held at once.
    """

    def __init__(self, policy: CachePolicy | None = None):
        self.policy = policy or CachePolicy()
        self._entries: list[_Entry] = []
        self.peak_bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, source: str, timestep: float, context: torch.Tensor | None = None) -> Bank | None:
        for e in self._entries:
            if e.source == source and e.timestep == timestep and _same_context(e.context, context):
                return e.bank
        return None

    def store(self, source: str, timestep: float, context: torch.Tensor | None, bank: Bank) -> Bank:
        """Cache `bank` (converted to the policy's device/dtype) and evict what the policy no longer keeps."""
        keep = self.policy.keep_steps
        if keep > 0:
            kept = list(dict.fromkeys(e.timestep for e in self._entries if e.source == source))
            if timestep not in kept:
                drop = set(kept[:max(0, len(kept) - keep + 1)])   # oldest timesteps first
                self._entries = [e for e in self._entries if e.source != source or e.timestep not in drop]
        p = self.policy
        if p.device is not None or p.dtype is not None:
            bank = {k: v.to(device=p.device or v.device, dtype=p.dtype or v.dtype) for k, v in bank.items()}
        ctx = None if context is None else context.detach().clone()
        self._entries.append(_Entry(source, timestep, ctx, bank))
        self.peak_bytes = max(self.peak_bytes, self.nbytes())
        return bank

    def nbytes(self) -> int:
        return sum(bank_nbytes(e.bank) for e in self._entries)

    def clear(self) -> None:
        self._entries.clear()


def _same_context(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and torch.equal(a, b.to(a.device, a.dtype))
