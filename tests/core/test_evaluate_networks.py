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
