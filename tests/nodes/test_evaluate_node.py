"""MagicPoseEvaluate called directly in-process: IMAGE and path inputs, the written files, path confinement, the
metric weights folder under models/magicpose/eval."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = [pytest.mark.comfy]


def frames(n: int = 4, h: int = 48, w: int = 64) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    out = [torch.stack([0.5 + 0.4 * torch.sin((xx - 2 * t) / 6.0), 0.5 + 0.3 * torch.cos(yy / 5.0),
                        0.5 + 0.2 * torch.sin((xx + yy - 2 * t) / 9.0)], -1) for t in range(n)]
    return torch.stack(out).float()  # (n, h, w, 3)


@pytest.fixture(scope="module")
def node(pack):
    return pack.nodes.evaluate


def _files(out: Path, prefix: str) -> dict[str, Path]:
    return {p.suffix: p for p in out.glob(f"{prefix}_*")}


def test_identical_images_report_json_and_plot_files(node, comfy):
    import folder_paths

    imgs = frames()
    res = node.Evaluate.execute(detector="mediapipe", learned_metrics=False, filename_prefix="evaltest/same",
                                images=imgs, ground_truth=imgs.clone())
    table, text, plot = res.result
    data = json.loads(text)
    assert data["metrics"]["ssim"]["value"] == 1.0
    assert data["metrics"]["psnr"]["value"] == data["metrics"]["psnr_disco"]["value"] == 100.0
    assert data["metrics"]["l1"]["value"] == 0.0 and "warp_error" in data["metrics"]
    assert "lpips" not in data["unavailable"]                     # learned metrics off: not attempted
    assert plot.ndim == 4 and plot.shape[0] == 1 and plot.shape[-1] == 3 and plot.dtype == torch.float32
    files = _files(Path(folder_paths.get_output_directory()) / "evaltest", "same")
    assert set(files) == {".txt", ".json", ".png"}
    assert json.loads(files[".json"].read_text())["frames"] == 4 and "SSIM" in files[".txt"].read_text()
    assert "PSNR (DisCo protocol): DisCo's script" in table and "PSNR: 20*log10" in table
    saved = res.ui.as_dict()["images"][0]
    assert saved["filename"] == files[".png"].name and saved["type"] == "output"


def test_paths_in_the_input_folder_and_confinement(node, comfy, tmp_path):
    import folder_paths

    gen_dir = Path(folder_paths.get_input_directory()) / "eval_gen"
    gen_dir.mkdir(exist_ok=True)
    for i, f in enumerate((frames() * 255).round().byte().numpy()):
        Image.fromarray(f).save(gen_dir / f"{i:03d}.png")
    res = node.Evaluate.execute(detector="mediapipe", learned_metrics=False, filename_prefix="evaltest/paths",
                                generated_path="eval_gen", ground_truth_path="eval_gen", ground_truth_offset=1,
                                truncate=True)
    data = json.loads(res.result[1])
    assert data["counts"]["pairs"] == 3 and data["metrics"]["ssim"]["value"] < 1.0   # frame t vs frame t+1
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    with pytest.raises(ValueError, match="inside ComfyUI's input, output or temp folder"):
        node.Evaluate.execute(detector="mediapipe", learned_metrics=False, filename_prefix="x",
                              generated_path=str(outside))
    with pytest.raises(ValueError, match="inside ComfyUI's"):
        node.Evaluate.execute(detector="mediapipe", learned_metrics=False, filename_prefix="x",
                              generated_path="../../etc")
    with pytest.raises(ValueError, match="connect the generated frames"):
        node.Evaluate.execute(detector="mediapipe", learned_metrics=False, filename_prefix="x")
    with pytest.raises(ValueError, match="not both"):
        node.Evaluate.execute(detector="mediapipe", learned_metrics=False, filename_prefix="x", images=frames(),
                              generated_path="eval_gen")


def test_learned_metrics_use_the_eval_weights_folder(node, pack, comfy):
    import folder_paths
    from support import eval_standins

    pack.nodes.models.register_model_folder()
    folder = Path(folder_paths.models_dir) / "magicpose" / "eval"
    folder.mkdir(parents=True, exist_ok=True)
    assert node.eval_weights_dir() == str(folder)                 # default: where messages point
    eval_standins.vgg16_file(folder)
    assert node.eval_weights_dir() == str(folder)
    imgs = frames(n=2)
    res = node.Evaluate.execute(detector="mediapipe", learned_metrics=True, filename_prefix="evaltest/learned",
                                images=imgs, ground_truth=imgs.flip(2))
    data = json.loads(res.result[1])
    assert data["metrics"]["lpips"]["value"] > 0
    assert "inception-2015-12-05.pt" in data["unavailable"]["fid"] and "allow" in data["unavailable"]["fid"]
    assert "resnet-50-kinetics.pth" in data["unavailable"]["fid_vid"]
    np.testing.assert_equal(data["frames"], 2)


def test_pose_accuracy_of_a_real_photo_through_the_node(node, pack):
    pytest.importorskip("mediapipe")
    from support.pose_data import astronaut

    from magicpose_core.pose.keypoints import frames_to_pose_keypoint

    photo = torch.from_numpy(astronaut()).float()[None] / 255          # (1, 512, 512, 3)
    target = frames_to_pose_keypoint(pack.nodes.pose_detectors.detect_pose(photo, "mediapipe"), normalized=True)
    res = node.Evaluate.execute(detector="mediapipe", learned_metrics=False, filename_prefix="evaltest/pose",
                                images=photo, pose_keypoint=target)
    data = json.loads(res.result[1])
    assert data["metrics"]["pck_body@0.05"]["value"] == 1.0 and data["metrics"]["nme_face"]["value"] < 0.05
    assert "ssim" in data["unavailable"]                           # no ground truth given


def test_tiktok_ground_truth_vae_round_trip_equals_comfyui_vae_encode_decode(comfy, tmp_path):
    """The TikTok table's ground truth (diffusers AutoencoderKL on the ldm keys) is what ComfyUI's own VAE Encode
    -> VAE Decode gives with the same SD1.5 VAE weights (both use the posterior mean)."""
    import comfy.sd
    from safetensors.torch import load_file
    from support import eval_standins

    from magicpose_core.evaluate.tiktok import load_vae

    path = eval_standins.sd15_vae_file(tmp_path)
    sd = {k.removeprefix("first_stage_model."): v for k, v in load_file(str(path)).items()}
    vae = comfy.sd.VAE(sd=sd)
    rgb = (frames(n=1, h=32, w=40)[0].numpy() * 255).round().astype(np.uint8)
    with torch.inference_mode():
        theirs = vae.decode(vae.encode(torch.from_numpy(rgb)[None].float() / 255))[0].float().cpu().numpy()
    ours = np.clip((load_vae(path)(rgb) + 1) / 2, 0, 1)          # (32, 40, 3) in [0, 1], ComfyUI's output range
    assert np.abs(ours - theirs).max() < 1e-4 and ours.std() > 0.01
