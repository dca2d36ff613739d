"""Real ComfyUI server: Load Image -> MagicPose Load Reference (VAE of the factory SD1.5 checkpoint) -> frames ->
MagicPose Frames to Video (fps and sound of a driving video via core Load Video / Get Video Components, crop-back
with the reference's fit) -> core Save Video. The saved files must decode with the expected frames, size, fps
and audio length.

The frames in the middle are the prepared reference repeated (core Repeat Image Batch): this test covers the
reference and video ends of the graph; the sampler has its own end-to-end tests.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from support.video_probe import fraction_close, probe

from magicpose_core.media.video import encode_video

pytestmark = [pytest.mark.comfy, pytest.mark.server]

SRC_W, SRC_H = 120, 60   # landscape photo, letterboxed into 64x64
FRAMES, FPS = 12, 15.0   # 0.8 s of output; the driving video is longer (1.2 s), so its sound is trimmed


def _inputs(server, tmp_path) -> tuple[str, str]:
    yy, xx = np.meshgrid(np.linspace(0, 1, SRC_H), np.linspace(0, 1, SRC_W), indexing="ij")
    rgb = (np.stack([xx, yy, 0.5 * (xx + yy)], axis=-1) * 255).round().astype(np.uint8)
    photo = tmp_path / "mp_reference.png"
    Image.fromarray(rgb).save(photo)
    image_name = server.upload_image(photo)
    s = torch.arange(int(1.2 * 44100)) / 44100
    wave = (0.3 * torch.sin(2 * torch.pi * 440 * s))[None, None].repeat(1, 2, 1)  # (1, 2, S)
    driving = server.base_dir / "input" / "mp_driving.mp4"
    encode_video(torch.rand(18, 32, 32, 3), str(driving), FPS, "mp4", audio={"waveform": wave, "sample_rate": 44100})
    return image_name, driving.name


def test_reference_to_video_to_core_save_video(server, factory_files, tmp_path):
    image_name, driving = _inputs(server, tmp_path)
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": image_name}},
        "2": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": factory_files["sd15"].name}},
        "3": {"class_type": "MagicPoseLoadReference",
              "inputs": {"image": ["1", 0], "vae": ["2", 2], "width": 64, "height": 64, "fit": "letterbox",
                         "pad": "black", "encode": "sample (official)", "seed": 42, "detector": "none",
                         "allow_download": False}},
        "4": {"class_type": "LoadVideo", "inputs": {"file": driving}},
        "5": {"class_type": "GetVideoComponents", "inputs": {"video": ["4", 0]}},
        "6": {"class_type": "RepeatImageBatch", "inputs": {"image": ["3", 1], "amount": FRAMES}},
        "7": {"class_type": "MagicPoseFramesToVideo",
              "inputs": {"images": ["6", 0], "fps": ["5", 2], "format": "mp4", "crf": 19,
                         "filename_prefix": "MagicPose/e2e", "save_output": True, "audio": ["5", 1],
                         "reference": ["3", 0], "crop_back": "source size"}},
        "8": {"class_type": "SaveVideo",
              "inputs": {"video": ["7", 0], "filename_prefix": "MagicPose/e2e_core", "format": "auto",
                         "codec": "auto"}},
    }
    result = server.run(prompt, timeout=300)
    assert result.status == "success", result.error_message() + "\n" + server.log_tail()

    ours = result.outputs["7"]["images"][0]
    core = result.outputs["8"]["images"][0]
    assert ours["type"] == "output" and ours["subfolder"] == "MagicPose"
    assert result.outputs["7"]["animated"] == [True]
    for item in (ours, core):
        p = probe(server.output_path(item))
        assert p.frames == FRAMES
        assert (p.width, p.height) == (SRC_W, SRC_H)  # cropped back to the photo's size
        assert fraction_close(p.fps, FPS)
        assert p.audio is not None and abs(p.audio_seconds - FRAMES / FPS) < 1 / FPS
        # the letterboxed photo came back: the gradient matches the source (not the black bars)
        assert abs(p.images[0, :, :, 0].mean() / 255 - 0.5) < 0.05
    assert any(node == "7" and value == total for node, value, total in result.progress())
    assert "prompt" in probe(server.output_path(ours)).metadata


def test_reference_sampler_video_chain(server, factory_files, tmp_path):
    """The whole chain with the MagicPose sampler in the middle (tiny random weights: the pictures are noise,
    the plumbing is real): Load Reference -> MagicPose Sampler -> VAE Decode -> Frames to Video -> Save Video."""
    info = server.get_json("/object_info")
    missing = {"MagicPoseLoadModel", "MagicPoseSample"} - set(info)
    if missing:
        pytest.skip(f"nodes not registered yet: {sorted(missing)}")
    image_name, _ = _inputs(server, tmp_path)
    n = 5
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": image_name}},
        "2": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": factory_files["sd15"].name}},
        "3": {"class_type": "MagicPoseLoadReference",
              "inputs": {"image": ["1", 0], "vae": ["2", 2], "width": 64, "height": 64, "fit": "center_crop",
                         "pad": "black", "encode": "mode (deterministic)", "seed": 42, "detector": "none",
                         "allow_download": False}},
        "4": {"class_type": "RepeatImageBatch", "inputs": {"image": ["3", 1], "amount": n}},  # stand-in pose maps
        "5": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 1], "text": ""}},
        "6": {"class_type": "MagicPoseLoadModel",
              "inputs": {"ckpt_name": factory_files["magicpose"].name, "weight_dtype": "default", "download": False}},
        "7": {"class_type": "MagicPoseSample",
              "inputs": {"model": ["2", 0], "magicpose": ["6", 0], "reference": ["3", 0], "poses": ["4", 0],
                         "positive": ["5", 0], "negative": ["5", 0], "seed": 1, "steps": 2, "cfg": 7.0,
                         "sampler_name": "ddim", "scheduler": "ddim_uniform", "denoise": 1.0, "frame_batch": 4,
                         "shared_noise": True, "reference_strength": 1.0, "pose_strength": 1.0,
                         "park_bank_on_cpu": False}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["2", 2]}},
        "9": {"class_type": "MagicPoseFramesToVideo",
              "inputs": {"images": ["8", 0], "fps": 8.0, "format": "webm", "crf": 30,
                         "filename_prefix": "MagicPose/e2e_sampled", "save_output": False,
                         "reference": ["3", 0], "crop_back": "source size"}},
        "10": {"class_type": "SaveVideo",
               "inputs": {"video": ["9", 0], "filename_prefix": "MagicPose/e2e_sampled_core", "format": "auto",
                          "codec": "h264"}},
    }
    result = server.run(prompt, timeout=600)
    assert result.status == "success", result.error_message() + "\n" + server.log_tail()
    ours, core = result.outputs["9"]["images"][0], result.outputs["10"]["images"][0]
    assert ours["type"] == "temp"
    for item in (ours, core):
        p = probe(server.output_path(item))
        # centre crop of 120x60 is its middle 60x60 square, which crop-back restores
        assert p.frames == n and (p.width, p.height) == (60, 60) and fraction_close(p.fps, 8)
