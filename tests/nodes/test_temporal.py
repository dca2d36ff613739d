"""Temporal sources inside ComfyUI's samplers (factory checkpoints, CPU, tiny UNet, 64x64 frames): where the
anchor tokens go, that batching and chunking do not change the result, and that the option off changes nothing."""
from __future__ import annotations

import pytest
import torch
from support.figures import record
from support.magicpose_env import comfy_models, conditioning, pose_maps, reference_latent, text_context

pytestmark = [pytest.mark.comfy]

SIZE = 64
FRAMES = 8


@pytest.fixture(scope="module")
def models(pack, factory_files):
    return comfy_models(pack, factory_files["magicpose"])


@pytest.fixture
def P(pack):
    return pack.nodes.patching


@pytest.fixture
def T(pack):
    return pack.nodes.temporal


def _reference(pack):
    return pack.magicpose_core.reference.MagicPoseReference.from_latent(reference_latent(SIZE))


def _options(pack, mode="both", strength=1.0, start=0.0, end=1.0):
    return pack.magicpose_core.temporal.TemporalOptions(mode, strength, start, end)


class Probe:
    """An attn1_patch registered last: sees the keys/values handed to attention, per call and site."""

    def __init__(self):
        self.calls = []  # (cond_or_uncond, site, own tokens, key tokens)

    def __call__(self, n, context, value, extra_options):
        block = extra_options.get("block")
        site = (block[0], block[1], extra_options.get("block_index", 0)) if block else None
        self.calls.append((tuple(extra_options.get("cond_or_uncond", ())), site, n.shape[1], context.shape[1]))
        return n, context, value


def _patched(pack, models, temporal, strict=True, **opts):
    P, T = pack.nodes.patching, pack.nodes.temporal
    unet, mp = models
    m = P.apply_magicpose(unet, mp, _reference(pack), P.MagicPoseOptions(strict_sites=strict, **opts))
    return T.add_temporal_sources(m, temporal, strict_sites=strict)


def _noise(n, seed=0):
    import comfy.sample

    return comfy.sample.prepare_noise(torch.zeros((1, 4, SIZE // 8, SIZE // 8)), seed).expand(n, -1, -1, -1)


def _sample(m, pos, neg, noise, steps=3, sampler="ddim", scheduler="ddim_uniform"):
    import comfy.sample

    latent = torch.zeros_like(noise)
    return comfy.sample.sample(m, noise.contiguous(), steps, 7.0, sampler, scheduler, pos, neg, latent,
                               disable_pbar=True, seed=0)


def _rel(a, b) -> float:
    return float((a - b).abs().max()) / float(b.abs().max())


def test_anchor_tokens_on_conditional_rows_at_all_16_sites_never_on_unconditional(pack, models, T):
    unet, mp = models
    ctx = text_context()
    m = _patched(pack, models, _options(pack, "both"))
    probe = Probe()
    m.set_model_attn1_patch(probe)
    steps, n = 3, 4
    pos = pack.nodes.patching.attach_pose_control(conditioning(ctx), mp.pose_controlnet, pose_maps(n))
    _sample(m, pos, conditioning(ctx), _noise(n), steps=steps)
    sites = set(pack.magicpose_core.config.SITES)
    cond = [c for c in probe.calls if c[0] == (0,)]
    uncond = [c for c in probe.calls if c[0] == (1,)]
    assert len(cond) == len(uncond) == 16 * steps
    assert {c[1] for c in cond} == sites
    assert all(k == own + own + 2 * own for _, _, own, k in cond)  # own, reference, first, previous
    assert all(k == own for _, _, own, k in uncond)                 # plain SD1.5
    stats = T.temporal_run(m).stats
    assert set(stats.anchored_rows) == sites
    assert all(v == (n - 1) * steps for v in stats.anchored_rows.values())  # every frame but frame 0, every step
    assert stats.anchor_calls == steps and stats.plain_calls == steps
    record("temporal: anchor tokens per conditional row per site ('both')", "2 x own tokens (own + ref + 2 own)")


def _video(pack, models, temporal, frame_batch=0, frames=FRAMES, steps=2, seed=0, **opts):
    """The frames through MagicPose Apply's path with the sampler's frame chunks: (N, 4, 8, 8) latents, and the run."""
    unet, mp = models
    ctx = text_context()
    m = _patched(pack, models, temporal, frame_batch=frame_batch, **opts)
    pos = pack.nodes.patching.attach_pose_control(conditioning(ctx), mp.pose_controlnet, pose_maps(frames))
    out = _sample(m, pos, conditioning(ctx), _noise(frames, seed), steps=steps)
    return out, pack.nodes.temporal.temporal_run(m)


def test_frame_batch_1_2_4_8_give_the_same_frames(pack, models):
    """'both' exercises the first and the previous anchor, read in the same call and across chunks. The floor is
    fp32 rounding that depends on the batch size (the same frames without temporal sources, frame_batch 1 vs one
    batch); the machinery itself is exact (tests/core/test_temporal.py: 1e-12 in float64)."""
    temporal = _options(pack, "both", strength=0.8)
    whole, run = _video(pack, models, temporal)
    assert run.stats.peak_cache_bytes == 0                       # one call holds every frame: nothing recorded
    plain, _ = _video(pack, models, _options(pack, "off"))
    plain_1, _ = _video(pack, models, _options(pack, "off"), frame_batch=1)
    floor = _rel(plain_1, plain)
    worst = 0.0
    for fb in (1, 2, 4, 8):
        out, run = _video(pack, models, temporal, frame_batch=fb)
        rel = _rel(out, whole)
        worst = max(worst, rel)
        assert rel <= max(1e-6, 4 * floor), f"frame_batch {fb}: {rel:.2e} (floor {floor:.2e})"
        if fb < FRAMES:
            assert run.stats.cached_reads > 0 and run.stats.peak_cache_bytes > 0
    assert _rel(whole[:1], plain[:1]) <= max(1e-6, 4 * floor)     # frame 0 has no anchor
    assert _rel(whole[1:], plain[1:]) > 1e-3                       # the others read one
    record("temporal 'both': max |frame_batch k - one batch| / max|x|, k = 1, 2, 4, 8 (8 frames, 2 steps, fp32)",
           f"{worst:.2e}; floor without temporal sources (frame_batch 1 vs one batch) {floor:.2e}")


def test_strength_zero_is_off_window_and_strength_scale_the_effect(pack, models):
    plain, _ = _video(pack, models, _options(pack, "off"), frames=3)
    zero, run = _video(pack, models, _options(pack, "first", strength=0.0), frames=3)
    assert run is None and torch.equal(zero, plain)            # strength 0 registers nothing
    weak, _ = _video(pack, models, _options(pack, "first", strength=0.3), frames=3)
    full, _ = _video(pack, models, _options(pack, "first", strength=1.0), frames=3)
    assert 0 < _rel(weak[1:], plain[1:]) < _rel(full[1:], plain[1:])
    late, run = _video(pack, models, _options(pack, "first", start=0.5), frames=3, steps=4)
    assert run.stats.anchor_calls == 2 and run.stats.plain_calls == 6  # cond calls of the 2nd half; every uncond call


def test_mixed_cond_uncond_call_keeps_unconditional_rows_plain(pack, models):
    """Without a ControlNet ComfyUI batches cond and uncond rows in one call: the anchor slots of unconditional rows
    get exactly zero weight, so they equal the plain SD1.5 prediction; conditional rows read their anchors."""
    import comfy.sample

    unet, _ = models
    ctx = text_context()
    caps, calls = {}, []

    def capture(tag):
        def fn(args):
            caps[tag] = (args["cond_denoised"].clone(), args["uncond_denoised"].clone())
            return args["uncond"] + (args["cond"] - args["uncond"]) * args["cond_scale"]
        return fn

    def spy(apply_model, args):
        calls.append(list(args["cond_or_uncond"]))
        return apply_model(args["input"], args["timestep"], **args["c"])

    for tag in ("temporal", "bank only", "plain"):
        base = unet.clone()
        base.set_model_sampler_cfg_function(capture(tag))
        m = base
        if tag != "plain":
            m = pack.nodes.patching.apply_magicpose(base, models[1], _reference(pack))
            m = pack.nodes.temporal.add_temporal_sources(m, _options(pack, "both" if tag == "temporal" else "off"))
        m.set_model_unet_function_wrapper(spy)
        latent = torch.zeros((3, 4, SIZE // 8, SIZE // 8))
        comfy.sample.sample(m, comfy.sample.prepare_noise(latent, 6), 1, 7.0, "euler", "simple", conditioning(ctx),
                            conditioning(ctx), latent, sigmas=torch.tensor([5.0, 0.0]), disable_pbar=True)
    assert calls and all(sorted(c) == [0, 1] for c in calls)
    (tc, tu), (bc, _), (_, pu) = caps["temporal"], caps["bank only"], caps["plain"]
    assert _rel(tu, pu) <= 1e-5                       # unconditional rows: plain SD1.5
    assert _rel(tc[:1], bc[:1]) <= 1e-5               # frame 0: no anchor
    assert _rel(tc[1:], bc[1:]) > 1e-3                # frames 1, 2 read theirs


def test_anchor_states_parked_on_cpu_and_released_after_an_interrupt(pack, models, T):
    import comfy.model_management as mm

    parked, run = _video(pack, models, _options(pack, "both"), frame_batch=2, frames=4, park_bank_on_cpu=True)
    kept, _ = _video(pack, models, _options(pack, "both"), frame_batch=2, frames=4)
    assert _rel(parked, kept) <= 1e-6 and run.stats.peak_cache_bytes > 0 and len(run.cache) == 0

    unet, mp = models
    ctx = text_context()
    m = _patched(pack, models, _options(pack, "previous"), frame_batch=1)
    trun = T.temporal_run(m)

    def interrupt(step, x0, x, total):
        mm.interrupt_current_processing(True)

    pos = pack.nodes.patching.attach_pose_control(conditioning(ctx), mp.pose_controlnet, pose_maps(3))
    try:
        with pytest.raises(mm.InterruptProcessingException):
            import comfy.sample

            latent = torch.zeros((3, 4, SIZE // 8, SIZE // 8))
            comfy.sample.sample(m, _noise(3).contiguous(), 3, 7.0, "ddim", "ddim_uniform", pos, conditioning(ctx),
                                latent, callback=interrupt, disable_pbar=True, seed=0)
    finally:
        mm.interrupt_current_processing(False)
    assert len(trun.cache) == 0 and trun.stats.recorded > 0
    again, _ = _video(pack, models, _options(pack, "previous"), frame_batch=1, frames=3)
    assert torch.isfinite(again).all()


def test_sampler_node_path_and_a_frame_range_with_the_anchor_pose(pack, models):
    """MagicPose Sampler with temporal 'first': frames 2-3 rendered on their own with the video's first pose as
    anchor_pose equal frames 2-3 of the whole video (what a render split over servers needs)."""
    unet, mp = models
    ctx = text_context()
    temporal = _options(pack, "first", strength=0.8)
    poses = pose_maps(4)
    sample = pack.nodes.sampling.magicpose_sample
    args = (unet, mp, {"samples": reference_latent(SIZE)})
    rest = (conditioning(ctx), conditioning(ctx), 0, 2, 7.0, "ddim", "ddim_uniform")
    whole = sample(*args, poses, *rest, frame_batch=2, temporal=temporal)["samples"]
    part = sample(*args, poses[2:], *rest, frame_batch=2, temporal=temporal, anchor_pose=poses[:1])["samples"]
    alone = sample(*args, poses[2:], *rest, frame_batch=2, temporal=temporal)["samples"]
    assert part.shape == (2, 4, SIZE // 8, SIZE // 8)
    assert _rel(part, whole[2:]) <= 5e-5          # fp32 batch-size floor ~1.5e-5 (other chunk composition)
    assert _rel(alone, whole[2:]) > 1e-3          # without it the range anchors on its own first frame
    exact = sample(*args, poses[2:], *rest, frame_batch=2, temporal=temporal, anchor_pose=poses[:2])["samples"]
    assert torch.equal(exact, whole[2:])          # the first frame_batch maps: the same chunks, bit-identical
    with pytest.raises(ValueError, match="same size"):
        sample(*args, poses[2:], *rest, temporal=temporal, anchor_pose=pose_maps(1, 32))
