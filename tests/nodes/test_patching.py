"""apply_magicpose inside ComfyUI's samplers, on the factory checkpoints (CPU, tiny UNet, 64x64 frames)."""
from __future__ import annotations

import pytest
import torch
from support.figures import record
from support.magicpose_env import comfy_models, conditioning, pose_maps, reference_latent, text_context

pytestmark = [pytest.mark.comfy]

SIZE = 64


@pytest.fixture(scope="module")
def models(pack, factory_files):
    return comfy_models(pack, factory_files["magicpose"])


@pytest.fixture
def P(pack):
    return pack.nodes.patching


@pytest.fixture
def made_by_sampler(pack, monkeypatch) -> list:
    """The patched models MagicPoseSample builds internally (to read their MagicPoseRun afterwards)."""
    made = []
    orig = pack.nodes.sampling.apply_magicpose

    def spy(*a, **k):
        made.append(orig(*a, **k))
        return made[-1]

    monkeypatch.setattr(pack.nodes.sampling, "apply_magicpose", spy)
    return made


def _reference(pack, size=SIZE):
    return pack.magicpose_core.reference.MagicPoseReference.from_latent(reference_latent(size))


class Probe:
    """An attn1_patch registered after MagicPose's: sees the keys/values MagicPose handed to attention."""

    def __init__(self):
        self.calls = []  # (cond_or_uncond, site, own tokens, key tokens)

    def __call__(self, n, context, value, extra_options):
        block = extra_options.get("block")
        site = (block[0], block[1], extra_options.get("block_index", 0)) if block else None
        self.calls.append((tuple(extra_options.get("cond_or_uncond", ())), site, n.shape[1], context.shape[1]))
        return n, context, value


def _sample(m, positive, negative, n=2, steps=3, seed=0, callback=None, poses=None):
    import comfy.sample

    latent = torch.zeros((n, 4, SIZE // 8, SIZE // 8))
    noise = comfy.sample.prepare_noise(latent, seed)
    return comfy.sample.sample(m, noise, steps, 7.0, "ddim", "ddim_uniform", positive, negative, latent,
                               callback=callback, disable_pbar=True, seed=seed)


def test_all_16_sites_write_and_read_every_step_never_on_uncond(pack, models, P):
    unet, mp = models
    ctx = text_context()
    m = P.apply_magicpose(unet, mp, _reference(pack), P.MagicPoseOptions(strict_sites=True))
    probe = Probe()
    m.set_model_attn1_patch(probe)
    steps = 4
    pos = P.attach_pose_control(conditioning(ctx), mp.pose_controlnet, pose_maps(2))
    _sample(m, pos, conditioning(ctx), steps=steps)
    run = P.magicpose_run(m)
    sites = set(pack.magicpose_core.config.SITES)

    assert run.stats.acm_calls == steps
    assert set(run.stats.writes) == sites and all(v == steps for v in run.stats.writes.values())
    assert set(run.stats.reads) == sites and all(v == steps for v in run.stats.reads.values())
    cond = [c for c in probe.calls if c[0] == (0,)]
    uncond = [c for c in probe.calls if c[0] == (1,)]
    assert len(cond) == len(uncond) == 16 * steps  # ControlNet on positive only: separate cond / uncond calls
    assert all(k == 2 * own for _, _, own, k in cond)  # own tokens + the same number of reference tokens
    assert all(k == own for _, _, own, k in uncond)    # plain SD1.5 self-attention
    assert {c[1] for c in cond} == sites
    record("sites written/read per step (cond only)", f"{len(run.stats.writes)}/{len(run.stats.reads)}")


def test_input_model_untouched(pack, models, P):
    unet, mp = models
    before_options = repr(unet.model_options)
    before_wrappers = repr(unet.wrappers)
    before_add = dict(unet.additional_models)
    ctx = text_context()
    baseline = _sample(unet, conditioning(ctx), conditioning(ctx), seed=3)
    m = P.apply_magicpose(unet, mp, _reference(pack))
    patched = _sample(m, conditioning(ctx), conditioning(ctx), seed=3)
    assert repr(unet.model_options) == before_options
    assert repr(unet.wrappers) == before_wrappers
    assert unet.additional_models == before_add
    again = _sample(unet, conditioning(ctx), conditioning(ctx), seed=3)
    assert torch.equal(baseline, again)
    assert not torch.allclose(baseline, patched)


def test_bank_computed_once_per_step_across_frame_chunks(pack, models, P, made_by_sampler):
    unet, mp = models
    ctx = text_context()
    steps, n, k = 3, 5, 2
    out = pack.nodes.sampling.magicpose_sample(unet, mp, {"samples": reference_latent(SIZE)}, pose_maps(n),
                                                conditioning(ctx), conditioning(ctx), 0, steps, 7.0, "ddim",
                                                "ddim_uniform", frame_batch=k)["samples"]
    run = P.magicpose_run(made_by_sampler[0])
    chunks = -(-n // k)
    assert out.shape == (n, 4, SIZE // 8, SIZE // 8)
    assert run.stats.acm_calls == steps                 # not steps x frames, not steps x chunks
    assert run.stats.hits == steps * (chunks - 1)
    assert len(run.cache) == 0                          # released at the end
    record(f"appearance-model calls, {n} frames in chunks of {k}, {steps} steps", run.stats.acm_calls)


def test_bank_once_per_step_per_distinct_context(pack, models, P):
    unet, mp = models
    c1, c2 = text_context(0), text_context(5)
    m = P.apply_magicpose(unet, mp, _reference(pack))
    steps = 2
    _sample(m, [[c1, {}], [c2, {}]], conditioning(c1), steps=steps)
    assert P.magicpose_run(m).stats.acm_calls == 2 * steps


def test_shared_noise_identical_poses_give_identical_frames(pack, models):
    unet, mp = models
    ctx = text_context()
    same = pose_maps(1).expand(3, -1, -1, -1).contiguous()
    sample = pack.nodes.sampling.magicpose_sample
    args = (unet, mp, {"samples": reference_latent(SIZE)}, same, conditioning(ctx), conditioning(ctx), 11, 2, 7.0,
            "ddim", "ddim_uniform")
    shared = sample(*args, frame_batch=2, shared_noise=True)["samples"]
    # frames 0-1 share a chunk, frame 2 is alone in the next one: equal up to batch-size-dependent rounding
    for i in (1, 2):
        assert torch.allclose(shared[0], shared[i], rtol=1e-4, atol=1e-3)
    own = sample(*args, frame_batch=2, shared_noise=False)["samples"]
    assert (own[0] - own[1]).abs().max() > 1e-2


def test_composes_with_another_attn1_patch_and_a_lora(pack, models, P, factory_files):
    import comfy.sd

    unet, mp = models
    ctx = text_context()
    seen = []

    def other(n, context, value, extra_options):
        seen.append(context.shape[1])
        return n, context, value

    base = unet.clone()
    base.set_model_attn1_patch(other)
    # a LoRA on the main UNet's self-attention K/V projections (the bank goes through them)
    lora = {}
    g = torch.Generator().manual_seed(0)
    for blk in ("input_blocks.1.1", "output_blocks.11.1"):
        for proj in ("to_k", "to_v"):
            key = f"lora_unet_{blk.replace('.', '_')}_transformer_blocks_0_attn1_{proj}"
            lora[f"{key}.lora_up.weight"] = torch.randn((320, 4), generator=g) * 0.5
            lora[f"{key}.lora_down.weight"] = torch.randn((4, 320), generator=g) * 0.5
    lora_model, _ = comfy.sd.load_lora_for_models(base, None, lora, 1.0, 0.0)
    m = P.apply_magicpose(lora_model, mp, _reference(pack), P.MagicPoseOptions(strict_sites=True))
    with_lora = _sample(m, conditioning(ctx), conditioning(ctx), seed=2)
    m2 = P.apply_magicpose(base, mp, _reference(pack))
    without = _sample(m2, conditioning(ctx), conditioning(ctx), seed=2)
    assert len(P.magicpose_run(m).stats.reads) == 16
    assert seen and max(seen) > min(seen)  # the other patch ran, before and after K/V extension
    assert not torch.allclose(with_lora, without)


def test_interrupt_frees_banks_and_next_run_succeeds(pack, models, P):
    import comfy.model_management as mm

    unet, mp = models
    ctx = text_context()
    m = P.apply_magicpose(unet, mp, _reference(pack))
    run = P.magicpose_run(m)

    def interrupt_at_2(step, x0, x, total):
        if step == 1:
            mm.interrupt_current_processing(True)

    with pytest.raises(mm.InterruptProcessingException):
        _sample(m, conditioning(ctx), conditioning(ctx), steps=4, callback=interrupt_at_2)
    assert len(run.cache) == 0 and run.stats.acm_calls >= 1
    mm.interrupt_current_processing(False)
    out = _sample(m, conditioning(ctx), conditioning(ctx), steps=2)
    assert torch.isfinite(out).all() and len(run.cache) == 0


def test_interrupt_inside_chunked_sampler_releases_scope(pack, models, P, made_by_sampler):
    import comfy.model_management as mm

    unet, mp = models
    ctx = text_context()
    base = unet.clone()
    count = {"n": 0}

    def cfg(args):  # interrupts during the second chunk
        count["n"] += 1
        if count["n"] == 4:
            mm.interrupt_current_processing(True)
        return args["uncond"] + (args["cond"] - args["uncond"]) * args["cond_scale"]

    base.set_model_sampler_cfg_function(cfg)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            pack.nodes.sampling.magicpose_sample(base, mp, {"samples": reference_latent(SIZE)}, pose_maps(4),
                                                 conditioning(ctx), conditioning(ctx), 0, 3, 7.0, "ddim",
                                                 "ddim_uniform", frame_batch=2)
    finally:
        mm.interrupt_current_processing(False)
    run = P.magicpose_run(made_by_sampler[0])
    assert len(run.cache) == 0 and run._scopes == 0


def test_reference_strength_zero_is_plain_sd15_and_window(pack, models, P):
    unet, mp = models
    ctx = text_context()
    plain = _sample(unet, conditioning(ctx), conditioning(ctx), seed=4)
    off = _sample(P.apply_magicpose(unet, mp, _reference(pack), P.MagicPoseOptions(reference_strength=0.0)),
                  conditioning(ctx), conditioning(ctx), seed=4)
    assert torch.allclose(plain, off, atol=1e-5)
    half = P.apply_magicpose(unet, mp, _reference(pack), P.MagicPoseOptions(reference_strength=0.5))
    full = P.apply_magicpose(unet, mp, _reference(pack))
    r_half = _sample(half, conditioning(ctx), conditioning(ctx), seed=4)
    r_full = _sample(full, conditioning(ctx), conditioning(ctx), seed=4)
    d_half, d_full = float((r_half - plain).abs().mean()), float((r_full - plain).abs().mean())
    assert 0 < d_half < d_full
    late = P.apply_magicpose(unet, mp, _reference(pack), P.MagicPoseOptions(reference_start=0.5))
    _sample(late, conditioning(ctx), conditioning(ctx), steps=4)
    stats = P.magicpose_run(late).stats
    assert stats.bank_calls == 2 and stats.acm_calls == 2  # only the second half of the schedule


def test_weighted_attention_at_strength_one_equals_plain_extension(pack, models, P):
    """The strength path (attn1 replace with a log-bias) reduces to the official concat at bias 0."""
    unet, mp = models
    ctx = text_context()
    full = _sample(P.apply_magicpose(unet, mp, _reference(pack)), conditioning(ctx), conditioning(ctx), seed=5)
    near = _sample(P.apply_magicpose(unet, mp, _reference(pack), P.MagicPoseOptions(reference_strength=0.9999)),
                   conditioning(ctx), conditioning(ctx), seed=5)
    assert torch.allclose(full, near, atol=1e-3)


def test_mixed_cond_uncond_batch_equals_separate_calls(pack, models, P):
    """When a caller batches cond and uncond rows into one UNet call, cond rows read the bank exactly as in a
    separate call and uncond rows stay plain SD1.5 (own tokens duplicated: softmax-invariant)."""
    import comfy.sample
    import comfy.samplers

    unet, mp = models
    ctx = text_context()
    calls, caps = [], {}

    def capture(tag):
        def fn(args):
            caps[tag] = (args["cond_denoised"].clone(), args["uncond_denoised"].clone())
            return args["uncond"] + (args["cond"] - args["uncond"]) * args["cond_scale"]
        return fn

    def one_at_a_time(a):  # the cond list position is what labels rows cond (0) or uncond (1)
        cond, uncond = a["conds"]

        def run(conds):
            return comfy.samplers.calc_cond_batch(a["model"], conds, a["input"], a["sigma"], a["model_options"])
        return [run([cond, None])[0], run([None, uncond])[1]]

    def spy(apply_model, args):
        calls.append(list(args["cond_or_uncond"]))
        return apply_model(args["input"], args["timestep"], **args["c"])

    for tag in ("mixed", "separate", "plain"):
        base = unet.clone()
        base.set_model_sampler_cfg_function(capture(tag))
        m = base if tag == "plain" else P.apply_magicpose(base, mp, _reference(pack))
        if tag == "mixed":
            m.set_model_unet_function_wrapper(spy)  # no ControlNet: ComfyUI batches cond and uncond together
        if tag == "separate":
            m.model_options["sampler_calc_cond_batch_function"] = one_at_a_time
        latent = torch.zeros((2, 4, SIZE // 8, SIZE // 8))
        comfy.sample.sample(m, comfy.sample.prepare_noise(latent, 6), 1, 7.0, "euler", "simple", conditioning(ctx),
                            conditioning(ctx), latent, sigmas=torch.tensor([5.0, 0.0]), disable_pbar=True)
    assert calls and all(len(c) == 2 for c in calls)
    (mc, mu), (sc, su), (pc, pu) = caps["mixed"], caps["separate"], caps["plain"]
    scale = float(pc.abs().max())
    assert float((mc - sc).abs().max()) <= 1e-5 * scale * 10
    assert float((mu - pu).abs().max()) <= 1e-5 * scale * 10   # uncond rows: plain SD1.5
    assert float((su - pu).abs().max()) <= 1e-5 * scale * 10
    assert float((mc - pc).abs().max()) > 1e-2 * scale          # cond rows did read the bank


def test_reference_of_another_size_is_resized_with_a_warning(pack, models, caplog):
    import logging

    unet, mp = models
    ctx = text_context()
    small = {"samples": reference_latent(32)}  # 32x32 reference, 64x64 poses
    with caplog.at_level(logging.WARNING, logger="MagicPose"):
        out = pack.nodes.sampling.magicpose_sample(unet, mp, small, pose_maps(1), conditioning(ctx), conditioning(ctx),
                                                   0, 1, 7.0, "ddim", "ddim_uniform")["samples"]
    assert out.shape == (1, 4, SIZE // 8, SIZE // 8)
    assert any("reference is 32x32 but the frames are 64x64" in r.getMessage() for r in caplog.records)


def test_bad_pose_batches_give_clear_errors(pack, models):
    unet, mp = models
    ctx = text_context()
    sample = pack.nodes.sampling.magicpose_sample
    for poses, words in ((torch.zeros(1, 60, 64, 3), "multiples of 8"), (torch.zeros(0, 64, 64, 3), "empty"),
                         (torch.zeros(1, 64, 64, 4), "(N, H, W, 3)")):
        with pytest.raises(ValueError) as e:
            sample(unet, mp, {"samples": reference_latent(SIZE)}, poses, conditioning(ctx), conditioning(ctx),
                   0, 1, 7.0, "ddim", "ddim_uniform")
        assert words in str(e.value)


def test_non_sd15_model_is_refused(pack, models, P):
    import types

    unet, _ = models
    P.check_sd15(unet)  # the factory SD1.5 passes
    for cfg in ({"context_dim": 2048, "model_channels": 320, "adm_in_channels": 2816},   # SDXL
                {"context_dim": 1024, "model_channels": 320}):                          # SD2
        fake = types.SimpleNamespace(model=types.SimpleNamespace(model_config=types.SimpleNamespace(unet_config=cfg)))
        with pytest.raises(ValueError, match="needs an SD1.5 MODEL"):
            P.check_sd15(fake)
