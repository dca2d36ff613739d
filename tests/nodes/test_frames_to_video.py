"""MagicPose Frames to Video in-process on real ComfyUI: files in the output/temp folders, the preview, the core
VIDEO output chained into core Save Video and Get Video Components, audio from a core AUDIO, crop-back with the
reference's fit, metadata, progress, interruption and clear errors."""
from __future__ import annotations

import importlib
import json
import os
from fractions import Fraction

import numpy as np
import pytest
import torch
from support.video_probe import fraction_close, probe

pytestmark = pytest.mark.comfy


@pytest.fixture(scope="module")
def mod(pack):
    return importlib.import_module("magicpose_pack.nodes.frames_to_video")


@pytest.fixture(scope="module")
def node(mod):
    return mod.FramesToVideo


def frames(n: int, w: int = 64, h: int = 48) -> torch.Tensor:
    t = torch.linspace(0.1, 0.9, n)[:, None, None, None]
    xx = torch.linspace(0, 1, w)[None, None, :, None]
    return (0.5 * t + 0.5 * xx).expand(n, h, w, 3).contiguous()  # (n, h, w, 3), brightness follows the index


def audio(seconds: float, rate: int = 44100) -> dict:
    s = torch.arange(int(seconds * rate)) / rate
    return {"waveform": (0.3 * torch.sin(2 * torch.pi * 330 * s))[None, None].repeat(1, 2, 1), "sample_rate": rate}


def run(node, images, fps=24.0, format="mp4", crf=19, prefix="MagicPose/test", save=True, **kw):
    with torch.inference_mode():
        return node.execute(images, fps, format, crf, prefix, save, **kw)


def saved_path(out) -> str:
    import folder_paths

    item = out.ui.as_dict()["images"][0]
    base = folder_paths.get_output_directory() if item["type"] == "output" else folder_paths.get_temp_directory()
    return os.path.join(base, item["subfolder"], item["filename"])


def test_schema_and_registration(pack, node):
    import asyncio

    schema = node.define_schema()
    assert (schema.node_id, schema.display_name, schema.category) == (
        "MagicPoseFramesToVideo", "MagicPose Frames to Video", "MagicPose")
    assert schema.is_output_node
    assert all(i.tooltip for i in schema.inputs) and all(o.tooltip for o in schema.outputs)
    assert node in asyncio.run(pack.nodes.MagicPoseExtension().get_node_list())


def test_mp4_in_output_folder_preview_and_video_output(comfy, node):
    import folder_paths

    out = run(node, frames(20), fps=12.0, prefix="MagicPose/clip")
    ui = out.ui.as_dict()
    item = ui["images"][0]
    assert ui["animated"] == (True,)
    assert item["type"] == "output" and item["subfolder"] == "MagicPose" and item["filename"].endswith("_.mp4")
    path = saved_path(out)
    assert path.startswith(folder_paths.get_output_directory()) and os.path.isfile(path)
    p = probe(path)
    assert p.frames == 20 and (p.width, p.height) == (64, 48) and fraction_close(p.fps, 12)
    video = out.result[0]
    assert video.get_stream_source() == path
    assert video.get_dimensions() == (64, 48) and video.get_frame_rate() == 12
    comp = video.get_components()
    assert comp.images.shape == (20, 48, 64, 3)
    np.testing.assert_allclose(comp.images[..., 2].mean(dim=(1, 2)).numpy(), frames(20)[..., 2].mean(dim=(1, 2)),
                               atol=0.03)
    second = run(node, frames(4), prefix="MagicPose/clip")  # the counter moves on, nothing is overwritten
    assert saved_path(second) != path and os.path.isfile(path)


def test_save_output_off_writes_to_temp(comfy, node):
    import folder_paths

    out = run(node, frames(5), format="webm", save=False)
    item = out.ui.as_dict()["images"][0]
    assert item["type"] == "temp"
    path = saved_path(out)
    assert path.startswith(folder_paths.get_temp_directory()) and probe(path).frames == 5


@pytest.mark.parametrize("fmt", ["mp4", "webm", "gif", "webp"])
def test_video_output_chains_with_core_save_video_and_components(comfy, node, fmt):
    from comfy_extras.nodes_video import GetVideoComponents, SaveVideo

    out = run(node, frames(10), fps=10.0, format=fmt, prefix=f"MagicPose/chain_{fmt}")
    assert probe(saved_path(out)).frames == 10
    video = out.result[0]
    images, _audio, fps, _bits = GetVideoComponents.execute(video).result
    assert images.shape == (10, 48, 64, 3) and fraction_close(fps, 10)
    saved = SaveVideo.PREPARE_CLASS_CLONE(None).execute(video, f"MagicPose/core_{fmt}", "auto", {"codec": "auto"})
    item = saved.ui.as_dict()["images"][0]
    p = probe(saved_path(saved))
    assert item["filename"].endswith(".mp4")
    assert p.frames == 10 and (p.width, p.height) == (64, 48) and fraction_close(p.fps, 10)


@pytest.mark.parametrize("fmt", ["mp4", "webm"])
def test_audio_from_core_audio_dict(comfy, node, fmt):
    out = run(node, frames(24), fps=24.0, format=fmt, audio=audio(2.5))  # audio longer than the 1 s video
    p = probe(saved_path(out))
    assert abs(p.audio_seconds - 1.0) < 1 / 24
    comp = out.result[0].get_components()
    assert comp.audio is not None and comp.audio["waveform"].shape[1] == 2
    assert abs(comp.audio["waveform"].shape[-1] / comp.audio["sample_rate"] - 1.0) < 1 / 24


def letterbox_reference(pack, src_w=120, src_h=60, w=64, h=64):
    geometry = pack.magicpose_core.media.geometry.fit_geometry(src_w, src_h, w, h, "letterbox")
    latent = torch.zeros(1, 4, h // 8, w // 8)
    return pack.magicpose_core.model.reference.MagicPoseReference(latent=latent, width=w, height=h, source_hash="0",
                                                            geometry=geometry)


@pytest.mark.parametrize("fmt", ["mp4", "gif"])
def test_crop_back_with_the_reference_fit(comfy, node, pack, fmt):
    ref = letterbox_reference(pack)
    g = ref.geometry
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 60), torch.linspace(0, 1, 120), indexing="ij")
    src = torch.stack([xx, yy, 0.5 + 0 * xx], dim=-1)[None].repeat(6, 1, 1, 1)  # smooth (6, 60, 120, 3)
    fitted = pack.magicpose_core.media.geometry.fit_images(src, g, pad="white")
    out = run(node, fitted, format=fmt, crf=0, reference=ref, crop_back="remove padding")
    p = probe(saved_path(out))
    assert (p.width, p.height) == (g.box_w, g.box_h) == (64, 32)
    assert p.images.min() < 200  # the white bars are gone: the darkest corner of the gradient is in
    out = run(node, fitted, format=fmt, crf=0, reference=ref, crop_back="source size")
    p = probe(saved_path(out))
    assert (p.width, p.height) == (120, 60) and p.frames == 6
    assert np.abs(p.images[0] / 255.0 - src[0].numpy()).mean() < 0.03
    assert out.result[0].get_components().images.shape == (6, 60, 120, 3)


def test_crop_back_errors(comfy, node, pack):
    with pytest.raises(ValueError, match="connect the reference output"):
        run(node, frames(2), crop_back="remove padding")
    with pytest.raises(ValueError, match="fitted to 64x64"):
        run(node, frames(2), reference=letterbox_reference(pack), crop_back="source size")


@pytest.mark.parametrize("images,match", [
    (torch.zeros(0, 8, 8, 3), "no frames"),
    (torch.rand(2, 8, 8, 4), "got 4.*alpha"),
])
def test_bad_frames(comfy, node, images, match):
    with pytest.raises(ValueError, match=match):
        run(node, images)


def test_odd_size_is_padded_for_mp4(comfy, node):
    out = run(node, frames(3, 65, 33))
    p = probe(saved_path(out))
    assert (p.width, p.height) == (66, 34)


def test_metadata_from_hidden_prompt(comfy, node):
    from comfy_api.latest import io

    prompt = {"1": {"class_type": "MagicPoseFramesToVideo", "inputs": {}}}
    clone = node.PREPARE_CLASS_CLONE({"hidden_inputs": {io.Hidden.prompt: prompt,
                                                        io.Hidden.extra_pnginfo: {"workflow": {"nodes": []}}}})
    out = run(clone, frames(3))
    meta = probe(saved_path(out)).metadata
    assert json.loads(meta["prompt"]) == prompt and json.loads(meta["workflow"]) == {"nodes": []}


def test_progress_and_interruption(comfy, node, mod):
    import comfy.model_management as mm
    import comfy.utils
    import folder_paths

    calls = []
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: calls.append((value, total)))
    try:
        run(node, frames(40), format="webm")
        assert calls[-1] == (40, 40) and len(calls) >= 2
        before = set(os.listdir(os.path.join(folder_paths.get_output_directory(), "MagicPose")))
        mm.interrupt_current_processing(True)
        with pytest.raises(mm.InterruptProcessingException):
            run(node, frames(40), format="webm")
        after = set(os.listdir(os.path.join(folder_paths.get_output_directory(), "MagicPose")))
        assert after == before  # the partial file was removed
    finally:
        mm.interrupt_current_processing(False)
        comfy.utils.set_progress_bar_global_hook(None)


def test_fps_fraction_reaches_the_file(comfy, node):
    out = run(node, frames(30), fps=30000 / 1001)
    video = out.result[0]
    assert video.get_frame_rate() == Fraction(30000, 1001)
