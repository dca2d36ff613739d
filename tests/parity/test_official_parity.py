"""Parity: MagicPose inside ComfyUI vs an independent implementation of the official forward and DDIM loop.

Same factory weights, same x_T, reference latent, text context and pose maps. Checked:
- eps of the conditional and unconditional rows at each of the 10 timesteps of a DDIM schedule, through
  ComfyUI's sampling path: max |diff| <= 1e-5 * max |eps| (fp32);
- the final latent of MagicPoseSample (ddim, magicpose_official schedule) vs the official DDIM loop: <= 1e-4, or
  twice the fp32 floor of that trajectory where it is higher (the floor itself capped at FLOOR_CAP).
Random weights do not denoise, so a 10-step trajectory ends far outside real latents (|x| ~ 50 at t=1, where two
fp32 implementations of the same UNet differ by ~2e-5 of max|eps|); the eps check therefore uses inputs in the
range real sampling produces, and the whole loop is checked on the final latent.
"""
from __future__ import annotations

import math

import pytest
import torch
from support.figures import record
from support.magicpose_env import comfy_models, conditioning, factory_parts, pose_maps, reference_latent, text_context

from magicpose_core.model.constants import LATENT_SCALE_FACTOR

pytestmark = [pytest.mark.comfy]

STEPS = 10
SIZE = 64
SEED = 7   # MagicPoseSample's seed in the final-latent tests
# Sanity cap of the fp32 floor below (measured 1.0e-4..1.1e-4 on this 10-step trajectory, max |latent| ~ 50): a floor
# above it means the reference trajectory itself amplifies rounding far beyond what was measured, and a tolerance
# derived from it could hide a real difference.
FLOOR_CAP = 1e-3


@pytest.fixture(scope="module")
def setup(pack, factory_files):
    from parity.reference_impl import OfficialMagicPose

    path = factory_files["magicpose"]
    unet, mp = comfy_models(pack, path)
    parts = factory_parts(str(path))
    ref_impl = OfficialMagicPose(parts.unet, parts.appearance, parts.pose_controlnet)
    return unet, mp, ref_impl


def _official_run(official, noise: torch.Tensor, poses: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The official DDIM loop from x_T = noise (official latent space), and its fp32 floor.

    The floor: the official loop against itself with x_T moved by one ulp (ComfyUI's k-space x_T differs from the
    official one by about that). Untrained weights do not denoise, so the trajectory grows to |x| ~ 50 and rounding
    is amplified; on such a trajectory no fp32 implementation can be closer than this floor."""
    ctx, z_ref, hint = text_context(0), reference_latent(SIZE) * LATENT_SCALE_FACTOR, poses.movedim(-1, 1)
    final = official.ddim(noise, STEPS, ctx, z_ref, hint)
    ulp = torch.nextafter(noise, noise + 1) - noise
    jitter = ulp * torch.randint(-1, 2, noise.shape, generator=torch.Generator().manual_seed(0))
    return final, float((official.ddim(noise + jitter, STEPS, ctx, z_ref, hint) - final).abs().max())


def _assert_within_floor(diff: float, floor: float) -> None:
    """diff <= max(1e-4, 2 x floor), the floor capped (FLOOR_CAP) so that a broken trajectory cannot widen it."""
    assert floor <= FLOOR_CAP, (f"fp32 floor {floor:.2e} (official loop vs itself, x_T +-1 ulp) is above the sanity "
                                f"cap {FLOOR_CAP:.0e}: the reference trajectory is not the measured one")
    assert diff <= max(1e-4, 2 * floor), f"final latents differ by {diff:.2e} (fp32 floor {floor:.2e})"


@pytest.fixture(scope="module")
def shared_noise_run(setup):
    """x_T of MagicPoseSample (seed 7, shared by 3 frames), and the official loop's final latent and floor from it:
    computed once for every frame_batch."""
    import comfy.sample

    noise = comfy.sample.prepare_noise(torch.zeros((1, 4, SIZE // 8, SIZE // 8)), SEED).expand(3, -1, -1, -1)
    return _official_run(setup[2], noise, pose_maps(3, SIZE))


def _capture_fn(store: list):
    """A sampler CFG function that records (sigma, x, eps_cond, eps_uncond) and combines them as ComfyUI does."""
    def capture(args):
        s = args["sigma"].view(-1, 1, 1, 1)
        store.append((float(args["sigma"][0]), args["input"].clone(), (args["cond"] / s).clone(),
                      (args["uncond"] / s).clone()))
        return args["uncond"] + (args["cond"] - args["uncond"]) * args["cond_scale"]
    return capture


def test_eps_matches_official_at_every_timestep(pack, setup):
    """eps of the conditional and unconditional rows through ComfyUI's whole sampling path (bank via the
    DIFFUSION_MODEL wrapper, pose ControlNet on the positive, CFG), at each timestep of a 10-step DDIM schedule,
    on inputs shaped like real ones: x_t = sqrt(a_t) z0 + sqrt(1 - a_t) n with a clean latent z0."""
    import comfy.sample

    unet, mp, official = setup
    P = pack.nodes.patch.model_patch
    ctx, poses, z_raw = text_context(0), pose_maps(2, SIZE), reference_latent(SIZE)
    ref = pack.magicpose_core.model.reference.MagicPoseReference.from_latent(z_raw)
    g = torch.Generator().manual_seed(11)
    z0 = torch.randn((2, 4, SIZE // 8, SIZE // 8), generator=g)
    n = torch.randn((2, 4, SIZE // 8, SIZE // 8), generator=g)
    ms = unet.get_model_object("model_sampling")
    worst = 0.0
    for t in pack.magicpose_core.model.guidance.ddim_uniform_timesteps(STEPS)[::-1]:
        sigma = float(ms.sigmas[t])
        x_t = (z0 + sigma * n) / math.sqrt(1 + sigma ** 2)   # = sqrt(a) z0 + sqrt(1 - a) n
        captured = []
        base = unet.clone()
        base.set_model_sampler_cfg_function(_capture_fn(captured))
        m = P.apply_magicpose(base, mp, ref, P.MagicPoseOptions(strict_sites=True))
        pos = P.attach_pose_control(conditioning(ctx), mp.pose_controlnet, poses)
        x_k = x_t * math.sqrt(1 + sigma ** 2)                 # k-diffusion x at this sigma
        comfy.sample.sample(m, x_k / sigma, 1, 7.0, "euler", "simple", pos, conditioning(ctx), torch.zeros_like(x_k),
                            sigmas=torch.tensor([sigma, 0.0]), disable_pbar=True)
        (_, x_seen, e_c, e_u), = captured
        assert torch.allclose(x_seen, x_k, rtol=1e-6, atol=1e-6)
        r_c, r_u = official.eps(x_t, t, ctx, z_raw * LATENT_SCALE_FACTOR, poses.movedim(-1, 1))
        for ours, theirs, branch in ((e_c, r_c, "cond"), (e_u, r_u, "uncond")):
            rel = float((ours - theirs).abs().max()) / float(theirs.abs().max())
            worst = max(worst, rel)
            assert rel <= 1e-5, f"t={t} {branch}: eps differs by {rel:.2e} of max|eps|"
        assert float((r_c - r_u).abs().max()) > 1e-3  # the comparison is not vacuous: bank + pose matter
    record("parity: max eps difference / max|eps| (cond and uncond, 10 timesteps)", f"{worst:.2e}")


@pytest.mark.parametrize("FB", [3, 2])
def test_final_latent_matches_official_ddim_loop(pack, setup, shared_noise_run, FB):
    """MagicPoseSample (ddim, magicpose_official, 10 steps, 3 frames in one batch or in chunks of 2) vs the official
    DDIM loop from the same x_T; compared in the official latent space (the sampler's output, x0.18215)."""
    unet, mp, _ = setup
    final, floor = shared_noise_run
    ctx, R = text_context(0), pack.nodes.patch.run_sampling
    settings = R.SamplingSettings(seed=SEED, steps=STEPS, scheduler="magicpose_official", frame_batch=FB)
    out = R.magicpose_sample(unet, mp, {"samples": reference_latent(SIZE)}, pose_maps(3, SIZE), conditioning(ctx),
                             conditioning(ctx), settings)["samples"]
    diff = float((out * LATENT_SCALE_FACTOR - final).abs().max())
    record(f"parity: final latent max abs difference, 10-step DDIM, frame_batch {FB} (official latent space)",
           f"{diff:.2e}; fp32 floor (official vs itself, x_T +-1 ulp) {floor:.2e}; "
           f"max |latent| {float(final.abs().max()):.1f}")
    _assert_within_floor(diff, floor)


def test_reference_implementation_reads_bank_only_on_cond(setup):
    """Guard on the reference itself: with the bank the conditional eps differs from plain SD1.5."""
    _, _, official = setup
    ctx, z = text_context(0), reference_latent(SIZE) * LATENT_SCALE_FACTOR
    x = torch.randn((1, 4, SIZE // 8, SIZE // 8), generator=torch.Generator().manual_seed(3))
    e_c, e_u = official.eps(x, 501, ctx, z, torch.zeros((1, 3, SIZE, SIZE)))
    assert float((e_c - e_u).abs().max()) > 1e-3


def test_apply_and_core_ksampler_match_official_ddim_loop(pack, setup):
    """MagicPose Apply + core KSampler (ddim, magicpose_official, 10 steps) vs the official DDIM loop, per-frame x_T
    as KSampler draws it (prepare_noise on the latent batch); the official start noise and last step come from the
    patched MODEL, not from MagicPoseSample."""
    import asyncio

    import comfy.sample

    import nodes as comfy_nodes

    unet, mp, official = setup
    asyncio.run(pack.nodes.MagicPoseExtension().on_load())   # registers magicpose_official, as at ComfyUI start-up
    ctx, poses, z_raw = text_context(0), pose_maps(2), reference_latent(SIZE)
    seed = 13
    m, pos, neg = pack.nodes.apply.MagicPoseApply.execute(unet, mp, {"samples": z_raw}, poses, conditioning(ctx),
                                                          conditioning(ctx), 1.0, 1.0).args
    latent = torch.zeros((2, 4, SIZE // 8, SIZE // 8))
    (out,) = comfy_nodes.KSampler().sample(m, seed, STEPS, 7.0, "ddim", "magicpose_official", pos, neg,
                                           {"samples": latent})
    final, floor = _official_run(official, comfy.sample.prepare_noise(latent, seed), poses)
    diff = float((out["samples"] * LATENT_SCALE_FACTOR - final).abs().max())
    record("parity: Apply + KSampler(ddim, magicpose_official) final latent max abs difference (official space)",
           f"{diff:.2e}; fp32 floor {floor:.2e}")
    _assert_within_floor(diff, floor)
