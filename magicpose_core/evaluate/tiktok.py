"""The TikTok reference table: MagicPose Table 1's protocol, end to end, from the test clips and a folder of results.

What the official evaluation does (facts from MagicDance's ``test_tiktok.py`` and its TikTok dataset class, and
from DisCo's ``tool/metrics``, docs/evaluation.md §2), and how this module follows it:

- **Clips.** DisCo's 10 TikTok test sequences, one folder of frames per video, in sorted file-name order.
- **Reference and targets.** Frame 0 is the reference; every later frame is a target (``--img_bin_limit all``),
  except frames that are monochrome (per-channel variances summing to < 0.3) or flat (std of the [-1, 1]
  tensor < 0.02), which the dataset skips.
- **512².** Each frame is centre-cropped to a square of its short side and resized to 512x512 with PIL bilinear
  (torchvision ``RandomResizedCrop(512, scale=(1, 1), ratio=(1, 1))`` falls back to exactly that crop).
- **Ground truth.** Not the frame itself but its VAE reconstruction ``decode(encode(x))`` (fp32), clamped to
  [-1, 1], quantised as ``torchvision.utils.save_image`` does (``x * 255 + 0.5``, truncated) and stored as a JPEG
  (Pillow's default quality 75). The official code samples the encoder posterior; its mean is used here (the
  posterior's std is tiny next to the decoder's own error, and the mean is deterministic).
- **Generated frames.** Stored the same way (JPEG, quality 75), so a result that is not a ``.jpg`` file yet is
  JPEG-encoded once before scoring, and resized to the GT size if it differs (as DisCo does).
- **Metrics.** DisCo's scripts run on one folder of all generated frames and one of all GT frames: SSIM, both
  PSNRs, L1 and LPIPS are means over every frame pair of every video (pooled); FID is one Fréchet distance of all
  generated vs all GT frames (pooled); FID-VID pools the stride-1 16-frame clips of every video (clips never
  span two videos) into one Fréchet distance. The per-video means of FID and FID-VID are reported beside the
  pooled values (``fid_per_video``, ``fid_vid_per_video``): the paper does not say which it used, and
  MagicDance issue #19 reproduced FID-VID 57.55 against the paper's 46.3.

Inputs: ``clips/<video>/<frames>`` and ``results/<video>/<frames>`` (one generated frame per target, or one per
frame 1..N-1 of which the skipped targets are dropped). The official script's own output layout,
``results/<n>/gen_images/`` with ``results/<n>/gt_images/`` (GT already reconstructed), is scored as it is.
"""
from __future__ import annotations

import io
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .frames import IMAGE_EXTENSIONS, read_image
from .pixel import MetricUnavailable
from .report import EvaluationResult
from .runner import PIXEL_METRICS, EvaluationSettings, Progress, evaluate
from .weights import weight_path

log = logging.getLogger("MagicPose")

SIZE = 512                    # test_tiktok.py: image_size 64 latents x 8
JPEG_QUALITY = 75             # Pillow's default, what save_image(..., "NNN.jpg") writes
MONOCHROME_VARIANCE = 0.3     # summed per-channel variance below which the dataset skips a frame
FLAT_STD = 0.02               # std of the [-1, 1] tensor below which it skips a frame
TIKTOK_METRICS = PIXEL_METRICS + ("lpips", "fid", "fid_vid", "face_cos")
DIFFUSERS_INSTALL = "pip install diffusers"
# MagicPose Table 1 as cited in docs/evaluation.md §5 (transcribed from secondary sources): the value
# of our row to set beside each. The correct PSNR has no published counterpart in this protocol.
PUBLISHED = {"fid": "25.50", "ssim": "0.752", "psnr_disco": "29.53", "lpips": "0.292", "l1": "0.81e-4",
             "face_cos": "0.426", "fid_vid": "46.30"}

Reconstruct = Callable[[np.ndarray], np.ndarray]  # (H, W, 3) uint8 RGB -> (H, W, 3) float in [-1, 1]


# ----------------------------------------------------------------------------------------------- frame rules

def sorted_images(folder: str | os.PathLike) -> list[Path]:
    """Image files of a folder in plain sorted name order (the official ``os.listdir(...).sort()``)."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def center_crop_resize(rgb: np.ndarray, size: int = SIZE) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) uint8: centre square of the short side, PIL bilinear resize."""
    from PIL import Image

    h, w = rgb.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = Image.fromarray(rgb[top:top + side, left:left + side])
    return np.asarray(crop.resize((size, size), Image.BILINEAR))


def is_skipped(rgb: np.ndarray, resized: np.ndarray) -> bool:
    """The dataset's two filters: a monochrome source frame, or a flat 512² tensor."""
    variance = rgb.reshape(-1, 3).astype(np.float64).var(axis=0).sum()  # PIL ImageStat var: population variance
    flat = (resized.astype(np.float64) / 127.5 - 1.0).std(ddof=1) < FLAT_STD
    return bool(variance < MONOCHROME_VARIANCE or flat)


def quantise(x: np.ndarray) -> np.ndarray:
    """(H, W, 3) float in [-1, 1] -> uint8 as ``torchvision.utils.save_image`` (clamp, x * 255 + 0.5, truncate)."""
    y = (np.clip(x, -1.0, 1.0) + 1.0) * 0.5
    return np.clip(y * 255.0 + 0.5, 0, 255).astype(np.uint8)


def jpeg(rgb: np.ndarray, quality: int = JPEG_QUALITY) -> tuple[np.ndarray, bytes]:
    """(frame as decoded back, JPEG bytes) with Pillow's defaults (quality 75, 4:2:0), as the official files."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    data = buf.getvalue()
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB")), data


# ------------------------------------------------------------------------------------------------------- VAE

def load_vae(path: str | os.PathLike, device: str = "cpu") -> Reconstruct:
    """``decode(encode(x))`` with the SD1.5 VAE of an ldm-format file (an SD1.5 checkpoint such as the
    converted ``model_state-110000.sd15.fp16.safetensors``, or a bare VAE), run by diffusers' AutoencoderKL in
    fp32. Widths are read from the file."""
    import torch

    try:
        from diffusers import AutoencoderKL
        from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
    except ImportError:
        raise MetricUnavailable(f"the ground-truth VAE reconstruction needs diffusers: {DIFFUSERS_INSTALL}") from None
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(path))
    else:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
        sd = sd.get("state_dict", sd)
    prefix = "first_stage_model." if any(k.startswith("first_stage_model.") for k in sd) else ""
    parts = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")
    vae = {k[len(prefix):]: v.float() for k, v in sd.items() if k[len(prefix):].startswith(parts) and
           k.startswith(prefix)}
    widths = []
    while f"encoder.down.{len(widths)}.block.0.conv1.weight" in vae:
        widths.append(vae[f"encoder.down.{len(widths)}.block.0.conv1.weight"].shape[0])
    if not widths or "decoder.conv_in.weight" not in vae:
        raise ValueError(f"{path} holds no ldm VAE (first_stage_model.encoder/decoder keys)")
    layers = sum(1 for k in vae if k.startswith("encoder.down.0.block.") and k.endswith(".conv1.weight"))
    latent, dec_width = vae["decoder.conv_in.weight"].shape[1], vae["decoder.conv_in.weight"].shape[0]
    if dec_width != widths[-1]:
        raise ValueError(f"{path}: the VAE decoder is {dec_width} wide but the encoder {widths[-1]}: not an SD VAE")
    config = {"in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"] * len(widths),
              "up_block_types": ["UpDecoderBlock2D"] * len(widths), "block_out_channels": widths,
              "layers_per_block": layers, "latent_channels": latent, "norm_num_groups": 32, "sample_size": SIZE}
    model = AutoencoderKL(**config)
    model.load_state_dict(convert_ldm_vae_checkpoint(vae, config), strict=True)
    model = model.to(device).eval()

    @torch.no_grad()
    def reconstruct(rgb: np.ndarray) -> np.ndarray:
        x = torch.tensor(rgb, dtype=torch.float32).div(127.5).sub(1.0).permute(2, 0, 1)[None].to(device)  # (1,3,H,W)
        z = model.encode(x).latent_dist.mean                       # (1, 4, H/8, W/8); the scale factor cancels
        return model.decode(z).sample[0].permute(1, 2, 0).cpu().numpy()  # (H, W, 3) float, about [-1, 1]

    return reconstruct


# ----------------------------------------------------------------------------------------------- one video

@dataclass
class Video:
    """One test video: prepared ground truth, the generated frames paired with it, what was skipped."""

    name: str
    gt: list[np.ndarray]
    generated: list[np.ndarray]
    skipped_targets: int = 0


def prepare_ground_truth(clip: str | os.PathLike, reconstruct: Reconstruct, size: int = SIZE,
                         out: str | os.PathLike | None = None) -> tuple[list[np.ndarray], list[bool], np.ndarray]:
    """(GT frames of the kept targets as written by the official script, skipped flag per target 1..N-1, the
    size² reference frame). Writes ``out/NNN.jpg`` (and ``out/reference.png``) when ``out`` is given."""
    files = sorted_images(clip)
    if len(files) < 2:
        raise ValueError(f"{clip}: a test clip needs a reference frame and at least one target, found {len(files)}")
    reference = center_crop_resize(read_image(files[0]), size)
    gt, skipped = [], []
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        from PIL import Image

        Image.fromarray(reference).save(Path(out) / "reference.png")
    for f in files[1:]:
        rgb = read_image(f)
        small = center_crop_resize(rgb, size)
        skipped.append(is_skipped(rgb, small))
        if skipped[-1]:
            continue
        frame, data = jpeg(quantise(reconstruct(small)))
        if out is not None:
            (Path(out) / f"{len(gt):03d}.jpg").write_bytes(data)
        gt.append(frame)
    return gt, skipped, reference


def _as_stored(path: Path) -> np.ndarray:
    """A generated frame as the official script stores it: its JPEG file, or JPEG-encoded once if it is not."""
    rgb = read_image(path)
    return rgb if path.suffix.lower() in (".jpg", ".jpeg") else jpeg(rgb)[0]


def pair_video(name: str, generated: Sequence[Path], gt: list[np.ndarray], skipped: list[bool]) -> Video:
    """Match the generated files with the kept targets: one per kept target, or one per target 1..N-1."""
    if len(generated) == len(skipped) and len(gt) != len(skipped):
        generated = [g for g, s in zip(generated, skipped) if not s]       # drop the frames of skipped targets
    if len(generated) != len(gt):
        raise ValueError(f"video {name}: {len(generated)} generated frames for {len(gt)} targets ({sum(skipped)} "
                         f"skipped of frames 1..{len(skipped)}); generate one frame per target, frame 0 being the "
                         "reference")
    return Video(name, gt, [_as_stored(p) for p in generated], sum(skipped))


def _official_layout(folder: Path) -> bool:
    return (folder / "gen_images").is_dir() and (folder / "gt_images").is_dir()


def load_videos(results: str | os.PathLike, clips: str | os.PathLike | None = None,
                reconstruct: Reconstruct | None = None, size: int = SIZE, gt_out: str | os.PathLike | None = None,
                progress: Progress | None = None) -> list[Video]:
    """Every video of ``results`` paired with its ground truth (prepared from ``clips`` with ``reconstruct``, or
    the official script's ``gt_images``)."""
    folders = sorted(p for p in Path(results).iterdir() if p.is_dir())
    if not folders:
        raise ValueError(f"{results}: no video folders (expected results/<video>/<frames>)")
    if clips is not None and Path(clips).is_dir():
        unscored = sorted({p.name for p in Path(clips).iterdir() if p.is_dir()} - {f.name for f in folders})
        if unscored:
            log.warning("MagicPose evaluate: %d test clip(s) have no results and are not in the table: %s",
                        len(unscored), ", ".join(unscored))
    videos = []
    for i, folder in enumerate(folders):
        if _official_layout(folder):
            gen = [_as_stored(p) for p in sorted_images(folder / "gen_images")]
            gt = [read_image(p) for p in sorted_images(folder / "gt_images")]
            if len(gen) != len(gt):
                raise ValueError(f"{folder}: {len(gen)} gen_images but {len(gt)} gt_images")
            videos.append(Video(folder.name, gt, gen))
        else:
            if clips is None or reconstruct is None:
                raise ValueError(f"{folder} is not the official layout (gen_images/ + gt_images/): give the test "
                                 "clips and a VAE to build its ground truth")
            clip = Path(clips) / folder.name
            if not clip.is_dir():
                raise ValueError(f"no test clip {clip} for the results folder {folder}")
            out = Path(gt_out) / folder.name if gt_out is not None else None
            gt, skipped, _ = prepare_ground_truth(clip, reconstruct, size, out)
            videos.append(pair_video(folder.name, sorted_images(folder), gt, skipped))
        if progress is not None:
            progress("ground truth", i + 1, len(folders))
    return videos


# ----------------------------------------------------------------------------------------------- the table

def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def evaluate_videos(videos: Sequence[Video], settings: EvaluationSettings, detector=None,
                    progress: Progress | None = None) -> EvaluationResult:
    """The pooled table over all videos (the paper's), per-video FID/FID-VID means beside, per-video rows."""
    metrics = tuple(m for m in settings.metrics if m in TIKTOK_METRICS)
    per_video = EvaluationSettings(metrics=tuple(m for m in metrics if m not in ("fid", "fid_vid")),
                                   weights_dir=settings.weights_dir, allow_download=settings.allow_download,
                                   device=settings.device, lpips_proper_range=settings.lpips_proper_range)
    res = EvaluationResult(frames=sum(len(v.generated) for v in videos), published=dict(PUBLISHED))
    for v in videos:
        r = evaluate(v.generated, v.gt, detector=detector, settings=per_video, progress=progress)
        res.groups[v.name] = dict(r.summary)
        for key, vals in r.per_frame.items():
            res.per_frame.setdefault(key, []).extend(vals)
        res.unavailable.update(r.unavailable)
    for key, vals in res.per_frame.items():
        res.summary[key] = _mean(vals)                                    # every frame pair of every video
    res.counts.update(videos=len(videos), pairs=res.frames, skipped_targets=sum(v.skipped_targets for v in videos))
    if "fid" in metrics:
        _pooled(res, "fid", videos, settings, _inception)
    if "fid_vid" in metrics:
        _pooled(res, "fid_vid", videos, settings, _clips)
    res.summary = {k: res.summary[k] for k in (*TIKTOK_METRICS, "fid_per_video", "fid_vid_per_video")
                   if k in res.summary}
    return res


def _inception(settings: EvaluationSettings):
    from .fid import InceptionFeatures

    return InceptionFeatures(weight_path("fid", settings.weights_dir, settings.allow_download), settings.device)


def _clips(settings: EvaluationSettings):
    from .fid_vid import ClipFeatures

    return ClipFeatures(weight_path("fid_vid", settings.weights_dir, settings.allow_download), settings.device)


def _pooled(res: EvaluationResult, key: str, videos: Sequence[Video], settings: EvaluationSettings, make) -> None:
    """One Fréchet distance over the features of all videos, and the mean of the per-video distances."""
    from .fid import frechet_from_features
    from .fid_vid import CLIP_FRAMES

    try:
        features = make(settings)
        usable = [v for v in videos if key != "fid_vid" or len(v.generated) >= CLIP_FRAMES]
        if not usable:
            raise MetricUnavailable(f"needs a video of at least {CLIP_FRAMES} frames")
        gen = [features(v.generated) for v in usable]
        gt = [features(v.gt) for v in usable]
        res.summary[key] = frechet_from_features(np.concatenate(gen), np.concatenate(gt))
        per = [frechet_from_features(a, b) for a, b in zip(gen, gt) if len(a) >= 2]
        res.summary[f"{key}_per_video"] = _mean(per)
        for v, a, b in zip(usable, gen, gt):
            if len(a) >= 2:
                res.groups[v.name][key] = frechet_from_features(a, b)
        if key == "fid_vid":
            res.counts.update(fid_vid_clips=sum(len(a) for a in gen), fid_vid_videos=len(usable))
    except MetricUnavailable as e:
        log.info("MagicPose evaluate: %s skipped: %s", key, e)
        res.unavailable[key] = str(e)
