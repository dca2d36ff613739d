"""apply_magicpose inside ComfyUI's samplers, on the factory checkpoints (CPU, tiny UNet, 64x64 frames)."""
from __future__ import annotations

import pytest
import torch
from support.figures import record
from support.magicpose_env import (
    AttnProbe,
    comfy_models,
    conditioning,
    magicpose_reference,
    pose_maps,
    reference_latent,
    text_context,
)

pytestmark = [pytest.mark.comfy]

SIZE = 64


@pytest.fixture(scope="module")
def models(pack, factory_files):
    return comfy_models(pack, factory_files["magicpose"])


@pytest.fixture
def P(pack):
    return pack.nodes.patch.model_patch


@pytest.fixture
def made_by_sampler(pack, monkeypatch) -> list:
    """The patched models MagicPoseSample builds internally (to read their MagicPoseRun afterwards)."""
    made = []
    orig = pack.nodes.patch.run_sampling.apply_magicpose

    def spy(*a, **k):
        made.append(orig(*a, **k))
        return made[-1]

    monkeypatch.setattr(pack.nodes.patch.run_sampling, "apply_magicpose", spy)
    return made


def _sample(m, positive, negative, n=2, steps=3, seed=0, callback=None, poses=None):
    import comfy.sample

    latent = torch.zeros((n, 4, SIZE // 8, SIZE // 8))
    noise = comfy.sample.prepare_noise(latent, seed)
    return comfy.sample.sample(m, noise, steps, 7.0, "ddim", "ddim_uniform", positive, negative, latent,
                               callback=callback, disable_pbar=True, seed=seed)


def test_all_16_sites_write_and_read_every_step_never_on_uncond(pack, models, P):
    unet, mp = models
    ctx = text_context()
    m = P.apply_magicpose(unet, mp, magicpose_reference(pack), P.MagicPoseOptions(strict_sites=True))
    probe = AttnProbe()
    m.set_model_attn1_patch(probe)
    steps = 4
    pos = P.attach_pose_control(conditioning(ctx), mp.pose_controlnet, pose_maps(2))
    _sample(m, pos, conditioning(ctx), steps=steps)
    run = P.magicpose_run(m)
    sites = set(pack.magicpose_core.model.constants.SITES)

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
    m = P.apply_magicpose(unet, mp, magicpose_reference(pack))
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
    out = pack.nodes.patch.run_sampling.magicpose_sample(unet, mp, {"samples": reference_latent(SIZE)}, pose_maps(n),
                                                conditioning(ctx), conditioning(ctx), 0, steps, 7.0, "ddim",
                                                "ddim_uniform", frame_batch=k)["samples"]
    run = P.magicpose_run(made_by_sampler[0])
    chunks = -(-n // k)
    assert out.shape == (n, 4, SIZE // 8, SIZE // 8)
    assert run.stats.acm_calls == steps                 # not steps x frames, not steps x chunks
    assert run.stats.hits == steps * (chunks - 1)
    assert len(run.cache) == 0 and not run.chunks.controls   # released at the end
    # step-major chunks: the cache never held more than the current step's bank
    assert run.stats.bank_bytes > 0 and run.stats.peak_cache_bytes == run.stats.bank_bytes
    record(f"appearance-model calls, {n} frames in chunks of {k}, {steps} steps", run.stats.acm_calls)
    record(f"bank cache peak / one bank, {n} frames in chunks of {k}, {steps} steps",
           f"{run.stats.peak_cache_bytes} / {run.stats.bank_bytes} bytes")


def test_bank_once_per_step_per_distinct_context(pack, models, P):
    unet, mp = models
    c1, c2 = text_context(0), text_context(5)
    m = P.apply_magicpose(unet, mp, magicpose_reference(pack))
    steps = 2
    _sample(m, [[c1, {}], [c2, {}]], conditioning(c1), steps=steps)
    assert P.magicpose_run(m).stats.acm_calls == 2 * steps


def test_shared_noise_identical_poses_give_identical_frames(pack, models):
    unet, mp = models
    ctx = text_context()
    same = pose_maps(1).expand(3, -1, -1, -1).contiguous()
    sample = pack.nodes.patch.run_sampling.magicpose_sample
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
    m = P.apply_magicpose(lora_model, mp, magicpose_reference(pack), P.MagicPoseOptions(strict_sites=True))
    with_lora = _sample(m, conditioning(ctx), conditioning(ctx), seed=2)
    m2 = P.apply_magicpose(base, mp, magicpose_reference(pack))
    without = _sample(m2, conditioning(ctx), conditioning(ctx), seed=2)
    assert len(P.magicpose_run(m).stats.reads) == 16
    assert seen and max(seen) > min(seen)  # the other patch ran, before and after K/V extension
    assert not torch.allclose(with_lora, without)


def test_interrupt_frees_banks_and_next_run_succeeds(pack, models, P):
    import comfy.model_management as mm

    unet, mp = models
    ctx = text_context()
    m = P.apply_magicpose(unet, mp, magicpose_reference(pack))
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

    def cfg(args):  # after the second step: the next step's first chunk check raises
        count["n"] += 1
        if count["n"] == 2:
            mm.interrupt_current_processing(True)
        return args["uncond"] + (args["cond"] - args["uncond"]) * args["cond_scale"]

    base.set_model_sampler_cfg_function(cfg)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            pack.nodes.patch.run_sampling.magicpose_sample(base, mp, {"samples": reference_latent(SIZE)}, pose_maps(4),
                                                 conditioning(ctx), conditioning(ctx), 0, 3, 7.0, "ddim",
                                                 "ddim_uniform", frame_batch=2)
    finally:
        mm.interrupt_current_processing(False)
    run = P.magicpose_run(made_by_sampler[0])
    assert count["n"] == 2                              # stopped between the chunks of the third step
    assert len(run.cache) == 0 and not run.chunks.controls


def test_reference_strength_zero_is_plain_sd15_and_window(pack, models, P):
    unet, mp = models
    ctx = text_context()
    plain = _sample(unet, conditioning(ctx), conditioning(ctx), seed=4)
    off = _sample(P.apply_magicpose(unet, mp, magicpose_reference(pack), P.MagicPoseOptions(reference_strength=0.0)),
                  conditioning(ctx), conditioning(ctx), seed=4)
    assert torch.allclose(plain, off, atol=1e-5)
    half = P.apply_magicpose(unet, mp, magicpose_reference(pack), P.MagicPoseOptions(reference_strength=0.5))
    full = P.apply_magicpose(unet, mp, magicpose_reference(pack))
    r_half = _sample(half, conditioning(ctx), conditioning(ctx), seed=4)
    r_full = _sample(full, conditioning(ctx), conditioning(ctx), seed=4)
    d_half, d_full = float((r_half - plain).abs().mean()), float((r_full - plain).abs().mean())
    assert 0 < d_half < d_full
    late = P.apply_magicpose(unet, mp, magicpose_reference(pack), P.MagicPoseOptions(reference_start=0.5))
    _sample(late, conditioning(ctx), conditioning(ctx), steps=4)
    stats = P.magicpose_run(late).stats
    assert stats.bank_calls == 2 and stats.acm_calls == 2  # only the second half of the schedule


def test_weighted_attention_at_strength_one_equals_plain_extension(pack, models, P):
    """The strength path (attn1 replace with a log-bias) reduces to the official concat at bias 0."""
    unet, mp = models
    ctx = text_context()
    full = _sample(P.apply_magicpose(unet, mp, magicpose_reference(pack)), conditioning(ctx), conditioning(ctx), seed=5)
    near = P.apply_magicpose(unet, mp, magicpose_reference(pack), P.MagicPoseOptions(reference_strength=0.9999))
    near = _sample(near, conditioning(ctx), conditioning(ctx), seed=5)
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
        m = base if tag == "plain" else P.apply_magicpose(base, mp, magicpose_reference(pack))
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
        out = pack.nodes.patch.run_sampling.magicpose_sample(
            unet, mp, small, pose_maps(1), conditioning(ctx), conditioning(ctx),
                                                   0, 1, 7.0, "ddim", "ddim_uniform")["samples"]
    assert out.shape == (1, 4, SIZE // 8, SIZE // 8)
    assert any("reference is 32x32 but the frames are 64x64" in r.getMessage() for r in caplog.records)


def test_bad_pose_batches_give_clear_errors(pack, models):
    unet, mp = models
    ctx = text_context()
    sample = pack.nodes.patch.run_sampling.magicpose_sample
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


# --- official schedule from any sampler node, step-major chunks, NOISE input, autocast ---------------------------


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max()) / float(b.abs().max())


def _register(pack):
    """The pack's on_load, as ComfyUI runs it at start-up."""
    import asyncio

    asyncio.run(pack.nodes.MagicPoseExtension().on_load())


def test_official_scheduler_registered_once_in_core_tables_at_load(pack):
    import comfy.samplers

    name = "magicpose_official"
    before = [n for n in comfy.samplers.SCHEDULER_NAMES if n != name]
    for _ in range(2):  # idempotent
        _register(pack)
    assert comfy.samplers.SCHEDULER_NAMES.count(name) == 1 and comfy.samplers.KSampler.SCHEDULERS.count(name) == 1
    assert [n for n in comfy.samplers.SCHEDULER_NAMES if n != name] == before   # others keep their place
    assert name in comfy.samplers.SCHEDULER_HANDLERS
    options = pack.nodes.patch.official_schedule.scheduler_names()
    assert options.count(name) == 1
    import comfy.model_sampling

    class MS(comfy.model_sampling.ModelSamplingDiscrete, comfy.model_sampling.EPS):
        pass

    s = comfy.samplers.calculate_sigmas(MS(), name, 10)
    ddim = comfy.samplers.calculate_sigmas(MS(), "ddim_uniform", 10)
    assert torch.equal(s[:-1], ddim[:-1]) and float(ddim[-1]) == 0.0
    assert abs(float(s[-1]) - float(MS().sigmas[0])) < 1e-7          # ends at sigma(t=0), not 0


def test_official_scales_only_on_the_official_schedule(pack):
    import math

    import comfy.model_sampling
    import comfy.samplers

    class MS(comfy.model_sampling.ModelSamplingDiscrete, comfy.model_sampling.EPS):
        pass

    ms = MS()
    S = pack.nodes.patch.official_schedule
    full = S.official_sigmas(ms, 50)
    start, end = S.official_scales(ms, full)
    assert math.isclose(start, math.sqrt(1 + float(full[0]) ** 2) / float(full[0]), rel_tol=1e-6)
    assert math.isclose(1 / start, 0.99711, abs_tol=1e-4)           # ComfyUI alone: x_T x 0.9971 at t = 981
    assert math.isclose(end, math.sqrt(0.99915), rel_tol=1e-4)       # DDPM space at alphas_cumprod[0]
    assert S.official_scales(ms, full[:26]) == (1.0, 1.0)            # KSamplerAdvanced first half: as ddim_uniform
    assert S.official_scales(ms, full[25:]) == (1.0, end)            # second half: the official last step
    assert S.official_scales(ms, comfy.samplers.calculate_sigmas(ms, "ddim_uniform", 50)) == (1.0, 1.0)
    assert S.official_scales(ms, comfy.samplers.calculate_sigmas(ms, "karras", 20)) == (1.0, 1.0)
    longer = S.official_sigmas(ms, 100)[-51:]                        # denoise 0.5: img2img, not from x_T
    assert S.official_scales(ms, longer) == (1.0, end)


def test_apply_and_core_ksampler_official_equal_magicpose_sample(pack, models, P):
    """MagicPose Apply + core KSampler(ddim, magicpose_official) is the same computation as MagicPoseSample: same
    start-noise scale and last step (from the patched MODEL), same x_T (per-frame noise from the seed)."""
    import nodes as comfy_nodes

    _register(pack)
    unet, mp = models
    ctx, poses, n, seed, steps = text_context(), pose_maps(2), 2, 5, 4
    ref = {"samples": reference_latent(SIZE)}
    m, pos, neg = pack.nodes.apply.MagicPoseApply.execute(unet, mp, ref, poses, conditioning(ctx), conditioning(ctx),
                                                          1.0, 1.0).args
    latent = {"samples": torch.zeros((n, 4, SIZE // 8, SIZE // 8))}
    (k,) = comfy_nodes.KSampler().sample(m, seed, steps, 7.0, "ddim", "magicpose_official", pos, neg, latent)
    ours = pack.nodes.patch.run_sampling.magicpose_sample(
        unet, mp, ref, poses, conditioning(ctx), conditioning(ctx), seed, steps,
                                                7.0, "ddim", "magicpose_official", frame_batch=n,
                                                shared_noise=False)["samples"]
    rel = _rel(k["samples"], ours)
    record("Apply + KSampler(ddim, magicpose_official) vs MagicPoseSample, max diff / max |latent|", f"{rel:.1e}")
    assert rel <= 1e-6
    # the official details really applied: plain ddim_uniform differs by the start scale and last step
    (plain,) = comfy_nodes.KSampler().sample(m, seed, steps, 7.0, "ddim", "ddim_uniform", pos, neg, latent)
    assert _rel(plain["samples"], ours) > 1e-4
    # KSamplerAdvanced over the whole schedule is the same path
    (adv,) = comfy_nodes.KSamplerAdvanced().sample(m, "enable", seed, steps, 7.0, "ddim", "magicpose_official", pos,
                                                   neg, latent, 0, 10000, "disable")
    assert _rel(adv["samples"], ours) <= 1e-6


def test_result_does_not_depend_on_frame_batch_and_pose_hints_follow_their_rows(pack, models, P, made_by_sampler):
    """Step-major chunks: each frame gets its own pose map whatever the chunking; the ControlNet runs per chunk."""
    unet, mp = models
    ctx, poses = text_context(), pose_maps(5)
    sample = pack.nodes.patch.run_sampling.magicpose_sample
    args = (unet, mp, {"samples": reference_latent(SIZE)}, poses, conditioning(ctx), conditioning(ctx), 3, 3, 7.0,
            "ddim", "ddim_uniform")
    whole = sample(*args, frame_batch=5)["samples"]
    calls = []
    hook = mp.pose_controlnet.control_model.register_forward_pre_hook(lambda mod, a, kw: calls.append(kw["x"].shape[0]),
                                                                      with_kwargs=True)
    try:
        chunked = sample(*args, frame_batch=2)["samples"]
    finally:
        hook.remove()
    assert calls == [2, 2, 1] * 3                       # per step: three chunks, the ControlNet on each
    assert _rel(chunked, whole) <= 1e-5
    single = sample(unet, mp, {"samples": reference_latent(SIZE)}, poses[3:4], conditioning(ctx), conditioning(ctx), 3,
                    3, 7.0, "ddim", "ddim_uniform", frame_batch=1)["samples"]
    assert _rel(chunked[3:4], single) <= 1e-5           # frame 3 saw pose 3 (shared noise: same x_T)
    assert (whole[0] - whole[3]).abs().max() > 1e-3     # and the poses matter


def test_noise_input_gives_x_T(pack, models):
    import comfy.sample

    unet, mp = models
    ctx = text_context()
    sample = pack.nodes.patch.run_sampling.magicpose_sample
    args = (unet, mp, {"samples": reference_latent(SIZE)}, pose_maps(2), conditioning(ctx), conditioning(ctx), 9, 2,
            7.0, "ddim", "magicpose_official")

    class Given:  # a NOISE object as core's: generate_noise(latent dict) -> tensor, and a seed
        seed = 0

        def __init__(self, x):
            self.x = x

        def generate_noise(self, latent):
            return self.x

    by_seed = sample(*args)["samples"]
    x_T = comfy.sample.prepare_noise(torch.zeros((1, 4, SIZE // 8, SIZE // 8)), 9)
    assert torch.equal(sample(*args, noise=Given(x_T))["samples"], by_seed)
    from comfy_extras.nodes_custom_sampler import Noise_EmptyNoise, Noise_RandomNoise

    assert torch.equal(sample(*args, noise=Noise_RandomNoise(9))["samples"], by_seed)
    zero = sample(*args, noise=Noise_EmptyNoise())["samples"]
    assert torch.isfinite(zero).all() and (zero - by_seed).abs().max() > 1e-2
    with pytest.raises(ValueError, match="NOISE input gave"):
        sample(*args, noise=Given(torch.zeros((3, 4, 8, 8))))


def test_autocast_bf16_runs_close_to_fp32_and_bad_values_are_refused(pack, models, P):
    unet, mp = models
    ctx = text_context()
    sample = pack.nodes.patch.run_sampling.magicpose_sample
    args = (unet, mp, {"samples": reference_latent(SIZE)}, pose_maps(2), conditioning(ctx), conditioning(ctx), 1, 2,
            7.0, "ddim", "magicpose_official")
    fp32 = sample(*args)["samples"]
    seen = []
    conv_in = unet.model.diffusion_model.input_blocks[0][0]
    hook = conv_in.register_forward_hook(lambda mod, a, out: seen.append(out.dtype))
    try:
        bf16 = sample(*args, options=P.MagicPoseOptions(autocast="bf16"))["samples"]
    finally:
        hook.remove()
    assert seen and all(d == torch.bfloat16 for d in seen)
    assert bf16.dtype == torch.float32 and torch.isfinite(bf16).all()
    dev = _rel(bf16, fp32)
    record("autocast bf16 vs fp32 (tiny random UNet, 2 steps), max diff / max |latent|", f"{dev:.1e}")
    assert 0 < dev < 0.1
    with pytest.raises(ValueError, match="autocast must be one of"):
        P.MagicPoseOptions(autocast="int8")
