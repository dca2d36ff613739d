"""apply_magicpose inside ComfyUI's samplers, on the factory checkpoints (CPU, tiny UNet, 64x64 frames; in float64
where a comparison checks structure, so no fp32 rounding of a particular CPU's kernels decides it)."""
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


@pytest.fixture(scope="module")
def models64(pack, factory_files):
    """The same weights in float64 (ComfyUI runs them without a cast): the UNet, the appearance UNet, the pose
    ControlNet and attention compute in float64, so comparisons of structure are not limited by fp32 rounding that
    depends on the batch size and on which CPU kernels ran."""
    return comfy_models(pack, factory_files["magicpose"], dtype=torch.float64)


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


def _run(pack, models, poses: torch.Tensor, reference=None, options=None, noise=None, **settings) -> torch.Tensor:
    """MagicPose Sampler's function on `models` with the stand-in text context; `settings`: SamplingSettings fields.
    Returns the latents (N, 4, h, w)."""
    unet, mp = models
    ctx = text_context()
    R = pack.nodes.patch.run_sampling
    reference = {"samples": reference_latent(SIZE)} if reference is None else reference
    return R.magicpose_sample(unet, mp, reference, poses, conditioning(ctx), conditioning(ctx),
                              R.SamplingSettings(**settings), options=options, noise=noise)["samples"]


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
    steps, n, k = 3, 5, 2
    out = _run(pack, models, pose_maps(n), seed=0, steps=steps, frame_batch=k)
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


def test_shared_noise_identical_poses_give_identical_frames(pack, models64):
    same = pose_maps(1).expand(3, -1, -1, -1).contiguous()
    shared = _run(pack, models64, same, seed=11, steps=2, frame_batch=2, shared_noise=True)
    # frames 0-1 share a chunk, frame 2 is alone in the next one: in float64 the batch size changes only rounding
    for i in (1, 2):
        assert _rel(shared[i], shared[0]) <= 1e-6
    own = _run(pack, models64, same, seed=11, steps=2, frame_batch=2, shared_noise=False)
    assert _rel(own[1], own[0]) > 1e-2


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
            _run(pack, (base, mp), pose_maps(4), seed=0, steps=3, frame_batch=2)
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


def test_reference_strength_two_equals_the_bank_appended_twice(pack, models64, P):
    """Strength s is a log(s) bias on the reference keys' logits, i.e. each reference key's softmax weight times s.
    Appending the bank once more gives every reference key twice its weight, so strength 2 must equal it, exactly
    up to rounding (float64). A bias on the wrong tokens (own keys, part of the bank, other rows) breaks that."""
    unet, mp = models64
    ctx = text_context()

    def bank_again(n, context, value, extra_options):  # after MagicPose's reader: [own, bank] -> [own, bank, bank]
        own = n.shape[1]
        return n, torch.cat([context, context[:, own:]], dim=1), torch.cat([value, value[:, own:]], dim=1)

    doubled = P.apply_magicpose(unet, mp, magicpose_reference(pack))
    doubled.set_model_attn1_patch(bank_again)
    two = P.apply_magicpose(unet, mp, magicpose_reference(pack), P.MagicPoseOptions(reference_strength=2.0))
    one = P.apply_magicpose(unet, mp, magicpose_reference(pack))
    # no ControlNet: cond and uncond rows share each UNet call (the uncond rows' keys are their own, repeated)
    doubled, two, one = (_sample(m, conditioning(ctx), conditioning(ctx), steps=2, seed=5) for m in (doubled, two, one))
    assert _rel(two, doubled) <= 1e-6       # float64 UNet, float32 sampler state: equal to float32 rounding
    assert _rel(two, one) > 1e-3            # and the strength matters


def test_mixed_cond_uncond_batch_equals_separate_calls(pack, models64, P):
    """When a caller batches cond and uncond rows into one UNet call, cond rows read the bank exactly as in a
    separate call and uncond rows stay plain SD1.5 (own tokens duplicated: softmax-invariant). In float64: the
    other batch composition changes the outputs by rounding only (they reach the sampler as float32)."""
    import comfy.sample
    import comfy.samplers

    unet, mp = models64
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
    assert float((mc - sc).abs().max()) <= 1e-6 * scale
    assert float((mu - pu).abs().max()) <= 1e-6 * scale        # uncond rows: plain SD1.5
    assert float((su - pu).abs().max()) <= 1e-6 * scale
    assert float((mc - pc).abs().max()) > 1e-2 * scale          # cond rows did read the bank


def test_reference_of_another_size_is_resized_with_a_warning(pack, models, caplog):
    import logging

    small = {"samples": reference_latent(32)}  # 32x32 reference, 64x64 poses
    with caplog.at_level(logging.WARNING, logger="MagicPose"):
        out = _run(pack, models, pose_maps(1), reference=small, seed=0, steps=1)
    assert out.shape == (1, 4, SIZE // 8, SIZE // 8)
    assert any("reference is 32x32 but the frames are 64x64" in r.getMessage() for r in caplog.records)


def test_bad_pose_batches_give_clear_errors(pack, models):
    for poses, words in ((torch.zeros(1, 60, 64, 3), "multiples of 8"), (torch.zeros(0, 64, 64, 3), "empty"),
                         (torch.zeros(1, 64, 64, 4), "(N, H, W, 3)")):
        with pytest.raises(ValueError) as e:
            _run(pack, models, poses, steps=1)
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


def test_a_site_never_read_raises_when_strict_else_warns_once(pack, P, caplog):
    import logging
    import types

    sites = pack.magicpose_core.model.constants.SITES
    stats, warned = types.SimpleNamespace(missing_sites=set()), set()
    P.report_missing_sites(set(sites), "the bank was", stats=stats, strict=True, warned=warned)   # all read: fine
    with pytest.raises(RuntimeError, match="the bank was not read at 1 of 16 attention sites"):
        P.report_missing_sites(set(sites[1:]), "the bank was", stats=stats, strict=True, warned=warned)
    with caplog.at_level(logging.WARNING, logger="MagicPose"):
        for _ in range(2):
            P.report_missing_sites(set(sites[1:]), "the bank was", stats=stats, strict=False, warned=warned)
    assert len([r for r in caplog.records if "the bank was not read" in r.getMessage()]) == 1
    assert stats.missing_sites == {sites[0]}


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
    ours = _run(pack, models, poses, reference=ref, seed=seed, steps=steps, scheduler="magicpose_official",
                frame_batch=n, shared_noise=False)
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


class FirstStepCond:
    """DIFFUSION_MODEL wrapper: the UNet's conditional outputs at the first step, in frame order and in the model's
    dtype (at the first step every chunking sees the same inputs: the shared x_T)."""

    def __init__(self):
        self.t0, self.parts = None, []

    def __call__(self, executor, x, timesteps, context, y, control, transformer_options, **kwargs):
        out = executor(x, timesteps, context, y, control, transformer_options, **kwargs)
        self.t0 = float(timesteps[0]) if self.t0 is None else self.t0
        if float(timesteps[0]) == self.t0 and list(transformer_options["cond_or_uncond"]) == [0]:
            self.parts.append(out.detach().clone())
        return out

    @property
    def eps(self) -> torch.Tensor:
        return torch.cat(self.parts)  # (N, 4, h, w)


def test_result_does_not_depend_on_frame_batch_and_pose_hints_follow_their_rows(pack, models64, P):
    """Step-major chunks: the ControlNet runs on each chunk with exactly that chunk's rows of the pose maps, and the
    result does not depend on the chunking. In float64 the chunking changes the UNet's outputs by rounding only
    (~1e-15), far below what another frame's pose map changes (checked), so frame 3 saw pose 3."""
    unet, mp = models64
    poses, steps = pose_maps(5), 2

    def render(p: torch.Tensor, frame_batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        cap, base = FirstStepCond(), unet.clone()
        base.add_wrapper_with_key(P.WrappersMP.DIFFUSION_MODEL, "test_first_step", cap)
        return _run(pack, (base, mp), p, seed=3, steps=steps, frame_batch=frame_batch), cap.eps

    whole, eps = render(poses, 5)
    hints = []
    hook = mp.pose_controlnet.control_model.register_forward_pre_hook(lambda mod, a, kw: hints.append(kw["hint"]),
                                                                      with_kwargs=True)
    try:
        chunked, eps_chunked = render(poses, 2)
    finally:
        hook.remove()
    rows = [poses[s:s + 2].movedim(-1, 1) for s in (0, 2, 4)]   # per chunk: (2 or 1, 3, H, W)
    assert len(hints) == 3 * steps                               # per step: three chunks, the ControlNet on each
    assert all(torch.equal(h.float().cpu(), rows[i % 3]) for i, h in enumerate(hints))
    assert _rel(eps_chunked, eps) <= 1e-10 and _rel(chunked, whole) <= 1e-6   # latents: float32 sampler state
    single, eps_single = render(poses[3:4], 1)
    assert _rel(eps_chunked[3:4], eps_single) <= 1e-10 and _rel(chunked[3:4], single) <= 1e-6
    other_pose = min(_rel(eps[j:j + 1], eps[3:4]) for j in (0, 1, 2, 4))
    assert other_pose > 1e-7, f"the pose maps barely matter ({other_pose:.1e}): the check above proves nothing"


def test_noise_input_gives_x_T(pack, models):
    import comfy.sample

    def sample(noise=None):
        return _run(pack, models, pose_maps(2), noise=noise, seed=9, steps=2, scheduler="magicpose_official")

    class Given:  # a NOISE object as core's: generate_noise(latent dict) -> tensor, and a seed
        seed = 0

        def __init__(self, x):
            self.x = x

        def generate_noise(self, latent):
            return self.x

    by_seed = sample()
    x_T = comfy.sample.prepare_noise(torch.zeros((1, 4, SIZE // 8, SIZE // 8)), 9)
    assert torch.equal(sample(Given(x_T)), by_seed)
    from comfy_extras.nodes_custom_sampler import Noise_EmptyNoise, Noise_RandomNoise

    assert torch.equal(sample(Noise_RandomNoise(9)), by_seed)
    zero = sample(Noise_EmptyNoise())
    assert torch.isfinite(zero).all() and (zero - by_seed).abs().max() > 1e-2
    with pytest.raises(ValueError, match="NOISE input gave"):
        sample(Given(torch.zeros((3, 4, 8, 8))))


def test_autocast_bf16_runs_close_to_fp32_and_bad_values_are_refused(pack, models, P):
    unet, _ = models

    def sample(options=None):
        return _run(pack, models, pose_maps(2), options=options, seed=1, steps=2, scheduler="magicpose_official")

    fp32 = sample()
    seen = []
    conv_in = unet.model.diffusion_model.input_blocks[0][0]
    hook = conv_in.register_forward_hook(lambda mod, a, out: seen.append(out.dtype))
    try:
        bf16 = sample(P.MagicPoseOptions(autocast="bf16"))
    finally:
        hook.remove()
    assert seen and all(d == torch.bfloat16 for d in seen)
    assert bf16.dtype == torch.float32 and torch.isfinite(bf16).all()
    dev = _rel(bf16, fp32)
    record("autocast bf16 vs fp32 (tiny random UNet, 2 steps), max diff / max |latent|", f"{dev:.1e}")
    assert 0 < dev < 0.1
    with pytest.raises(ValueError, match="autocast must be one of"):
        P.MagicPoseOptions(autocast="int8")
