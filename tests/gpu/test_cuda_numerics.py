"""On a CUDA device (`pytest -m gpu`; skipped elsewhere): the parity fixture against the CPU float32 result, the bank
following the main UNet's device and dtype next to weights of another dtype, and frame_batch chunks giving the same
latents as one batch."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from support.magicpose_env import AttnProbe, conditioning, magicpose_reference, pose_maps, text_context

pytestmark = [pytest.mark.comfy, pytest.mark.gpu]

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))


@pytest.fixture(scope="module")
def measure(pack):
    import gpu_measure

    return gpu_measure


def _models(pack, measure, dtype: str):
    unet, bundle, _ = measure.fixture_models(pack, dtype)
    return unet, bundle


def test_cuda_fp32_matches_the_cpu_fp32_fixture_within_the_floor(pack, measure, tmp_path):
    ref = tmp_path / "cpu.pt"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_measure.py"), "fixture", "--device", "cpu",
                    "--result", str(tmp_path / "cpu.json"), "--dtypes", "fp64,fp32", "--size", "64", "--frames", "2",
                    "--steps", "10", "--save", str(ref)], check=True, cwd=ROOT)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    unet, bundle = _models(pack, measure, "fp32")
    assert unet.load_device.type == "cuda"
    out = {"fp32": measure.fixture_outputs(pack, unet, bundle, 64, 2, 10)}
    comp = measure.compare_fixture(torch.load(ref), out)
    for what in ("eps", "ddim"):
        assert comp[what]["fp32_within_floor"], comp


def test_bank_follows_the_unet_dtype_next_to_fp32_appearance_weights(pack, measure):
    P = pack.nodes.patch.model_patch
    unet, _ = _models(pack, measure, "fp16")
    _, bundle = _models(pack, measure, "fp32")          # fp32 ACM + ControlNet next to an fp16 UNet
    seen = []

    class Probe(AttnProbe):
        def __call__(self, n, context, value, extra_options):
            seen.append((context.device.type, context.dtype, n.dtype, context.shape[1], n.shape[1]))
            return n, context, value

    import comfy.sample

    m = P.apply_magicpose(unet.clone(), bundle, magicpose_reference(pack, 64))
    m.set_model_attn1_patch(Probe())                    # after MagicPose's reader: sees the extended keys
    ctx = text_context(0)
    pos = P.attach_pose_control(conditioning(ctx), bundle.pose_controlnet, pose_maps(1))
    latent = torch.zeros((1, 4, 8, 8))
    noise = comfy.sample.prepare_noise(latent, 3)
    out = comfy.sample.sample(m, noise, 1, 7.0, "euler", "simple", pos, conditioning(ctx), latent,
                              sigmas=torch.tensor([5.0, 0.0]), disable_pbar=True)
    assert torch.isfinite(out).all()
    extended = [s for s in seen if s[3] > s[4]]
    assert extended and all(s[0] == "cuda" and s[1] == s[2] == torch.float16 for s in extended), seen[:4]


def test_frame_batch_chunks_give_the_batch_result_on_cuda(pack, measure):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    R = pack.nodes.patch.run_sampling
    unet, bundle = _models(pack, measure, "fp32")
    ctx, poses = text_context(0), pose_maps(4)
    outs = {}
    for fb in (1, 2, 4):
        s = R.SamplingSettings(steps=3, frame_batch=fb, scheduler="magicpose_official")
        outs[fb] = R.magicpose_sample(unet, bundle, magicpose_reference(pack, 64), poses, conditioning(ctx),
                                      conditioning(ctx), s)["samples"].float()
    scale = float(outs[4].abs().max())
    for fb in (1, 2):
        assert float((outs[fb] - outs[4]).abs().max()) <= 1e-4 * scale, fb
