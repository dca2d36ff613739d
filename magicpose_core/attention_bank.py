"""Multi-source self-attention: the appearance bank, its read as extra keys/values, and the bank cache.

MagicPose (ICML 2024, arXiv 2311.12052), "multi-source attention": at each of the 16 self-attention sites the
Appearance Control Model (ACM) records its post-``norm1`` hidden states (write); the main UNet's conditional
pass attends over ``cat([own, reference], dim=tokens)`` with its own frozen ``to_k``/``to_v`` (read); the
unconditional pass is plain SD1.5. No scaling, masking or new parameters.

Ported from MagicDance@a515a1f model_lib/ControlNet/ldm/modules/attention.py (BasicTransformerBlock.forward,
write and read modes): behaviour only (magicpose-method.md §3.2, §3.5, §10).

Caching (magicpose-method.md §10): the bank depends only on the reference latent, the timestep, the text
context and the ACM weights, so one ACM pass per (timestep, context) serves every frame and frame chunk.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import torch

from .config import SITES

log = logging.getLogger("MagicPose")

SiteKey = tuple[str, int, int]
Bank = dict[SiteKey, torch.Tensor]  # site -> (1 or R, N_ref, C) post-norm1 hidden states of the ACM


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

    context, value: (B, N, C) what attn1 will project with to_k / to_v; ref: (1 or B_cond, N_ref, C).
    Rows not in ``cond_rows`` (unconditional rows of a mixed batch) get their own tokens appended a second
    time: softmax attention over every key/value pair duplicated once is mathematically unchanged, so they stay
    plain SD while the batch keeps one key length. That needs N_ref == N (reference resized to the frame size).
    """
    b = context.shape[0]
    if cond_rows is None or bool(cond_rows.all()):
        extra_k = extra_v = ref.expand(b, -1, -1) if ref.shape[0] == 1 else ref  # (1, N_ref, C) -> (B, N_ref, C)
    else:
        if ref.shape[1] != context.shape[1]:
            raise RuntimeError(
                f"a batch mixing conditional and unconditional rows needs reference tokens ({ref.shape[1]}) equal to "
                f"the frame tokens ({context.shape[1]}); keep the reference the same size as the frames")
        mask = cond_rows.to(context.device).view(b, 1, 1)  # (B,) -> (B, 1, 1)
        refb = ref.expand(b, -1, -1) if ref.shape[0] == 1 else _scatter_rows(ref, cond_rows, b)
        extra_k = torch.where(mask, refb, context)  # uncond rows: their own keys again
        extra_v = torch.where(mask, refb, value)
    return torch.cat([context, extra_k], dim=1), torch.cat([value, extra_v], dim=1)  # (B, N, C) -> (B, N + N_ref, C)


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

    def reset(self) -> None:
        self.__init__()

    def summary(self) -> dict:
        return {"acm_calls": self.acm_calls, "hits": self.hits, "misses": self.misses,
                "sites_written": len(self.writes), "sites_read": len(self.reads),
                "reads": sum(self.reads.values()), "bank_calls": self.bank_calls, "plain_calls": self.plain_calls}


def check_sites(seen: set[SiteKey], expected: tuple[SiteKey, ...] = SITES) -> set[SiteKey]:
    """Expected sites that did not fire (guards against keys that silently never match)."""
    return set(expected) - set(seen)


@dataclass
class _Entry:
    timestep: float
    context: torch.Tensor  # (1, T, C) text context the ACM ran with
    bank: Bank


class BankCache:
    """Banks by (timestep, text context) for one sampling run.

    ``keep_all=False`` keeps only the current timestep's banks (bounded memory: one bank, ~23 MB in fp16 at
    512²); ``keep_all=True`` keeps every step so later frame chunks reuse them, and ``park()`` moves them to
    ``park_device`` (e.g. the CPU) between chunks.
    """

    def __init__(self, keep_all: bool = False, park_device: torch.device | str | None = None):
        self.keep_all = keep_all
        self.park_device = park_device
        self._entries: list[_Entry] = []

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, timestep: float, context: torch.Tensor) -> Bank | None:
        for e in self._entries:
            if e.timestep == timestep and e.context.shape == context.shape and torch.equal(
                    e.context, context.to(e.context.device, e.context.dtype)):
                return e.bank
        return None

    def store(self, timestep: float, context: torch.Tensor, bank: Bank) -> None:
        if not self.keep_all:
            self._entries = [e for e in self._entries if e.timestep == timestep]
        self._entries.append(_Entry(timestep, context.detach().clone(), bank))

    def park(self) -> None:
        """Move every cached bank to the park device (no-op without one)."""
        if self.park_device is None:
            return
        for e in self._entries:
            for k, v in e.bank.items():
                e.bank[k] = v.to(self.park_device, non_blocking=True)

    def nbytes(self) -> int:
        return sum(v.numel() * v.element_size() for e in self._entries for v in e.bank.values())

    def clear(self) -> None:
        self._entries.clear()
