"""The learned metrics on random-weight stand-ins with the real file layouts (tests/support/eval_standins.py),
and a real photo compared with itself through MediaPipe, LPIPS and the Face-Cos path."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from support import eval_standins
from support.pose_data import astronaut, grace_hopper

from magicpose_core.evaluate import EvaluationSettings, MetricUnavailable, evaluate
from magicpose_core.evaluate.fid import frechet_from_features
from magicpose_core.evaluate.resnet3d import ResNet3d50, load_resnet3d50
from magicpose_core.pose.keypoints import frames_to_pose_keypoint

NETWORKS = ("lpips", "fid", "fid_vid", "face_cos")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval_weights")
    for make in (eval_standins.vgg16_file, eval_standins.inception_file, eval_standins.resnet3d_file,
                 eval_standins.face_onnx_file):
        make(folder)
    return folder


def clip(rng, n=17, size=(96, 96)):
    base = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    return [np.roll(base, 3 * t, axis=1) for t in range(n)]


def test_identical_sets_give_zero_and_different_sets_positive_distances(weights):
    rng = np.random.default_rng(0)
    gt = clip(rng)
    other = [np.clip(f.astype(int) + rng.normal(0, 25, f.shape), 0, 255).astype(np.uint8) for f in gt]
    s = EvaluationSettings(metrics=("fid", "fid_vid"), weights_dir=str(weights))
    few = EvaluationSettings(metrics=("lpips",), weights_dir=str(weights))   # VGG on CPU: a few frames suffice
    same = evaluate(gt, [f.copy() for f in gt], settings=s)
    diff = evaluate(other, gt, settings=s)
    same_lpips, diff_lpips = evaluate(gt[:2], gt[:2], settings=few), evaluate(other[:2], gt[:2], settings=few)
    assert not same.unavailable and not diff.unavailable and not diff_lpips.unavailable
    assert same_lpips.summary["lpips"] == pytest.approx(0.0, abs=1e-7) and diff_lpips.summary["lpips"] > 1e-4
    assert abs(same.summary["fid"]) < 1e-6 and abs(same.summary["fid_vid"]) < 1e-6
    assert diff.summary["fid"] > 1e-4 and diff.summary["fid_vid"] > 1e-6
    assert same.counts["fid_vid_clips"] == 17 - 16 + 1          # stride-1 16-frame windows


def test_lpips_is_the_lpips_package_with_disco_s_unnormalised_input(weights):
    import lpips

    from magicpose_core.evaluate.lpips_metric import LpipsMetric, _trunk_state

    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    ref = lpips.LPIPS(net="vgg", pnet_rand=True, verbose=False)
    ref.net.load_state_dict(_trunk_state(weights / "vgg16-397923af.pth"))
    ta, tb = (torch.from_numpy(x).permute(2, 0, 1)[None].float() / 255 for x in (a, b))  # ToTensor(): [0, 1]
    expected = ref(ta, tb).item()                                                         # normalize=False (DisCo)
    assert LpipsMetric(weights / "vgg16-397923af.pth")(a, b) == pytest.approx(expected, rel=1e-5)
    proper = LpipsMetric(weights / "vgg16-397923af.pth", proper_range=True)(a, b)
    assert proper == pytest.approx(ref(ta, tb, normalize=True).item(), rel=1e-5) and proper != pytest.approx(expected)


def test_fast_frechet_distance_equals_clean_fid(weights):
    from cleanfid import fid

    rng = np.random.default_rng(2)
    for n_a, n_b in ((6, 9), (12, 12)):
        a, b = rng.normal(size=(n_a, 24)), 1.5 * rng.normal(size=(n_b, 24)) + 0.3
        assert frechet_from_features(a, b) == pytest.approx(fid.fid_from_feats(a, b), rel=1e-6)
    a, b = rng.normal(size=(40, 8)), rng.normal(size=(30, 8))   # more samples than dimensions: clean-fid itself
    assert frechet_from_features(a, b) == fid.fid_from_feats(a, b)


def test_resnet3d_checkpoint_layout_and_feature_shape(weights, tmp_path):
    model = load_resnet3d50(weights / "resnet-50-kinetics.pth")
    sd = model.state_dict()
    assert sd["conv1.weight"].shape == (64, 3, 7, 7, 7) and sd["fc.weight"].shape == (400, 2048)
    assert sd["layer4.2.conv3.weight"].shape == (2048, 512, 1, 1, 1) and "layer3.5.bn3.running_var" in sd
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 16, 112, 112)).shape == (1, 2048)
    bad = tmp_path / "resnet-50-kinetics.pth"
    torch.save({"state_dict": {"module.conv1.weight": torch.zeros(1)}}, bad)
    with pytest.raises(MetricUnavailable, match="not the 3D ResNet-50 layout"):
        load_resnet3d50(bad)
    assert isinstance(ResNet3d50().layer4[0].downsample, torch.nn.Sequential)   # shortcut type B


def test_fid_vid_needs_sixteen_frames(weights):
    rng = np.random.default_rng(3)
    frames = clip(rng, n=8)
    r = evaluate(frames, frames, settings=EvaluationSettings(metrics=("fid_vid",), weights_dir=str(weights)))
    assert "at least 16 frames" in r.unavailable["fid_vid"]


def test_missing_weights_skip_only_that_metric(tmp_path):
    rng = np.random.default_rng(4)
    frames = clip(rng, n=3)
    r = evaluate(frames, frames, settings=EvaluationSettings(weights_dir=str(tmp_path)))
    assert set(r.unavailable) >= {"lpips", "fid", "fid_vid", "face_cos"}
    assert r.summary["ssim"] == pytest.approx(1.0)


def test_a_real_photo_against_itself(weights):
    pytest.importorskip("mediapipe")
    from magicpose_core.pose.detect import create_detector

    photo = astronaut()
    detector = create_detector("mediapipe")
    target = frames_to_pose_keypoint([detector(photo)], normalized=True)
    r = evaluate([photo], [photo.copy()], target_pose=target, detector=detector,
                 settings=EvaluationSettings(metrics=("ssim", "psnr", "l1", "lpips", "face_cos", "pose"),
                                             weights_dir=str(weights)))
    assert not r.unavailable, r.unavailable
    assert r.summary["ssim"] == pytest.approx(1.0) and r.summary["psnr"] == 100.0 and r.summary["l1"] == 0.0
    assert r.summary["lpips"] == pytest.approx(0.0, abs=1e-7)
    # MediaPipe's face mesh moves by ~2 px between calls on the same image, so the detections of the two sides
    # differ slightly: the body is exact, the face close
    assert r.summary["face_cos"] > 0.99 and r.counts["face_cos_frames"] == 1
    assert r.summary["pck_body@0.05"] == 1.0
    assert r.summary["nme_face"] < 0.05 and r.summary["face_detection_rate"] == 1.0
    assert r.counts["body_points"] >= 8
    from magicpose_core.evaluate.face import FaceEmbedder, face_cosine

    pose = detector(photo)
    assert face_cosine(FaceEmbedder(weights / "w600k_r50.onnx"), photo, pose, photo, pose) == pytest.approx(1.0)


def test_face_cos_of_two_different_people_is_below_one(weights):
    pytest.importorskip("mediapipe")
    import cv2

    from magicpose_core.pose.detect import create_detector

    a = astronaut()
    b = cv2.resize(grace_hopper(), (512, 512))
    r = evaluate([a], [b], detector=create_detector("mediapipe"),
                 settings=EvaluationSettings(metrics=("face_cos",), weights_dir=str(weights)))
    assert r.counts["face_cos_frames"] == 1 and r.summary["face_cos"] < 0.999


@pytest.mark.parametrize("module, metric, hint", [("lpips", "lpips", "pip install lpips"),
                                                 ("cleanfid", "fid", "pip install clean-fid"),
                                                 ("cleanfid", "fid_vid", "pip install clean-fid"),
                                                 ("skimage", "ssim", "pip install scikit-image")])
def test_a_missing_metrics_library_gives_one_clear_message(weights, monkeypatch, module, metric, hint):
    import sys

    for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)               # import fails as if not installed
    frames = clip(np.random.default_rng(5), n=16, size=(32, 32))
    r = evaluate(frames, frames, settings=EvaluationSettings(metrics=(metric, "psnr"), weights_dir=str(weights)))
    assert hint in r.unavailable[metric] and "magicpose[metrics]" in r.unavailable[metric]
    assert r.summary["psnr"] == 100.0                            # the others still run


def test_face_alignment_is_a_least_squares_similarity_without_reflection(monkeypatch):
    import sys

    from magicpose_core.evaluate.face import ARCFACE_TEMPLATE, similarity

    a, scale, shift = np.deg2rad(20.0), 1.7, np.array([30.0, -12.0])
    sr = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    src = np.random.default_rng(6).uniform(0, 200, (5, 2))
    np.testing.assert_allclose(similarity(src, src @ sr.T + shift), np.hstack([sr, shift[:, None]]), atol=1e-9)
    mirrored = ARCFACE_TEMPLATE * [-1.0, 1.0]                    # no similarity maps it: the fit stays a rotation
    assert np.linalg.det(similarity(mirrored, ARCFACE_TEMPLATE)[:, :2]) > 0
    assert similarity(np.ones((5, 2)), ARCFACE_TEMPLATE) is None  # degenerate points: the frame is skipped
    for name in [m for m in sys.modules if m == "skimage" or m.startswith("skimage.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "skimage", None)
    with pytest.raises(MetricUnavailable, match=r"scikit-image.*magicpose\[metrics\]"):
        similarity(src, ARCFACE_TEMPLATE)


# ------------------------------------------------------------------------------------------ TikTok table

def _save_frames(folder, frames, suffix=".png"):
    from PIL import Image

    folder.mkdir(parents=True)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{i:04d}{suffix}")


def _pan(rng, n, h, w):
    """n frames of a smooth random texture panning right (a stand-in dance clip)."""
    import cv2

    base = cv2.resize(rng.integers(0, 256, (h // 4, w, 3), dtype=np.uint8), (w * 2, h), interpolation=cv2.INTER_CUBIC)
    return [np.ascontiguousarray(base[:, 2 * t:2 * t + w]) for t in range(n)]


def test_tiktok_table_end_to_end_from_clips_and_results(weights, tmp_path):
    import json

    from magicpose_core.evaluate.__main__ import main
    from magicpose_core.evaluate.tiktok import center_crop_resize, jpeg, load_vae, quantise

    rng = np.random.default_rng(7)
    vae = eval_standins.sd15_vae_file(tmp_path)
    clips, results = tmp_path / "clips", tmp_path / "results"
    long_clip = _pan(rng, 18, 40, 56)                     # reference + 17 targets: two 16-frame clips for FID-VID
    short_clip = _pan(rng, 6, 56, 40)
    short_clip[3] = np.full_like(short_clip[3], 90)       # a monochrome target: the dataset skips it
    _save_frames(clips / "vid_a", long_clip)
    _save_frames(clips / "vid_b", short_clip)
    noisy = [np.clip(f.astype(int) + rng.normal(0, 6, f.shape), 0, 255).astype(np.uint8) for f in long_clip[1:]]
    _save_frames(results / "vid_a", [center_crop_resize(f, 32) for f in noisy])              # one per target
    _save_frames(results / "vid_b", [center_crop_resize(f, 32) for f in short_clip[1:]], ".jpg")  # incl. skipped
    out = tmp_path / "out"
    argv = ["tiktok", str(results), "--clips", str(clips), "--vae", str(vae), "--size", "32", "--weights-dir",
            str(weights), "--metrics", "ssim,psnr,psnr_disco,l1,lpips,fid,fid_vid", "--out", str(out)]
    assert main(argv) == 0
    data = json.loads((out / "tiktok.json").read_text())
    m, counts, videos = data["metrics"], data["counts"], data["videos"]
    assert counts == {"videos": 2, "pairs": 17 + 4, "skipped_targets": 1, "fid_vid_clips": 2, "fid_vid_videos": 1}
    assert not data["unavailable"] and set(videos) == {"vid_a", "vid_b"}
    assert m["psnr_disco"]["published"] == "29.53" and "published" not in m["psnr"]
    pooled = (17 * videos["vid_a"]["psnr"] + 4 * videos["vid_b"]["psnr"]) / 21         # every frame pair counts once
    assert m["psnr"]["value"] == pytest.approx(pooled) and m["psnr_disco"]["value"] >= m["psnr"]["value"]
    assert m["fid_vid"]["value"] == pytest.approx(videos["vid_a"]["fid_vid"])          # one video long enough
    assert m["fid_per_video"]["value"] == pytest.approx((videos["vid_a"]["fid"] + videos["vid_b"]["fid"]) / 2)
    assert m["fid"]["value"] > 0 and len(data["per_frame"]["psnr"]) == 21
    table = (out / "tiktok.txt").read_text()
    assert "of 2 videos" in table and "29.53" in table and "FID-VID, per-video mean" in table and "per video:" in table
    # the ground truth on disk is the official script's: 32² crop, VAE round trip, save_image's JPEG
    gt_files = sorted((out / "gt" / "vid_a").glob("*.jpg"))
    assert len(gt_files) == 17 and len(list((out / "gt" / "vid_b").glob("*.jpg"))) == 4
    expected = jpeg(quantise(load_vae(vae)(center_crop_resize(long_clip[1], 32))))[1]
    assert gt_files[0].read_bytes() == expected

    # the official script's own layout (<n>/gen_images + gt_images) scores the same frames to the same values
    official = tmp_path / "official" / "0"
    (official / "gt_images").mkdir(parents=True)
    for f in gt_files:
        (official / "gt_images" / f.name).write_bytes(f.read_bytes())
    _save_frames(official / "gen_images", [center_crop_resize(f, 32) for f in noisy])
    assert main(["tiktok", str(official.parent), "--weights-dir", str(weights), "--metrics", "psnr,psnr_disco,ssim",
                 "--out", str(tmp_path / "out2")]) == 0
    again = json.loads((tmp_path / "out2" / "tiktok.json").read_text())["metrics"]
    for key in ("psnr", "psnr_disco", "ssim"):
        assert again[key]["value"] == pytest.approx(videos["vid_a"][key], abs=1e-12)
    assert main(["tiktok", str(results), "--out", str(tmp_path / "out3")]) == 2       # no clips/VAE: a clear error
