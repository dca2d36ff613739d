"""The pack on a real ComfyUI 0.30 server: registration, the loader on the official-layout factory file, and
MagicPoseSample end to end (API-format prompt, websocket progress and previews)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support.figures import record

pytestmark = [pytest.mark.comfy, pytest.mark.server]

NODE_IDS = {"MagicPoseLoadModel", "MagicPoseApply", "MagicPoseSample", "MagicPoseLoadReference",
            "MagicPoseExtractPose", "MagicPoseFramesToVideo"}


def test_object_info_lists_the_nodes_with_their_inputs(server, factory_files):
    info = server.get_json("/object_info")
    assert NODE_IDS <= set(info)
    for node_id in NODE_IDS:
        assert info[node_id]["category"] == "MagicPose"
        assert info[node_id]["python_module"] == "custom_nodes.magicpose"
    loader = info["MagicPoseLoadModel"]["input"]["required"]
    assert {"ckpt_name", "weight_dtype", "download"} <= set(loader)
    assert factory_files["magicpose"].name in loader["ckpt_name"][1]["options"]   # the official .th is listed
    sample = info["MagicPoseSample"]["input"]["required"]
    for name in ("model", "magicpose", "reference", "poses", "positive", "negative", "seed", "steps", "cfg",
                 "sampler_name", "scheduler", "denoise", "frame_batch", "shared_noise"):
        assert name in sample, name
    assert sample["steps"][1]["default"] == 50 and sample["cfg"][1]["default"] == 7.0
    assert sample["sampler_name"][1]["default"] == "ddim" and sample["scheduler"][1]["default"] == "ddim_uniform"


def test_web_extension_and_docs_are_served(server):
    files = server.get_json("/extensions")
    assert any(f.startswith("/extensions/magicpose/") for f in files), files


def test_loader_converts_the_official_file_once_and_succeeds(server, factory_files):
    prompt = {
        "1": {"class_type": "MagicPoseLoadModel",
              "inputs": {"ckpt_name": factory_files["magicpose"].name, "weight_dtype": "default", "download": False}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
    }
    result = server.run(prompt, timeout=300)
    assert result.status == "success", result.error_message() + "\n" + server.log_tail()
    assert result.history["status"]["status_str"] == "success"
    stem = factory_files["magicpose"].stem
    parts = sorted(p.name for p in (server.base_dir / "models" / "magicpose").glob(f"{stem}.*.safetensors"))
    # weight_dtype default is fp32 on the CPU, and the cached parts keep that precision
    assert parts == [f"{stem}.appearance.fp32.safetensors", f"{stem}.pose_controlnet.fp32.safetensors"]


def _assert_no_machine_path(server, text: str) -> None:
    for path in (server.base_dir, server.comfy_path, Path(__file__).resolve().parents[2]):
        assert str(path) not in text, (str(path), text)


def test_missing_official_weights_error_says_what_to_do(server):
    from magicpose_core.weights import hub

    options = server.get_json("/object_info/MagicPoseLoadModel")["MagicPoseLoadModel"]["input"]["required"][
        "ckpt_name"][1]["options"]
    assert hub.FILENAME not in options and hub.LOCAL_FILENAME not in options   # only files that exist ...
    assert hub.download_choice() in options                                     # ... and the explicit download entry
    prompt = {"1": {"class_type": "MagicPoseLoadModel",
                    "inputs": {"ckpt_name": hub.download_choice(), "weight_dtype": "default", "download": False}},
              "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    result = server.run(prompt, timeout=120)
    assert result.status == "error"
    msg = result.error_message()
    assert hub.FILENAME in msg and hub.LOCAL_FILENAME in msg and "models/magicpose" in msg and "download" in msg
    assert f"`{hub.CONVERT_COMMAND}` in ComfyUI's custom_nodes/" in msg
    assert msg.startswith("FileNotFoundError: ")
    _assert_no_machine_path(server, msg)
    # a workflow naming the absent file is refused at validation (what the frontend's missing-models check expects)
    prompt["1"]["inputs"]["ckpt_name"] = hub.LOCAL_FILENAME
    status, body = server.queue(prompt)
    assert status == 400 and "value_not_in_list" in str(body), body


@pytest.mark.parametrize("content", [b"random", b"html", b"lfs"])
def test_a_file_that_is_not_safetensors_gets_advice_without_machine_paths(server, content):
    rng = np.random.default_rng(0)
    data = {b"random": rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(),
            b"html": b"<!DOCTYPE html><html><body>Repository not found</body></html>",
            b"lfs": b"version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 2400000000\n"}[content]
    name = f"junk_{content.decode()}.safetensors"
    path = server.base_dir / "models" / "magicpose" / name
    path.write_bytes(data)
    try:
        prompt = {"1": {"class_type": "MagicPoseLoadModel",
                        "inputs": {"ckpt_name": name, "weight_dtype": "default", "download": False}},
                  "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
        result = server.run(prompt, timeout=120)
    finally:
        path.unlink()
    assert result.status == "error"
    event = next(e["data"] for e in result.events if e.get("type") == "execution_error")
    # ComfyUI reports type(e).__module__ + "." + qualname; the pack is imported under its folder path as module name
    assert event["exception_type"] == "magicpose_core.weights.errors.CheckpointError", event["exception_type"]
    msg = event["exception_message"]
    assert "no valid header" not in msg and name in msg and "Re-download" in msg
    assert {"random": "damaged", "html": "web page", "lfs": "Git LFS"}[content.decode()] in msg
    _assert_no_machine_path(server, msg)


def test_missing_detector_weights_error_names_its_type_without_machine_paths(server, tmp_path):
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "frame.png")
    info = server.get_json("/object_info/MagicPoseExtractPose")["MagicPoseExtractPose"]["input"]["required"]
    inputs = {name: spec[1]["default"] for name, spec in info.items()}   # every required input has a default
    inputs.update(detector="dwpose", images=["1", 0])   # named, no allow_download, no DWPose files in this base
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": server.upload_image(tmp_path / "frame.png")}},
              "2": {"class_type": "MagicPoseExtractPose", "inputs": inputs},
              "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}
    result = server.run(prompt, timeout=120)
    assert result.status == "error"
    event = next(e["data"] for e in result.events if e.get("type") == "execution_error")
    assert event["exception_type"] == "magicpose_core.pose.base.MissingWeightsError", event["exception_type"]
    assert "magicpose/dwpose" in event["exception_message"] and "allow_download" in event["exception_message"]
    _assert_no_machine_path(server, event["exception_type"])


def _pose_png(path, size: int = 64) -> None:
    """A pose-map-like image: a few coloured strokes on black."""
    img = np.zeros((size, size, 3), np.uint8)
    img[10:54, 30:34] = (153, 0, 0)
    img[20:24, 12:52] = (0, 153, 51)
    Image.fromarray(img).save(path)


def test_sampler_prompt_end_to_end_with_progress(server, factory_files, tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "ref.png")
    _pose_png(tmp_path / "pose.png")
    ref_name, pose_name = server.upload_image(tmp_path / "ref.png"), server.upload_image(tmp_path / "pose.png")
    frames, steps = 3, 3
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": factory_files["sd15"].name}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "3": {"class_type": "MagicPoseLoadModel",
              "inputs": {"ckpt_name": factory_files["magicpose"].name, "weight_dtype": "default", "download": False}},
        "4": {"class_type": "LoadImage", "inputs": {"image": ref_name}},
        "5": {"class_type": "VAEEncode", "inputs": {"pixels": ["4", 0], "vae": ["1", 2]}},
        "6": {"class_type": "LoadImage", "inputs": {"image": pose_name}},
        "7": {"class_type": "RepeatImageBatch", "inputs": {"image": ["6", 0], "amount": frames}},
        "8": {"class_type": "MagicPoseSample",
              "inputs": {"model": ["1", 0], "magicpose": ["3", 0], "reference": ["5", 0], "poses": ["7", 0],
                         "positive": ["2", 0], "negative": ["2", 0], "seed": 42, "steps": steps, "cfg": 7.0,
                         "sampler_name": "ddim", "scheduler": "ddim_uniform", "denoise": 1.0, "frame_batch": 2,
                         "shared_noise": True}},
        "9": {"class_type": "VAEDecode", "inputs": {"samples": ["8", 0], "vae": ["1", 2]}},
        "10": {"class_type": "SaveImage", "inputs": {"images": ["9", 0], "filename_prefix": "MagicPose/e2e_sample"}},
    }
    result = server.run(prompt, timeout=600)
    assert result.status == "success", result.error_message() + "\n" + server.log_tail()
    images = result.outputs["10"]["images"]
    assert len(images) == frames
    for item in images:
        with Image.open(server.output_path(item)) as im:
            assert im.size == (64, 64)
    sampler = [(v, m) for node, v, m in result.progress() if node == "8"]
    assert sampler and sampler[-1] == (frames * steps, frames * steps)   # progress over frames x steps
    assert [v for v, _ in sampler] == sorted(v for v, _ in sampler)
    previews = [e for e in result.events if e["type"] == "binary_preview"]
    assert previews, "no latent previews arrived over the websocket"
    record("server: MagicPoseSample progress events / latent previews", f"{len(sampler)} / {len(previews)}")
