"""Bank math and cache: K/V extension on conditional rows, the duplication rule for unconditional rows, the cache
policy (per (timestep, context), current step only vs every step, parking), the official schedule, and the CFG of
the parity reference (tests/parity/reference_impl.py)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from parity.reference_impl import magicpose_cfg

from magicpose_core.model.attention_bank import (
    REFERENCE,
    BankCache,
    CachePolicy,
    bank_nbytes,
    check_sites,
    cond_row_mask,
    extend_kv,
    gather_sources,
    site_key,
)
from magicpose_core.model.constants import SITES
from magicpose_core.model.guidance import alphas_cumprod, ddim_uniform_timesteps, official_start


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


def test_mixed_batch_needs_reference_of_a_multiple_of_the_frame_size():
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
    assert cache.store(REFERENCE, 981.0, c1, bank) is bank          # no conversion under the default policy
    assert cache.lookup(REFERENCE, 981.0, c1.clone()) is bank and cache.lookup(REFERENCE, 981.0, c2) is None
    assert cache.lookup(REFERENCE, 961.0, c1) is None and cache.lookup("anchor", 981.0, c1) is None
    cache.store(REFERENCE, 981.0, c2, dict(bank))
    assert len(cache) == 2
    cache.store(REFERENCE, 961.0, c1, dict(bank))       # a new step evicts the previous step's banks
    assert len(cache) == 1 and cache.lookup(REFERENCE, 981.0, c1) is None
    assert cache.peak_bytes == 2 * 4 * 8 * 4


def test_cache_memory_does_not_grow_with_steps_and_sources_are_independent():
    """The default policy holds one bank per source whatever the number of steps; another source (e.g. an anchor
    frame's states, context-free) lives beside the reference under the same policy."""
    cache = BankCache()
    one = {k: torch.zeros(1, 16, 8) for k in SITES}
    for t in range(981, 0, -20):                       # 50 steps
        cache.store(REFERENCE, float(t), torch.zeros(1, 77, 8), dict(one))
        cache.store("anchor", float(t), None, dict(one))
        assert cache.lookup("anchor", float(t)) is not None
    assert len(cache) == 2 and cache.peak_bytes == 2 * bank_nbytes(one)
    every = BankCache(CachePolicy(keep_steps=0))
    for t in (981.0, 961.0, 941.0):
        every.store(REFERENCE, t, None, dict(one))
    assert len(every) == 3 and every.nbytes() == 3 * bank_nbytes(one)
    two = BankCache(CachePolicy(keep_steps=2))
    for t in (981.0, 961.0, 941.0):
        two.store(REFERENCE, t, None, dict(one))
    assert two.lookup(REFERENCE, 981.0) is None and two.lookup(REFERENCE, 961.0) is not None


def test_cache_policy_device_and_dtype():
    cache = BankCache(CachePolicy(device="meta", dtype=torch.float16))
    stored = cache.store(REFERENCE, 981.0, None, {SITES[0]: torch.ones(1, 4, 8)})
    assert stored[SITES[0]].device.type == "meta" and stored[SITES[0]].dtype == torch.float16
    assert cache.lookup(REFERENCE, 981.0)[SITES[0]].device.type == "meta" and cache.nbytes() == 4 * 8 * 2
    cache.clear()
    assert len(cache) == 0


def test_sources_are_read_together_and_uncond_rows_stay_plain_with_two_sources():
    g = torch.Generator().manual_seed(4)
    n = torch.randn(4, 6, 8, generator=g, dtype=torch.float64)
    a, b = (torch.randn(1, 6, 8, generator=g, dtype=torch.float64) for _ in range(2))
    ref = gather_sources([{SITES[0]: a}, {SITES[0]: b}], SITES[0])
    assert ref.shape == (1, 12, 8) and torch.equal(ref[:, 6:], b)
    assert gather_sources([{SITES[0]: a}], SITES[1]) is None
    rows = cond_row_mask([0, 1], 4)
    k, v = extend_kv(n, n, ref, rows)
    assert k.shape == (4, 18, 8)
    assert torch.allclose(_attend(n, k, v)[2:], _attend(n, n, n)[2:], atol=1e-12)   # own keys x3: unchanged
    full = torch.cat([n[:2], ref.expand(2, -1, -1)], 1)
    assert torch.allclose(_attend(n, k, v)[:2], _attend(n[:2], full, full), atol=1e-12)


def test_cfg_and_official_schedule():
    u, c = torch.tensor([1.0]), torch.tensor([3.0])
    assert magicpose_cfg(u, c, 7.0).item() == 15.0
    assert ddim_uniform_timesteps(50)[:3] == [1, 21, 41] and ddim_uniform_timesteps(50)[-1] == 981
    assert ddim_uniform_timesteps(10) == [1, 101, 201, 301, 401, 501, 601, 701, 801, 901]
    ac = alphas_cumprod()
    assert ac.shape == (1000,) and abs(float(ac[0]) - 0.99915) < 1e-6 and float(ac[-1]) < 0.005


def test_official_schedule_for_every_step_count_matches_comfyui_ddim_uniform_and_its_start_is_recognised():
    """Regression: the schedule used to be cut to `steps` entries (7 steps -> top t = 853), neither the official
    nor ComfyUI's ddim_uniform (both: range(1, 1000, 1000 // steps), top t = 995)."""
    for steps in range(1, 1001):
        ts = ddim_uniform_timesteps(steps)
        assert ts == list(range(1, 1000, 1000 // steps)), steps
        assert official_start(ts[-1], ts[-2] if len(ts) > 1 else 0), steps
        if len(ts) > 2:
            assert not official_start(ts[-2], ts[-3]), steps       # a run started later is not from pure noise
    assert ddim_uniform_timesteps(7)[-1] == 995 and len(ddim_uniform_timesteps(7)) == 8
    assert not official_start(491, 481)                            # 50 steps at denoise 0.5: img2img, not x_T
    assert not official_start(981, 951) and not official_start(999, 0)
