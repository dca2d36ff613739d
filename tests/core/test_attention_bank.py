"""Bank math and cache: K/V extension on conditional rows, the duplication rule for unconditional rows, the cache
policy (per (timestep, context), current step only vs every step, parking), and the CFG / schedule helpers."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from magicpose_core.attention_bank import BankCache, check_sites, cond_row_mask, extend_kv, site_key
from magicpose_core.config import SITES
from magicpose_core.guidance import alphas_cumprod, ddim_uniform_timesteps, magicpose_cfg


def _attend(q, k, v, heads=2):
    b, n, c = q.shape

    def split(t):
        return t.view(b, -1, heads, c // heads).transpose(1, 2)  # (B, N, C) -> (B, h, N, d)

    return F.scaled_dot_product_attention(split(q), split(k), split(v)).transpose(1, 2).reshape(b, n, c)


def test_site_keys_and_rows():
    assert site_key(("middle", 0), 0) == ("middle", 0, 0) and site_key(None, 0) is None
    assert len(SITES) == 16 and len(set(SITES)) == 16
    assert cond_row_mask([1, 0], 6).tolist() == [False] * 3 + [True] * 3
    assert cond_row_mask([], 2).tolist() == [True, True]
    assert check_sites(set(SITES[:15])) == {SITES[15]}


def test_extend_kv_appends_reference_after_own_tokens_on_every_cond_row():
    g = torch.Generator().manual_seed(0)
    ctx, ref = torch.randn(3, 5, 8, generator=g), torch.randn(1, 4, 8, generator=g)
    k, v = extend_kv(ctx, ctx, ref)
    assert k.shape == (3, 9, 8) and torch.equal(k[:, :5], ctx) and torch.equal(k[2, 5:], ref[0])
    per_row = torch.randn(3, 4, 8, generator=g)
    k2, _ = extend_kv(ctx, ctx, per_row, torch.ones(3, dtype=torch.bool))
    assert torch.equal(k2[1, 5:], per_row[1])


def test_uncond_rows_of_a_mixed_batch_attend_exactly_as_plain_self_attention():
    g = torch.Generator().manual_seed(1)
    n = torch.randn(4, 6, 8, generator=g, dtype=torch.float64)
    ref = torch.randn(1, 6, 8, generator=g, dtype=torch.float64)
    rows = cond_row_mask([0, 1], 4)  # rows 0-1 cond, 2-3 uncond
    k, v = extend_kv(n, n, ref, rows)
    out = _attend(n, k, v)
    plain = _attend(n, n, n)
    with_bank = _attend(n, torch.cat([n, ref.expand(4, -1, -1)], 1), torch.cat([n, ref.expand(4, -1, -1)], 1))
    assert torch.allclose(out[2:], plain[2:], atol=1e-12)          # duplicated own keys: softmax-invariant
    assert torch.allclose(out[:2], with_bank[:2], atol=1e-12)
    assert (out[:2] - plain[:2]).abs().max() > 1e-3


def test_mixed_batch_needs_reference_of_the_frame_size():
    n, ref = torch.zeros(2, 6, 8), torch.zeros(1, 4, 8)
    try:
        extend_kv(n, n, ref, cond_row_mask([0, 1], 2))
    except RuntimeError as e:
        assert "same size as the frames" in str(e)
    else:
        raise AssertionError("expected a RuntimeError")


def test_cache_by_timestep_and_context_current_step_only_by_default():
    c1, c2 = torch.zeros(1, 77, 8), torch.ones(1, 77, 8)
    bank = {SITES[0]: torch.zeros(1, 4, 8)}
    cache = BankCache()
    cache.store(981.0, c1, bank)
    assert cache.lookup(981.0, c1.clone()) is bank and cache.lookup(981.0, c2) is None
    assert cache.lookup(961.0, c1) is None
    cache.store(981.0, c2, dict(bank))
    assert len(cache) == 2
    cache.store(961.0, c1, dict(bank))       # a new step evicts the previous step's banks
    assert len(cache) == 1 and cache.lookup(981.0, c1) is None


def test_cache_keep_all_and_park():
    cache = BankCache(keep_all=True, park_device="meta")
    for t in (981.0, 961.0, 941.0):
        cache.store(t, torch.zeros(1, 77, 8), {SITES[0]: torch.ones(1, 4, 8, dtype=torch.float16)})
    assert len(cache) == 3 and cache.nbytes() == 3 * 4 * 8 * 2
    cache.park()
    assert cache.lookup(961.0, torch.zeros(1, 77, 8))[SITES[0]].device.type == "meta"
    cache.clear()
    assert len(cache) == 0


def test_cfg_and_official_schedule():
    u, c = torch.tensor([1.0]), torch.tensor([3.0])
    assert magicpose_cfg(u, c, 7.0).item() == 15.0
    assert ddim_uniform_timesteps(50)[:3] == [1, 21, 41] and ddim_uniform_timesteps(50)[-1] == 981
    assert ddim_uniform_timesteps(10) == [1, 101, 201, 301, 401, 501, 601, 701, 801, 901]
    ac = alphas_cumprod()
    assert ac.shape == (1000,) and abs(float(ac[0]) - 0.99915) < 1e-6 and float(ac[-1]) < 0.005
