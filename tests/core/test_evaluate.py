"""magicpose_core.evaluate with known answers: DisCo's pixel metrics, pose accuracy on a shifted sequence,
flicker of a flickering vs a steady video, the report files, opt-in weight downloads and the CLI."""
from __future__ import annotations

import http.server
import json
import math
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support.pose_data import standing_person

from magicpose_core.evaluate import (
    PSNR_IDENTICAL,
    EvaluationSettings,
    MetricUnavailable,
    evaluate,
    load_frames,
    pixel,
    weight_path,
    write_json,
    write_plot,
)
from magicpose_core.evaluate.flicker import warp_errors
from magicpose_core.evaluate.pose_accuracy import pose_accuracy
from magicpose_core.pose.keypoints import PoseFrame, frames_to_pose_keypoint

ROOT = Path(__file__).resolve().parents[2]
NO_NETWORKS = ("ssim", "psnr", "psnr_disco", "l1", "pose", "flicker")


def scene(t: int, h: int = 96, w: int = 128, speed: float = 2.0) -> np.ndarray:
    """A smooth textured RGB scene translating right by ``speed`` px per frame (flow-friendly)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    x = xx - speed * t
    img = np.stack([128 + 60 * np.sin(x / 9.0) * np.cos(yy / 11.0),
                    128 + 50 * np.sin((x + yy) / 13.0),
                    128 + 40 * np.cos(x / 7.0 - yy / 17.0)], axis=-1)
    return np.clip(img, 0, 255).round().astype(np.uint8)


def test_identical_videos_give_ssim_1_capped_psnr_and_zero_l1():
    frames = [scene(t) for t in range(4)]
    r = evaluate(frames, [f.copy() for f in frames],
                 settings=EvaluationSettings(metrics=("ssim", "psnr", "psnr_disco", "l1")))
    assert r.summary["ssim"] == pytest.approx(1.0, abs=1e-12)
    assert r.summary["psnr"] == r.summary["psnr_disco"] == PSNR_IDENTICAL == 100.0
    assert r.summary["l1"] == 0.0
    assert r.per_frame["psnr"] == r.per_frame["psnr_disco"] == [100.0] * 4


@pytest.mark.parametrize("k", [1, 3, 10])
def test_psnr_and_l1_of_additive_noise_are_analytic(k):
    rng = np.random.default_rng(k)
    gt = rng.integers(20, 236, (64, 80, 3)).astype(np.uint8)           # no clipping for |noise| <= 10
    noise = k * rng.choice([-1, 1], size=gt.shape)                      # |e| = k everywhere: MSE = k^2
    gen = (gt.astype(int) + noise).astype(np.uint8)
    assert pixel.psnr(gen, gt) == pytest.approx(20 * math.log10(255 / k), abs=1e-9)
    assert pixel.psnr_disco(gen, gt) == pixel.psnr(gen, gt)             # k^2 < 256: nothing wraps
    assert pixel.l1(gen, gt) == pytest.approx(k / (64 * 80), rel=1e-12)  # DisCo: mean |diff| / (H * W)
    assert pixel.ssim(gen, gt) < 1.0


# offset d everywhere: the correct MSE is d^2; DisCo's uint8 MSE is d^2 mod 256 (the difference d fits in uint8,
# its square wraps): d = 10 -> 100 (equal), 16 -> 0 (DisCo's 100 dB "identical"), 17 -> 33, 20 -> 144
@pytest.mark.parametrize("d, disco_mse", [(10, 100), (16, 0), (17, 33), (20, 144)])
def test_constant_offset_gives_d_squared_and_d_squared_mod_256(d, disco_mse):
    rng = np.random.default_rng(d)
    gt = rng.integers(0, 256 - d, (48, 64, 3)).astype(np.uint8)
    for gen, ref in ((gt + np.uint8(d), gt), (gt, gt + np.uint8(d))):   # either sign: (-d)^2 = d^2 mod 256 too
        assert pixel.psnr(gen, ref) == pytest.approx(20 * math.log10(255 / d), abs=1e-12)
        expected = 100.0 if disco_mse == 0 else 20 * math.log10(255 / math.sqrt(disco_mse))
        assert pixel.psnr_disco(gen, ref) == pytest.approx(expected, abs=1e-12)
    assert (d * d) % 256 == disco_mse


def test_wrap_around_makes_disco_s_psnr_higher_and_never_below_24_17_db():
    rng = np.random.default_rng(0)
    gt = scene(0, 128, 160)
    shifted = np.roll(gt, 4, axis=1)                                    # a 4-pixel shift
    noisy = np.clip(gt + rng.normal(0, 10, gt.shape), 0, 255).round().astype(np.uint8)
    unrelated = rng.integers(0, 256, gt.shape, dtype=np.uint8)
    for gen in (shifted, noisy, unrelated):
        # independent of pixel.py: Python integers, (gen - gt)^2 reduced modulo 256 as uint8 arithmetic does
        wrapped = np.vectorize(lambda x, y: ((int(x) - int(y)) ** 2) % 256)(gen, gt).mean()
        assert pixel.psnr_disco(gen, gt) == pytest.approx(20 * math.log10(255 / math.sqrt(wrapped)), abs=1e-9)
        assert pixel.psnr_disco(gen, gt) > pixel.psnr(gen, gt)
        assert pixel.psnr_disco(gen, gt) >= 20 * math.log10(255 / math.sqrt(249))   # 249: the largest square mod 256
    assert pixel.psnr_disco(shifted, gt) - pixel.psnr(shifted, gt) > 3
    assert pixel.psnr(unrelated, gt) < 12 < 24 < pixel.psnr_disco(unrelated, gt)


def test_disco_psnr_equals_disco_s_expression_on_cv2_imread_frames(tmp_path):
    import cv2

    gt, gen = scene(0), np.roll(scene(0), 3, axis=0)
    for name, img in (("gt.png", gt), ("gen.png", gen)):
        Image.fromarray(img).save(tmp_path / name)
    a, b = cv2.imread(str(tmp_path / "gen.png")), cv2.imread(str(tmp_path / "gt.png"))   # BGR uint8, as DisCo reads
    mse = np.mean((a - b) ** 2)                                         # DisCo's psnr_eval expression, verbatim
    assert pixel.psnr_disco(load_frames(tmp_path / "gen.png")[0], load_frames(tmp_path / "gt.png")[0]) == \
        pytest.approx(20 * math.log10(255.0 / math.sqrt(mse)), abs=1e-12)


def _ssim_reference(x: np.ndarray, y: np.ndarray, win: int = 7) -> float:
    """SSIM from Wang et al. (2004) with scikit-image's default settings, written out independently: 7x7
    uniform windows, sample (N-1) covariances, K1 = 0.01, K2 = 0.03, L = 255, mean over the windows that lie
    wholly inside the image."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    wx = np.lib.stride_tricks.sliding_window_view(x, (win, win))       # (H-6, W-6, 7, 7)
    wy = np.lib.stride_tricks.sliding_window_view(y, (win, win))
    n = win * win
    mx, my = wx.mean((-2, -1)), wy.mean((-2, -1))
    vx = ((wx - mx[..., None, None]) ** 2).sum((-2, -1)) / (n - 1)
    vy = ((wy - my[..., None, None]) ** 2).sum((-2, -1)) / (n - 1)
    cxy = ((wx - mx[..., None, None]) * (wy - my[..., None, None])).sum((-2, -1)) / (n - 1)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    s = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return float(s.mean())   # skimage's full-size map cropped by 3 px: exactly the windows inside the image


def test_ssim_matches_an_independent_implementation_on_disco_s_greyscale():
    import cv2

    a, b = scene(0), scene(3)
    assert np.array_equal(pixel.gray(a), cv2.cvtColor(a[:, :, ::-1].copy(), cv2.COLOR_BGR2GRAY))  # DisCo's call
    assert pixel.ssim(a, b) == pytest.approx(_ssim_reference(pixel.gray(a), pixel.gray(b)), abs=1e-9)
    assert 0.2 < pixel.ssim(a, b) < 0.95


@pytest.mark.parametrize("c, d", [(100, 20), (30, 60), (200, -50)])
def test_ssim_of_flat_frames_is_the_luminance_term(c, d):
    # flat frames: every variance and covariance is 0, so SSIM = (2 c (c+d) + C1) / (c^2 + (c+d)^2 + C1)
    a, b = np.full((32, 40, 3), c, np.uint8), np.full((32, 40, 3), c + d, np.uint8)
    c1 = (0.01 * 255) ** 2
    assert pixel.ssim(a, b) == pytest.approx((2 * c * (c + d) + c1) / (c * c + (c + d) ** 2 + c1), abs=1e-12)


def test_generated_frames_are_resized_to_the_ground_truth_like_disco():
    import cv2

    gt = scene(0)
    big = cv2.resize(gt, (256, 192), interpolation=cv2.INTER_NEAREST)
    r = evaluate([big], [gt], settings=EvaluationSettings(metrics=("psnr",)))
    assert r.summary["psnr"] == pytest.approx(pixel.psnr(cv2.resize(big, (128, 96)), gt))
    assert r.summary["psnr"] > 30


def test_unequal_lengths_are_an_error_unless_truncated():
    frames = [scene(t) for t in range(3)]
    with pytest.raises(ValueError, match="truncation"):
        evaluate(frames, frames[:2], settings=EvaluationSettings(metrics=("psnr",)))
    r = evaluate(frames, frames[:2], settings=EvaluationSettings(metrics=("psnr",), truncate=True))
    assert r.counts["pairs"] == 2


# ------------------------------------------------------------------------------------------------ flicker

def test_flickering_video_scores_far_worse_than_a_steady_one():
    driving = [scene(t) for t in range(6)]
    steady = [f.copy() for f in driving]
    flicker = [np.clip(f.astype(int) + (25 if t % 2 else -25), 0, 255).astype(np.uint8) for t, f in enumerate(driving)]
    steady_err, floor = warp_errors(steady, driving)
    flicker_err, _ = warp_errors(flicker, driving)
    assert len(steady_err) == 5 and steady_err == floor          # generated == driving: exactly the flow floor
    assert np.mean(steady_err) < 2e-3
    assert np.mean(flicker_err) > 10 * np.mean(steady_err)
    # brightness jumps of 50/255 on unclipped pixels: about 3 * (50/255)^2 per pixel
    assert 0.05 < np.mean(flicker_err) < 3 * (50 / 255) ** 2 + 0.01


def test_flicker_uses_the_ground_truth_motion_when_no_driving_video_is_given():
    frames = [scene(t) for t in range(4)]
    r = evaluate(frames, frames, settings=EvaluationSettings(metrics=("flicker",)))
    assert r.summary["warp_error"] == r.summary["warp_error_driving"]
    r2 = evaluate(frames, settings=EvaluationSettings(metrics=("flicker",)))
    assert "flicker" in r2.unavailable and "driving" in r2.unavailable["flicker"]


# -------------------------------------------------------------------------------------------- pose accuracy

def _shifted(person, dx: float):
    return PoseFrame(512, 512, [person.transformed(lambda xy: xy + [dx, 0.0])])


def test_shifted_pose_sequence_has_the_known_pck_and_nme():
    person = standing_person()
    size = 340.0                                      # body bbox: x 186..326, y 90..430
    iod = float(np.linalg.norm(person.face[36, :2] - person.face[45, :2]))
    shifts = [0.0, 0.07 * size, 0.2 * size]           # within 0.05 and 0.1 / within 0.1 only / outside both
    targets = [PoseFrame(512, 512, [person])] * 3
    acc = pose_accuracy(targets, [_shifted(person, s) for s in shifts])
    assert acc.body_total == 3 * 18 and acc.hand_total == 3 * 42
    assert acc.pck_body(0.05) == pytest.approx(1 / 3) and acc.pck_body(0.1) == pytest.approx(2 / 3)
    assert acc.pck_hands(0.05) == pytest.approx(1 / 3) and acc.pck_hands(0.1) == pytest.approx(2 / 3)
    assert acc.per_frame_nme == pytest.approx([s / iod for s in shifts])
    assert acc.nme_face == pytest.approx(np.mean(shifts) / iod)
    assert acc.face_detection_rate == 1.0


def test_missed_detections_count_as_wrong_and_lower_the_face_rate():
    person = standing_person()
    acc = pose_accuracy([PoseFrame(512, 512, [person])] * 2, [_shifted(person, 0.0), PoseFrame(512, 512, [])])
    assert acc.pck_body(0.05) == 0.5 and acc.face_detection_rate == 0.5
    assert np.isnan(acc.per_frame_nme[1]) and acc.nme_face == 0.0


class IndexDetector:
    """Stand-in detector: frame t (its pixel (0, 0) holds t) -> the target shifted by shifts[t], at 256x256."""

    threshold = 0.5

    def __init__(self, person, shifts):
        self.person, self.shifts = person, shifts

    def __call__(self, rgb):
        t = int(rgb[0, 0, 0])
        return PoseFrame(rgb.shape[1], rgb.shape[0], [self.person.transformed(lambda xy: xy / 2 + [self.shifts[t], 0])])

    def reset(self):
        pass


def test_evaluate_scales_normalised_target_keypoints_to_the_generated_frames():
    person = standing_person()                                   # target on a 512 canvas, frames are 256x256
    frames = [np.full((256, 256, 3), t, np.uint8) for t in range(3)]
    shifts = [0.0, 0.07 * 170, 0.2 * 170]
    target = frames_to_pose_keypoint([PoseFrame(512, 512, [person])] * 3, normalized=True)
    r = evaluate(frames, target_pose=target, detector=IndexDetector(person, shifts),
                 settings=EvaluationSettings(metrics=("pose",)))
    assert r.summary["pck_body@0.05"] == pytest.approx(1 / 3) and r.summary["pck_body@0.1"] == pytest.approx(2 / 3)
    assert r.per_frame["pck_body@0.1"] == [1.0, 1.0, 0.0]


# ----------------------------------------------------------------------------------------------- reporting

def test_report_json_table_and_plot(tmp_path):
    frames = [scene(t) for t in range(5)]
    noisy = [np.clip(f.astype(int) + 5 * (t % 2), 0, 255).astype(np.uint8) for t, f in enumerate(frames)]
    r = evaluate(noisy, frames, settings=EvaluationSettings(metrics=NO_NETWORKS))
    data = json.loads(write_json(r, tmp_path / "r.json").read_text())
    assert data["frames"] == 5 and set(data["metrics"]) >= {"ssim", "psnr", "psnr_disco", "l1", "warp_error"}
    psnr, disco = data["metrics"]["psnr"], data["metrics"]["psnr_disco"]
    assert psnr["protocol"].startswith("correct PSNR") and psnr["better"] == disco["better"] == "higher"
    assert disco["protocol"].startswith("matches DisCo's script") and "mod 256" in disco["definition"]
    assert data["per_frame"]["psnr"][0] == data["per_frame"]["psnr_disco"][0] == 100.0
    assert len(data["per_frame"]["warp_error"]) == 4 and "pose" in data["unavailable"]
    png = np.asarray(Image.open(write_plot(r, tmp_path / "r.png")))
    assert png.shape[0] == 5 * 140 and png.shape[2] == 3 and (png < 200).any()   # 5 curve panels, something drawn
    table = r.table()
    assert "PSNR (DisCo protocol)" in table and "pose: not computed" in table
    assert "  PSNR: 20*log10(255/sqrt(MSE)) with the float MSE" in table            # one-line definitions
    assert "  PSNR (DisCo protocol): DisCo's script: uint8 MSE" in table


def test_nan_values_become_null_in_json(tmp_path):
    person = standing_person(face=False)
    r = evaluate([np.zeros((8, 8, 3), np.uint8)], target_pose=frames_to_pose_keypoint([PoseFrame(512, 512, [person])]),
                 detector=IndexDetector(person, [0.0]), settings=EvaluationSettings(metrics=("pose",)))
    data = json.loads(write_json(r, tmp_path / "r.json").read_text())
    assert data["metrics"]["nme_face"]["value"] is None


# ------------------------------------------------------------------------------------------------- weights

@pytest.fixture()
def file_server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(root), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.RequestHandlerClass.log_message = lambda *a: None
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_missing_weights_say_where_and_download_only_when_allowed(tmp_path, file_server):
    root, base = file_server
    (root / "inception-2015-12-05.pt").write_bytes(b"stand-in inception")
    folder = tmp_path / "eval"
    with pytest.raises(MetricUnavailable, match=r"inception-2015-12-05\.pt.*allow the download"):
        weight_path("fid", folder)
    assert not folder.exists()
    path = weight_path("fid", folder, allow_download=True, url=f"{base}/inception-2015-12-05.pt")
    assert path.read_bytes() == b"stand-in inception"
    assert weight_path("fid", folder) == path                   # present now: no network
    with pytest.raises(MetricUnavailable, match="never downloaded"):
        weight_path("fid_vid", folder, allow_download=True)


def test_a_download_with_the_wrong_hash_is_refused_and_leaves_nothing(tmp_path, file_server):
    root, base = file_server
    (root / "vgg16-397923af.pth").write_bytes(b"not vgg")
    folder = tmp_path / "eval"
    with pytest.raises(MetricUnavailable, match="SHA-256"):
        weight_path("lpips", folder, allow_download=True, url=f"{base}/vgg16-397923af.pth")
    assert list(folder.iterdir()) == []
    with pytest.raises(MetricUnavailable, match="could not download"):
        weight_path("lpips", folder, allow_download=True, url=f"{base}/absent.pth")


# ------------------------------------------------------------------------------------------------------ CLI

def _write_folder(folder: Path, frames) -> Path:
    folder.mkdir(parents=True)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"frame_{i}.png")
    return folder


def test_cli_writes_table_json_and_plot(tmp_path):
    frames = [scene(t) for t in range(11)]
    gt = _write_folder(tmp_path / "gt", frames)
    gen = _write_folder(tmp_path / "gen", [np.clip(f.astype(int) + 3, 0, 255).astype(np.uint8) for f in frames])
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "magicpose_core.evaluate", str(gen), "--gt", str(gt), "--out",
                           str(out), "--weights-dir", str(tmp_path / "none"), "--name", "run1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "SSIM" in proc.stdout and "lpips: not computed" in proc.stdout and "vgg16-397923af.pth" in proc.stdout
    data = json.loads((out / "run1.json").read_text())
    assert data["frames"] == 11 and 0.9 < data["metrics"]["ssim"]["value"] < 1.0
    assert data["metrics"]["psnr"]["value"] == pytest.approx(20 * math.log10(255 / 3), abs=0.2)  # +3 minus clipping
    assert data["metrics"]["psnr_disco"]["value"] == pytest.approx(data["metrics"]["psnr"]["value"])   # 9 < 256
    assert "PSNR (DisCo protocol)" in proc.stdout
    assert (out / "run1.png").stat().st_size > 1000


def test_cli_reads_videos_and_rejects_bad_input(tmp_path):
    from magicpose_core.media.video import encode_video

    frames = [scene(t) for t in range(6)]
    video = encode_video(iter(frames), str(tmp_path / "v.mp4"), fps=12).path
    decoded = load_frames(video)
    assert len(decoded) == 6 and decoded[0].shape == (96, 128, 3)
    proc = subprocess.run([sys.executable, "-m", "magicpose_core.evaluate", video, "--gt", video, "--metrics",
                           "ssim,psnr", "--out", str(tmp_path / "o")], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and json.loads((tmp_path / "o" / "magicpose_eval.json").read_text())[
        "metrics"]["ssim"]["value"] == 1.0
    pose = tmp_path / "pose.json"                          # a person the frames do not show: PCK 0, no face found
    pose.write_text(json.dumps(frames_to_pose_keypoint([PoseFrame(128, 96, [standing_person(0.2)])] * 6)))
    proc = subprocess.run([sys.executable, "-m", "magicpose_core.evaluate", video, "--pose", str(pose), "--detector",
                           "mediapipe", "--metrics", "pose", "--out", str(tmp_path / "p")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / "p" / "magicpose_eval.json").read_text())["metrics"]
    assert metrics["pck_body@0.1"]["value"] == 0.0 and metrics["face_detection_rate"]["value"] == 0.0
    proc = subprocess.run([sys.executable, "-m", "magicpose_core.evaluate", str(tmp_path / "nowhere")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "neither a video file nor an image folder" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "magicpose_core.evaluate", video, "--metrics", "ssim,bogus"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unknown metric" in proc.stderr


# ------------------------------------------------------------------------------------- TikTok frame rules
# the official script's transforms, run through torchvision itself: the TikTok table's frames must be identical

@pytest.mark.parametrize("h, w", [(96, 64), (64, 90), (70, 70)])
def test_tiktok_crop_is_torchvision_s_random_resized_crop_at_scale_1(h, w):
    import torchvision.transforms as T

    from magicpose_core.evaluate.tiktok import center_crop_resize

    rgb = np.random.default_rng(h * w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    official = T.RandomResizedCrop(48, scale=(1.0, 1.0), ratio=(1.0, 1.0), interpolation=T.InterpolationMode.BILINEAR)
    assert np.array_equal(center_crop_resize(rgb, 48), np.asarray(official(Image.fromarray(rgb))))


def test_tiktok_ground_truth_is_stored_as_torchvision_save_image_writes_it(tmp_path):
    import torch
    from torchvision.utils import make_grid, save_image

    from magicpose_core.evaluate.tiktok import jpeg, quantise

    x = np.random.default_rng(0).normal(0, 0.7, (40, 48, 3)).astype(np.float32)   # a decoder output, past [-1, 1]
    grid = make_grid(torch.from_numpy(x).permute(2, 0, 1)[None].clamp(-1, 1).add(1).mul(0.5), nrow=1)
    save_image(grid, tmp_path / "a.png")                 # lossless: the quantisation alone
    save_image(grid, tmp_path / "a.jpg")                 # what test_tiktok.py writes: Pillow's default JPEG
    assert np.array_equal(quantise(x), np.asarray(Image.open(tmp_path / "a.png").convert("RGB")))
    frame, data = jpeg(quantise(x))
    assert data == (tmp_path / "a.jpg").read_bytes()
    assert np.array_equal(frame, np.asarray(Image.open(tmp_path / "a.jpg").convert("RGB")))


def test_tiktok_skips_monochrome_and_flat_targets_like_the_dataset():
    from magicpose_core.evaluate.tiktok import center_crop_resize, is_skipped

    textured = scene(0)
    flat = np.full((96, 128, 3), 37, np.uint8)
    faint = flat.copy()
    faint[::2, ::2] += 1                                 # varies, but std of the [-1, 1] tensor ~ 0.004 < 0.02
    assert not is_skipped(textured, center_crop_resize(textured, 64))
    assert is_skipped(flat, center_crop_resize(flat, 64)) and is_skipped(faint, center_crop_resize(faint, 64))
