"""`autocast="auto"` through MagicPose Sampler on the tiny factory model: it resolves once, logs its choice, keeps
its measurement in ComfyUI's user directory, and samples exactly what that concrete choice samples. Whatever this
CPU makes the probe choose, the two runs use the same kernels, so they must agree bit for bit."""
from __future__ import annotations

import json
import logging
import re

import pytest
import torch
from support.magicpose_env import comfy_models, conditioning, pose_maps, reference_latent, text_context

pytestmark = [pytest.mark.comfy]

SIZE = 64


@pytest.fixture(scope="module")
def models(pack, factory_files):
    return comfy_models(pack, factory_files["magicpose"])


@pytest.fixture
def user_dir(comfy, tmp_path, monkeypatch):
    """ComfyUI's user directory, for this test only (where the node keeps auto's per-machine measurement)."""
    import folder_paths

    monkeypatch.setattr(folder_paths, "user_directory", str(tmp_path / "user"))
    return tmp_path / "user"


def sample_node(pack, models, autocast: str) -> torch.Tensor:
    """MagicPose Sampler's execute on 2 frames, 2 steps; latents (2, 4, 8, 8)."""
    unet, mp = models
    ctx = text_context()
    out = pack.nodes.sample.MagicPoseSample.execute(
        unet, mp, {"samples": reference_latent(SIZE)}, pose_maps(2), conditioning(ctx), conditioning(ctx), seed=1,
        steps=2, cfg=7.0, sampler_name="ddim", scheduler="magicpose_official", denoise=1.0, frame_batch=0,
        shared_noise=True, autocast=autocast)
    return out.result[0]["samples"] if hasattr(out, "result") else out[0]["samples"]


def test_auto_samples_what_its_logged_choice_samples(pack, models, user_dir, caplog):
    with caplog.at_level(logging.INFO, logger="MagicPose"):
        auto = sample_node(pack, models, "auto")
    choices = re.findall(r"MagicPose autocast auto -> (\w+) on cpu", caplog.text)
    assert len(choices) == 1, caplog.text            # resolved once for the run, not per step or per chunk
    choice = choices[0]
    assert choice in ("off", "bf16", "fp16")
    assert "measured in" in caplog.text and "flags" in caplog.text       # the probe's figures and the CPU features
    cache = user_dir / "magicpose" / "autocast_probe.json"
    assert cache.is_file() and len(json.loads(cache.read_text())["entries"]) == 1
    concrete = sample_node(pack, models, choice)
    assert auto.dtype == torch.float32 and torch.isfinite(auto).all()
    assert torch.equal(auto, concrete), float((auto - concrete).abs().max())

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="MagicPose"):
        again = sample_node(pack, models, "auto")    # a new patched MODEL: the measurement comes from the cache
    assert re.findall(r"MagicPose autocast auto -> (\w+) on cpu", caplog.text) == [choice]
    assert "cached in" in caplog.text and str(cache) in caplog.text
    assert torch.equal(again, auto)


def test_auto_is_offered_by_both_nodes_and_off_stays_the_default(pack):
    for node in (pack.nodes.sample.MagicPoseSample, pack.nodes.apply.MagicPoseApply):
        schema = node.define_schema()
        inp = next(i for i in schema.inputs if i.id == "autocast")
        assert list(inp.options) == ["off", "bf16", "fp16", "auto"] and inp.default == "off"
        assert "auto" in inp.tooltip and "probe" in inp.tooltip
    assert pack.nodes.patch.model_patch.MagicPoseOptions().autocast == "off"
    with pytest.raises(ValueError, match="autocast must be one of"):
        pack.nodes.patch.model_patch.MagicPoseOptions(autocast="fastest")
