"""Temporal sources (core): anchor choice, call plans, token gathering and bias, the anchor cache, and the claim
the design rests on — chunked sampling with cached anchors equals one batch equals frames rendered one by one."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from magicpose_core.model.temporal import (
    AnchorCache,
    TemporalOptions,
    anchor_frames,
    attention_bias,
    frames_needed_later,
    gather_anchors,
    plan_call,
)

SITE_A, SITE_B = ("input", 1, 0), ("output", 11, 0)


def test_anchor_frames_per_mode():
    assert [anchor_frames(f, "first") for f in range(3)] == [(None,), (0,), (0,)]
    assert [anchor_frames(f, "previous") for f in range(3)] == [(None,), (0,), (1,)]
    assert [anchor_frames(f, "both") for f in range(4)] == [(None, None), (0, None), (0, 1), (0, 2)]
    assert anchor_frames(5, "off") == ()


def test_options_are_validated_with_the_fix_named():
    assert TemporalOptions().slots == 0 and not TemporalOptions().enabled
    assert TemporalOptions("both").slots == 2 and TemporalOptions("first", strength=0.0).slots == 0
    for kw, words in (({"mode": "last"}, "not one of"), ({"mode": "first", "strength": -1.0}, "within 0.."),
                      ({"mode": "first", "strength": math.nan}, "within 0.."),
                      ({"mode": "first", "start": 0.8, "end": 0.2}, "start <= end")):
        with pytest.raises(ValueError, match=words):
            TemporalOptions(**kw)


def test_frames_needed_by_later_chunks():
    assert frames_needed_later("first", 4, 8) == {0}
    assert frames_needed_later("previous", 4, 8) == {3}
    assert frames_needed_later("both", 2, 8) == {0, 1}
    assert frames_needed_later("both", 8, 8) == set()   # the last chunk records nothing


def test_plan_in_batch_rows_cached_frames_and_uncond_rows():
    p = plan_call("both", [0], 4, 0, record_frames={0, 3})
    assert p.sources == ((None, None), (("row", 0), None), (("row", 0), ("row", 1)), (("row", 0), ("row", 2)))
    assert p.record == ((0, 0), (3, 3))
    later = plan_call("both", [0], 2, 4, record_frames={5})         # frames 4, 5 of a second chunk
    assert later.sources == ((("frame", 0), ("frame", 3)), (("frame", 0), ("row", 0)))
    mixed = plan_call("previous", [1, 0], 6, 0)                     # uncond rows 0-2, cond rows 3-5
    assert mixed.sources[:3] == ((None,),) * 3
    assert mixed.sources[3:] == ((None,), (("row", 3),), (("row", 4),))
    assert mixed.chunk_of_row == (0, 0, 0, 1, 1, 1)
    with pytest.raises(ValueError, match="does not split"):
        plan_call("first", [0, 1], 3, 0)


def _attend(q, k, v, bias=None, heads=2):
    b, n, c = q.shape

    def split(t):
        return t.view(b, -1, heads, c // heads).transpose(1, 2)  # (B, N, C) -> (B, h, N, d)

    mask = None if bias is None else bias.unsqueeze(1)           # (B, 1, K) -> (B, 1, 1, K)
    return F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=mask).transpose(1, 2).reshape(b, n, c)


def test_gathered_tokens_bias_and_masked_slot_exactness():
    g = torch.Generator().manual_seed(0)
    n = torch.randn(3, 5, 8, generator=g, dtype=torch.float64)
    cached = torch.randn(1, 5, 8, generator=g, dtype=torch.float64)
    plan = plan_call("both", [0], 3, 1)  # frames 1, 2, 3: frame 1 -> (frame 0 cached, none); 2 -> (0, row 0) ...
    extra, tb = gather_anchors(n, plan, 0.5, lambda chunk, frame: cached if frame == 0 else None)
    assert extra.shape == (3, 10, 8) and tb.shape == (3, 10)
    assert torch.equal(extra[0, :5], cached[0]) and torch.equal(extra[0, 5:], torch.zeros(5, 8, dtype=n.dtype))
    assert torch.equal(extra[2, 5:], n[1])
    assert tb[0, :5].eq(math.log(0.5)).all() and tb[0, 5:].eq(-math.inf).all() and tb[2].eq(math.log(0.5)).all()
    # a masked slot gets exactly zero weight: frame 1 attends as over [own, frame 0] only
    k = torch.cat([n, extra], 1)
    bias = attention_bias(3, 5, 15, temporal=(5, tb), dtype=n.dtype)
    out = _attend(n, k, k, bias)
    only = torch.cat([n[:1], cached], 1)
    only_bias = torch.cat([torch.zeros(5), torch.full((5,), math.log(0.5))]).view(1, 1, 10).double()
    ref = _attend(n[:1], only, only, only_bias)
    assert torch.allclose(out[:1], ref, atol=1e-12)


def test_strength_multiplies_the_softmax_weight_of_each_anchor_key():
    """log-bias semantics: with one query, out = sum(w_i v_i) / sum(w_i) with w = exp(q.k) x (strength on anchors)."""
    g = torch.Generator().manual_seed(2)
    q, own, anc = (torch.randn(1, m, 4, generator=g, dtype=torch.float64) for m in (1, 3, 3))
    s = 0.3
    k = torch.cat([own, anc], 1)
    bias = attention_bias(1, 3, 6, temporal=(3, torch.full((1, 3), math.log(s), dtype=torch.float64)), dtype=q.dtype)
    out = _attend(q, k, k, bias, heads=1)
    w = torch.exp((q @ k.transpose(1, 2)) / 2.0)[0, 0] * torch.tensor([1, 1, 1, s, s, s], dtype=torch.float64)
    assert torch.allclose(out[0, 0], (w[:, None] * k[0]).sum(0) / w.sum(), atol=1e-12)


def test_attention_bias_segments_and_all_zero_fast_path():
    rows = torch.tensor([True, False])
    assert attention_bias(2, 4, 12, reference=(8, 0.0, rows), temporal=(8, torch.zeros(2, 4))) is None
    b = attention_bias(2, 4, 14, reference=(8, math.log(0.5), rows), temporal=(8, torch.full((2, 4), -math.inf)))
    assert b.shape == (2, 1, 14)
    assert b[0, 0, 4:8].eq(math.log(0.5)).all() and b[1, 0, 4:8].eq(0).all() and b[:, 0, :4].eq(0).all()
    assert b[:, 0, 8:12].eq(-math.inf).all() and b[:, 0, 12:].eq(0).all()  # keys appended later by others: 0


def test_anchor_cache_consumption_parking_discard_and_misses():
    cache = AnchorCache(park_device="meta")
    s, call, old = torch.ones(1, 5, 4), ("uuid-a", 2), ("uuid-a", 1)
    cache.put(0, call, SITE_A, s)
    cache.put(3, call, SITE_A, s)
    cache.put(0, old, SITE_B, s)
    assert len(cache) == 3 and cache.nbytes() == 3 * 5 * 4 * 4 and cache.peak_bytes == cache.nbytes()
    assert cache.take(0, call, SITE_A, keep=True).device.type == "meta"   # parked
    cache.take(3, call, SITE_A, keep=False)                                # a "previous" state: read once
    assert len(cache) == 2
    with pytest.raises(RuntimeError, match="evaluated in order"):
        cache.take(3, call, SITE_A, keep=False)
    cache.discard(lambda c: c[0] == "uuid-a" and c != call)
    assert len(cache) == 1 and cache.peak_bytes == 3 * 5 * 4 * 4
    cache.clear()
    assert len(cache) == 0


# --- the design claim, on a toy multi-site "UNet" ------------------------------------------------------------


class ToyNet:
    """Three attention sites with LayerNorm-like norms and residuals; the conditional pass reads anchors."""

    SITES = (SITE_A, ("middle", 0, 0), SITE_B)

    def __init__(self, c=8, seed=3):
        g = torch.Generator().manual_seed(seed)
        self.w = [[torch.randn(c, c, generator=g, dtype=torch.float64) / c ** 0.5 for _ in range(3)]
                  for _ in self.SITES]

    def forward(self, x, t, site_hook):
        """x: (B, N, C); site_hook(site, n) -> (extra (B, M, C), bias (B, M)) appended to K/V."""
        for site, (wq, wk, wv) in zip(self.SITES, self.w):
            n = F.layer_norm(x, x.shape[-1:])
            extra, tb = site_hook(site, n)
            kv = torch.cat([n, extra], 1)
            bias = attention_bias(x.shape[0], n.shape[1], kv.shape[1], temporal=(n.shape[1], tb), dtype=x.dtype)
            x = x + _attend(n @ wq, kv @ wk, kv @ wv, bias) * (1 + t / 1000)
        return x


def _chunked(net, x0, mode, strength, chunk, steps=(981.0, 661.0, 341.0)):
    """Step-major: at each step the frames are evaluated chunk by chunk, in order; a chunk reads anchors from its
    own rows or from the states earlier chunks of the same step recorded; each step drops the last one's."""
    total = x0.shape[0]
    cache, x = AnchorCache(), x0.clone()
    for i, t in enumerate(steps):
        cache.discard(lambda call, i=i: call != i)
        parts = []
        for start in range(0, total, chunk):
            end = min(total, start + chunk)
            record = frames_needed_later(mode, end, total) & set(range(start, end))
            plan = plan_call(mode, [0], end - start, start, record_frames=record)

            def hook(site, n, plan=plan, i=i):
                got = gather_anchors(n, plan, strength,
                                     lambda _c, f: cache.take(f, i, site, keep=(f == 0 and mode != "previous")))
                for row, frame in plan.record:   # after the read: a chain holds one frame per site
                    cache.put(frame, i, site, n[row:row + 1])
                return got
            parts.append(x[start:end] - 0.3 * net.forward(x[start:end], t, hook))
        x = torch.cat(parts)
    return x, cache


def _one_by_one(net, x0, mode, strength, steps=(981.0, 661.0, 341.0)):
    """Independent statement of the semantics: each frame alone, in order, reading the recorded states of its
    anchor frames at the same step and site (no plans, no cache class)."""
    states: dict = {}   # (frame, step, site) -> (N, C)
    out = []
    for f in range(x0.shape[0]):
        x = x0[f:f + 1]
        for i, t in enumerate(steps):
            def hook(site, n, f=f, i=i):
                states[(f, i, site)] = n[0]
                anchors = [a for a in anchor_frames(f, mode) if a is not None]
                if not anchors:
                    return n[:, :0], n.new_zeros((1, 0))
                extra = torch.cat([states[(a, i, site)] for a in anchors])[None]          # (1, A*N, C)
                return extra, torch.full((1, extra.shape[1]), math.log(strength), dtype=n.dtype)
            x = x - 0.3 * net.forward(x, t, hook)
        out.append(x)
    return torch.cat(out)


@pytest.mark.parametrize("mode", ["first", "previous", "both"])
def test_chunks_of_any_size_equal_one_batch_equal_frames_one_by_one(mode):
    net = ToyNet()
    x0 = torch.randn(8, 6, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    truth = _one_by_one(net, x0, mode, 0.7)
    set_bytes = len(ToyNet.SITES) * 6 * 8 * 8  # one frame's states at every site (N 6, C 8, float64)
    for chunk in (8, 4, 3, 2, 1):
        got, cache = _chunked(net, x0, mode, 0.7, chunk)
        assert torch.allclose(got, truth, rtol=0, atol=1e-12), (mode, chunk)
        roles = 2 if mode == "both" else 1
        assert cache.peak_bytes <= (0 if chunk == 8 else roles * set_bytes), (mode, chunk)  # not x steps, not x frames
    plain = _one_by_one(net, x0, "off", 1.0)
    assert torch.equal(truth[0], plain[0])                       # frame 0 has no anchor
    assert (truth[1:] - plain[1:]).abs().max() > 1e-3            # the others do read one
