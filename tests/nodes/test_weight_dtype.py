"""MagicPose Load Model's weight_dtype: `default` is fp32 on the CPU (the tooltip's promise), and the measured
deviation of the MagicPose noise prediction with fp16 / bf16 weights from fp32 weights (printed as figures)."""
from __future__ import annotations

import pytest
import torch
from support.figures import record
from support.magicpose_env import comfy_models, conditioning, factory_parts, pose_maps, reference_latent, text_context

pytestmark = [pytest.mark.comfy]

SIZE = 64
SIGMA = 5.0


def _weight_dtypes(mp) -> set[torch.dtype]:
    acm = mp.appearance.model.diffusion_model
    cn = mp.pose_controlnet.control_model
    return {p.dtype for m in (acm, cn) for p in m.parameters() if p.is_floating_point()}


def test_default_is_fp32_on_the_cpu(pack, factory_files):
    M = pack.nodes.models
    assert M.resolve_dtype("default", torch.device("cpu")) is torch.float32
    assert M.resolve_dtype("fp16", torch.device("cpu")) is torch.float16
    mp = M.build_magicpose_model(factory_parts(str(factory_files["magicpose"])), "default")
    assert _weight_dtypes(mp) == {torch.float32}
    assert pack.nodes.load_model._conversion_dtype("default") == "fp32"   # the first-use cache is not rounded


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_default_is_the_devices_half_type_on_a_gpu(pack):
    assert pack.nodes.models.resolve_dtype("default", torch.device("cuda")) in (torch.float16, torch.bfloat16)


def _eps(pack, unet, mp) -> torch.Tensor:
    """The conditional noise prediction of one MagicPose step (bank + pose ControlNet) at sigma 5."""
    import comfy.sample

    P = pack.nodes.patch.model_patch
    ref = pack.magicpose_core.model.reference.MagicPoseReference.from_latent(reference_latent(SIZE))
    ctx = text_context()
    caps = {}

    def capture(args):
        caps["cond"] = args["cond_denoised"].clone()
        return args["uncond"] + (args["cond"] - args["uncond"]) * args["cond_scale"]

    base = unet.clone()
    base.set_model_sampler_cfg_function(capture)
    m = P.apply_magicpose(base, mp, ref)
    pos = P.attach_pose_control(conditioning(ctx), mp.pose_controlnet, pose_maps(1))
    latent = torch.zeros((1, 4, SIZE // 8, SIZE // 8))
    noise = comfy.sample.prepare_noise(latent, 3)
    comfy.sample.sample(m, noise, 1, 7.0, "euler", "simple", pos, conditioning(ctx), latent,
                        sigmas=torch.tensor([SIGMA, 0.0]), disable_pbar=True)
    x = noise * SIGMA
    return (x - caps["cond"].float()) / SIGMA          # eps = (x - denoised) / sigma


def test_half_weights_deviate_little_from_fp32(pack, factory_files):
    unet, _ = comfy_models(pack, factory_files["magicpose"])
    parts = factory_parts(str(factory_files["magicpose"]))
    M = pack.nodes.models
    ref = _eps(pack, unet, M.build_magicpose_model(parts, "fp32"))
    scale = float(ref.pow(2).mean().sqrt())
    for name, bound in (("fp16", 1e-2), ("bf16", 5e-2)):
        mp = M.build_magicpose_model(parts, name)
        assert _weight_dtypes(mp) == {M.DTYPES[name]}
        eps = _eps(pack, unet, mp)
        dev = float((eps - ref).abs().max())
        rel = float((eps - ref).pow(2).mean().sqrt()) / scale
        record(f"weight_dtype: eps max |{name} - fp32| (tiny factory weights, sigma {SIGMA:g}, 64x64)", f"{dev:.3e}")
        record(f"weight_dtype: eps rms({name} - fp32) / rms(eps)", f"{rel:.3e}")
        assert 0 < rel < bound, (name, rel)
