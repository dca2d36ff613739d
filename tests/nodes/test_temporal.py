"""Temporal sources inside ComfyUI's samplers (factory checkpoints, CPU, tiny UNet, 64x64 frames): where the
anchor tokens go, that batching and chunking do not change the result, and that the option off changes nothing."""
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
FRAMES = 8
# Sanity cap of the fp32 batch-size floor (frame_batch 1 vs one batch without temporal sources; measured 1.6e-6 of
# max|eps|, 4.6e-6 of max|latent|): above it the chunking itself changes results, and a tolerance derived from the
# floor would hide that.
FP32_FLOOR_CAP = 1e-4


@pytest.fixture(scope="module")
def models(pack, factory_files):
    return comfy_models(pack, factory_files["magicpose"])


@pytest.fixture(scope="module")
def models64(pack, factory_files):
    """The same weights in float64 through ComfyUI's own fp64 path (model_management.unet_manual_cast: no cast for
    float64): the main UNet, the appearance UNet, the pose ControlNet and attention all compute in float64."""
    return comfy_models(pack, factory_files["magicpose"], dtype=torch.float64)


@pytest.fixture
def T(pack):
    return pack.nodes.patch.temporal_sources


def _options(pack, mode="both", strength=1.0, start=0.0, end=1.0):
    return pack.magicpose_core.model.temporal.TemporalOptions(mode, strength, start, end)


def _patched(pack, models, temporal, strict=True, **opts):
    P, T = pack.nodes.patch.model_patch, pack.nodes.patch.temporal_sources
    unet, mp = models
    m = P.apply_magicpose(unet, mp, magicpose_reference(pack), P.MagicPoseOptions(strict_sites=strict, **opts))
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
    probe = AttnProbe()
    m.set_model_attn1_patch(probe)
    steps, n = 3, 4
    pos = pack.nodes.patch.model_patch.attach_pose_control(conditioning(ctx), mp.pose_controlnet, pose_maps(n))
    _sample(m, pos, conditioning(ctx), _noise(n), steps=steps)
    sites = set(pack.magicpose_core.model.constants.SITES)
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


class UNetOutputs:
    """DIFFUSION_MODEL wrapper registered last: the UNet's output of every call in the model's dtype (before
    BaseModel._apply_model's `.float()`), with the call's timestep and cond_or_uncond."""

    def __init__(self):
        self.calls = []  # (timestep, cond_or_uncond, (B, 4, h, w) output)

    def __call__(self, executor, x, timesteps, context, y, control, transformer_options, **kwargs):
        out = executor(x, timesteps, context, y, control, transformer_options, **kwargs)
        self.calls.append((float(timesteps[0]), tuple(transformer_options["cond_or_uncond"]), out.detach().clone()))
        return out

    def first_step(self) -> torch.Tensor:
        """(2, N, 4, h, w): conditional, unconditional outputs of every frame at the first step (same inputs for any
        frame_batch), in frame order."""
        rows = {0: [], 1: []}
        for t, coc, out in self.calls:
            if t == self.calls[0][0]:
                for c, part in zip(coc, out.chunk(len(coc))):
                    rows[c].append(part)
        return torch.stack([torch.cat(rows[0]), torch.cat(rows[1])])


def _video(pack, models, temporal, frame_batch=0, frames=FRAMES, steps=2, seed=0, outputs=None, **opts):
    """The frames through MagicPose Apply's path with the sampler's frame chunks: (N, 4, 8, 8) latents, and the run.
    outputs: a :class:`UNetOutputs` to register on the patched model."""
    unet, mp = models
    ctx = text_context()
    m = _patched(pack, models, temporal, frame_batch=frame_batch, **opts)
    if outputs is not None:
        m.add_wrapper_with_key(pack.nodes.patch.model_patch.WrappersMP.DIFFUSION_MODEL, "test_outputs", outputs)
    pos = pack.nodes.patch.model_patch.attach_pose_control(conditioning(ctx), mp.pose_controlnet, pose_maps(frames))
    out = _sample(m, pos, conditioning(ctx), _noise(frames, seed), steps=steps)
    return out, pack.nodes.patch.temporal_sources.temporal_run(m)


def _invariance(pack, models, mode: str, plain) -> dict:
    """frame_batch 1, 2, 4, 8 (8 frames: 8, 4, 2, 1 chunks) vs one batch: the worst relative difference of the UNet's
    first-step outputs (cond and uncond) and of the sampled latents. plain = (latents, first-step outputs) off."""
    temporal = _options(pack, mode, strength=0.8)
    cap = UNetOutputs()
    whole, run = _video(pack, models, temporal, outputs=cap)
    eps = cap.first_step()
    assert run.stats.peak_cache_bytes == 0                       # one call holds every frame: nothing recorded
    fig = {"eps": {}, "cond": {}, "latents": {}}
    for fb in (1, 2, 4, 8):
        cap = UNetOutputs()
        out, run = _video(pack, models, temporal, frame_batch=fb, outputs=cap)
        first = cap.first_step()
        fig["eps"][fb], fig["cond"][fb], fig["latents"][fb] = _rel(first, eps), _rel(first[0], eps[0]), _rel(out, whole)
        if fb < FRAMES:                                           # anchors crossed chunks through the cache
            assert run.stats.cached_reads > 0 and run.stats.peak_cache_bytes > 0
    fig["frame0"] = _rel(eps[:, :1], plain[1][:, :1])             # frame 0 has no anchor
    assert _rel(eps[0, 1:], plain[1][0, 1:]) > 1e-3               # the others read theirs (conditional rows)
    assert _rel(eps[1], plain[1][1]) <= 1e-6                      # unconditional rows: plain SD1.5
    return fig


def _plain(pack, models) -> tuple:
    cap, cap_1 = UNetOutputs(), UNetOutputs()
    plain, _ = _video(pack, models, _options(pack, "off"), outputs=cap)
    plain_1, _ = _video(pack, models, _options(pack, "off"), frame_batch=1, outputs=cap_1)
    floor = {"eps": _rel(cap_1.first_step(), cap.first_step()), "latents": _rel(plain_1, plain)}
    return (plain, cap.first_step()), floor


@pytest.fixture(scope="module")
def plain64(pack, models64):
    return _plain(pack, models64)


@pytest.fixture(scope="module")
def plain32(pack, models):
    return _plain(pack, models)


def _worst(fig: dict) -> str:
    return ", ".join(f"{k} {max(fig[k].values()):.1e}" for k in ("eps", "cond", "latents"))


@pytest.mark.parametrize("mode", ["first", "previous", "both"])
def test_float64_frame_batch_1_2_4_8_give_the_same_frames_through_comfyui(pack, models64, plain64, mode):
    """The issue's invariance (<= 1e-6 relative) on ComfyUI's own UNetModel, ControlNet, ModelPatcher and sampler
    with the weights in float64, where batch-size-dependent BLAS rounding (the fp32 floor) no longer hides it: the
    UNet's float64 outputs at the first step (the inputs are the same for any frame_batch there) and the sampled
    latents. The latents go through ComfyUI's float32 sampler state (samplers.py casts noise and latent to float32;
    model_base returns `model_output.float()`), so they agree to float32 rounding of float64 outputs."""
    fig = _invariance(pack, models64, mode, plain64[0])
    for kind in ("eps", "latents"):
        for fb, rel in fig[kind].items():
            assert rel <= 1e-6, f"{mode}, frame_batch {fb}, {kind}: {rel:.2e}"
    assert fig["frame0"] <= 1e-6
    figs = "; ".join(f"fb {fb}: eps {fig['eps'][fb]:.1e} (cond rows {fig['cond'][fb]:.1e}), latents "
                     f"{fig['latents'][fb]:.1e}" for fb in (1, 2, 4, 8))
    record(f"temporal '{mode}' float64 through ComfyUI, frame_batch k vs one batch (8 frames, 2 steps), / max|x|",
           f"{figs}; frame 0 vs off {fig['frame0']:.1e}")


def test_off_is_unchanged_and_float64_floor(pack, models64, plain64, T):
    """temporal_mode off (or strength 0) leaves the patched model as it was: nothing registered, so it samples as
    before (the official path of the parity tests). Without temporal sources frame_batch 1 vs one batch agrees to
    <= 1e-6 in float64 as well."""
    unet, mp = models64
    P = pack.nodes.patch.model_patch
    m = P.apply_magicpose(unet, mp, magicpose_reference(pack), P.MagicPoseOptions(strict_sites=True))
    before = (repr(m.model_options), repr(m.wrappers))
    for off in (_options(pack, "off"), _options(pack, "both", strength=0.0)):
        assert T.add_temporal_sources(m, off) is m and T.temporal_run(m) is None
    assert (repr(m.model_options), repr(m.wrappers)) == before
    assert plain64[1]["eps"] <= 1e-6 and plain64[1]["latents"] <= 1e-6
    record("temporal off, float64 through ComfyUI: frame_batch 1 vs one batch, / max|x|",
           f"eps {plain64[1]['eps']:.1e}, latents {plain64[1]['latents']:.1e}")


def test_fp32_frame_batch_1_2_4_8_within_the_batch_size_floor(pack, models, plain32):
    """In fp32 the same comparison is limited by rounding that depends on the batch size (BLAS kernels), which
    the frames show without temporal sources too (frame_batch 1 vs one batch: the floor)."""
    floor = plain32[1]
    for kind in ("eps", "latents"):
        assert floor[kind] <= FP32_FLOOR_CAP, (f"fp32 floor ({kind}) {floor[kind]:.2e} is above the sanity cap "
                                               f"{FP32_FLOOR_CAP:.0e}: frame_batch changes results without temporal "
                                               f"sources")
    fig = _invariance(pack, models, "both", plain32[0])
    for kind in ("eps", "latents"):
        for fb, rel in fig[kind].items():
            assert rel <= max(1e-6, 4 * floor[kind]), f"frame_batch {fb}, {kind}: {rel:.2e} (floor {floor[kind]:.2e})"
    assert fig["frame0"] <= max(1e-6, 4 * floor["eps"])
    record("temporal 'both' fp32, worst frame_batch 1/2/4/8 vs one batch (8 frames, 2 steps), / max|x|",
           f"{_worst(fig)}; floor without temporal sources (frame_batch 1 vs one batch): "
           f"eps {floor['eps']:.1e}, latents {floor['latents']:.1e}")


def test_strength_zero_is_off_window_and_strength_scale_the_effect(pack, models):
    plain, _ = _video(pack, models, _options(pack, "off"), frames=3)
    zero, run = _video(pack, models, _options(pack, "first", strength=0.0), frames=3)
    assert run is None and torch.equal(zero, plain)            # strength 0 registers nothing
    weak, _ = _video(pack, models, _options(pack, "first", strength=0.3), frames=3)
    full, _ = _video(pack, models, _options(pack, "first", strength=1.0), frames=3)
    assert 0 < _rel(weak[1:], plain[1:]) < _rel(full[1:], plain[1:])
    late, run = _video(pack, models, _options(pack, "first", start=0.5), frames=3, steps=4)
    assert run.stats.anchor_calls == 2 and run.stats.plain_calls == 6  # cond calls of the 2nd half; every uncond call


def test_mixed_cond_uncond_call_keeps_unconditional_rows_plain(pack, models64):
    """Without a ControlNet ComfyUI batches cond and uncond rows in one call: the anchor slots of unconditional rows
    get exactly zero weight, so they equal the plain SD1.5 prediction; conditional rows read their anchors. In
    float64: the other key layouts change the outputs by rounding only (they reach the sampler as float32)."""
    import comfy.sample

    unet, mp = models64
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
            m = pack.nodes.patch.model_patch.apply_magicpose(base, mp, magicpose_reference(pack))
            m = pack.nodes.patch.temporal_sources.add_temporal_sources(
                m, _options(pack, "both" if tag == "temporal" else "off"))
        m.set_model_unet_function_wrapper(spy)
        latent = torch.zeros((3, 4, SIZE // 8, SIZE // 8))
        comfy.sample.sample(m, comfy.sample.prepare_noise(latent, 6), 1, 7.0, "euler", "simple", conditioning(ctx),
                            conditioning(ctx), latent, sigmas=torch.tensor([5.0, 0.0]), disable_pbar=True)
    assert calls and all(sorted(c) == [0, 1] for c in calls)
    (tc, tu), (bc, _), (_, pu) = caps["temporal"], caps["bank only"], caps["plain"]
    assert _rel(tu, pu) <= 1e-6                       # unconditional rows: plain SD1.5
    assert _rel(tc[:1], bc[:1]) <= 1e-6               # frame 0: no anchor
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

    pos = pack.nodes.patch.model_patch.attach_pose_control(conditioning(ctx), mp.pose_controlnet, pose_maps(3))
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


def test_sampler_node_path_and_a_frame_range_with_the_anchor_pose(pack, models64):
    """MagicPose Sampler with temporal 'first': frames 2-3 rendered on their own with the video's first pose as
    anchor_pose equal frames 2-3 of the whole video (what a render split over servers needs). In float64, so the
    other chunk composition changes the UNet's outputs by rounding only (in fp32: the batch-size floor, ~1.5e-5)."""
    unet, mp = models64
    ctx = text_context()
    temporal = _options(pack, "first", strength=0.8)
    poses = pose_maps(4)
    R = pack.nodes.patch.run_sampling

    def sample(p, anchor_pose=None, frame_batch=2):
        return R.magicpose_sample(unet, mp, {"samples": reference_latent(SIZE)}, p, conditioning(ctx),
                                  conditioning(ctx), R.SamplingSettings(seed=0, steps=2, frame_batch=frame_batch),
                                  temporal=temporal, anchor_pose=anchor_pose)["samples"]

    whole = sample(poses)
    part = sample(poses[2:], anchor_pose=poses[:1])
    alone = sample(poses[2:])
    assert part.shape == (2, 4, SIZE // 8, SIZE // 8)
    assert _rel(part, whole[2:]) <= 1e-6          # float64 UNet, float32 sampler state
    assert _rel(alone, whole[2:]) > 1e-3          # without it the range anchors on its own first frame
    exact = sample(poses[2:], anchor_pose=poses[:2])
    assert torch.equal(exact, whole[2:])          # the first frame_batch maps: the same chunks, bit-identical
    with pytest.raises(ValueError, match="same size"):
        sample(poses[2:], anchor_pose=pose_maps(1, 32), frame_batch=4)
