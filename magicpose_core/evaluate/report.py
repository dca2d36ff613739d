"""The evaluation result and its three renderings: a text table, a JSON document and a PNG of per-frame curves.

``METRICS`` names every metric once: label, better direction, definition and how it relates to the paper's
protocol (DisCo's evaluation code, docs/evaluation.md §2). The PNG is drawn with Pillow (no matplotlib).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

PROTOCOL = "DisCo tool/metrics (MagicPose Table 1, docs/evaluation.md §2)"


@dataclass(frozen=True)
class MetricInfo:
    label: str
    higher_is_better: bool
    definition: str
    protocol: str   # "matches" / "departs: ..." / "not in the paper: ..."
    note: str = ""  # one-line definition printed under the table and on the plot panel


METRICS: dict[str, MetricInfo] = {
    "ssim": MetricInfo("SSIM", True, "skimage structural_similarity on greyscale uint8 frames (7x7 window, range "
                       "255), generated frame bilinear-resized to the GT size; mean over frames",
                       "matches DisCo"),
    "psnr": MetricInfo("PSNR", True, "20*log10(255/sqrt(MSE)), MSE of the float differences over RGB 0-255, 100 dB "
                       "when MSE = 0; mean over frames", "correct PSNR, not DisCo's; compare with papers that compute "
                       "it correctly (MimicMotion re-ran MagicPose: 18.8), not with DisCo-script tables",
                       "20*log10(255/sqrt(MSE)) with the float MSE: the correct PSNR"),
    "psnr_disco": MetricInfo("PSNR (DisCo protocol)", True, "DisCo's psnr_eval as published: MSE = mean((gen - GT) "
                             "** 2) on the uint8 BGR arrays, so the difference and its square wrap modulo 256 "
                             "(per pixel (gen - GT)^2 mod 256 <= 249, hence never below 24.17 dB); 100 when the "
                             "MSE is 0; mean over frames", "matches DisCo's script (uint8 overflow included); the "
                             "number to set beside the TikTok tables (MagicPose 29.53, DisCo 29.03); not a true "
                             "PSNR", "DisCo's script: uint8 MSE, (gen - GT)^2 wraps mod 256; as in the TikTok "
                             "tables, not a true PSNR"),
    "l1": MetricInfo("L1", False, "mean(|gen - GT|) on 0-255 divided by H*W; mean over frames (resolution-dependent)",
                     "matches DisCo"),
    "lpips": MetricInfo("LPIPS", False, "lpips.LPIPS(net='vgg', v0.1) on [0,1] RGB tensors without normalize=True; "
                        "mean over frames", "matches DisCo (its [0,1] input quirk included); the generated frame is "
                        "resized to the GT size first, where DisCo would fail on unequal sizes"),
    "fid": MetricInfo("FID", False, "clean-fid 'clean' mode: PIL-bicubic 299x299, TorchScript Inception-v3 pool "
                      "features, Frechet distance over all generated vs all GT frames",
                      "matches DisCo's clean-fid path; biased upwards below ~2048 frames (the paper pooled the whole "
                      "TikTok test set); DisCo's gen_eval.sh also ran pytorch-fid, not reproduced"),
    "fid_vid": MetricInfo("FID-VID", False, "Kinetics 3D ResNet-50 (Hara et al.) 2048-d features of every stride-1 "
                          "16-frame window at 112x112 (PIL bicubic, Kinetics mean subtracted); Frechet distance",
                          "matches DisCo's FVD-3DRN50 on frame folders (sample_duration 16); one distance over the "
                          "clips of everything evaluated together (the TikTok table: all videos pooled, clips within "
                          "a video; MagicDance issue #19 asks whether the paper pooled per video)"),
    "fid_per_video": MetricInfo("FID, per-video mean", False, "the FID of each video's generated vs GT frames, "
                                "averaged over the videos", "not the pooled value DisCo's folder scripts give; "
                                "shown because the paper does not say which it used"),
    "fid_vid_per_video": MetricInfo("FID-VID, per-video mean", False, "the FID-VID of each video's clips, averaged "
                                    "over the videos", "not the pooled value; MagicDance issue #19 reproduced "
                                    "57.55 against the paper's 46.3 and asks which the paper used"),
    "face_cos": MetricInfo("Face-Cos", True, "cosine of ArcFace embeddings (ONNX, 112x112 faces aligned from the "
                           "detector's face landmarks) of each generated frame vs its GT frame; mean over frames "
                           "with a face in both", "departs: the paper's Face-Cos has no released code; embedder and "
                           "alignment are this pack's choice, so values are not comparable with 0.426"),
    "pck_body@0.05": MetricInfo("PCK body @0.05", True, "share of target body points detected within 0.05 x the "
                                "person's bbox side on the generated frames", "not in the paper"),
    "pck_body@0.1": MetricInfo("PCK body @0.1", True, "same at 0.1 x the person size", "not in the paper"),
    "pck_hands@0.05": MetricInfo("PCK hands @0.05", True, "share of target hand points within 0.05 x the person "
                                 "size", "not in the paper"),
    "pck_hands@0.1": MetricInfo("PCK hands @0.1", True, "same at 0.1 x the person size", "not in the paper"),
    "nme_face": MetricInfo("NME face", False, "mean landmark error of the 68 face points / the target's "
                           "inter-ocular distance (outer corners), over frames where a face was detected",
                           "not in the paper"),
    "face_detection_rate": MetricInfo("face detection rate", True, "share of frames with a target face where a "
                                      "face was detected on the generated frame", "not in the paper"),
    "warp_error": MetricInfo("flicker (warp error)", False, "Lai et al. warping error of consecutive generated "
                             "frames along the driving video's DIS optical flow, occlusion-masked, RGB [0,1] squared "
                             "error summed over channels; mean over frame pairs", "not in the paper"),
    "warp_error_driving": MetricInfo("flicker floor (driving)", False, "the same warping error of the driving frames "
                                     "themselves: what flow errors alone give", "not in the paper"),
}
PER_FRAME_LABELS = {"ssim": "SSIM", "psnr": "PSNR (dB)", "psnr_disco": "PSNR, DisCo protocol (dB)", "l1": "L1",
                    "lpips": "LPIPS", "face_cos": "Face-Cos", "pck_body@0.1": "PCK body @0.1", "nme_face": "NME face",
                    "warp_error": "flicker (warp error)"}


@dataclass
class EvaluationResult:
    """Summary values, per-frame curves (NaN = not measurable in that frame) and the reasons metrics were skipped."""

    frames: int
    summary: dict[str, float] = field(default_factory=dict)
    per_frame: dict[str, list[float]] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    groups: dict[str, dict[str, float]] = field(default_factory=dict)  # per-video summaries (TikTok table)
    published: dict[str, str] = field(default_factory=dict)            # the paper's value to set beside a metric

    def to_json(self) -> dict:
        def num(v: float):
            return None if v is None or not math.isfinite(v) else float(v)

        metrics = {}
        for key, value in self.summary.items():
            info = METRICS[key]
            metrics[key] = {"value": num(value), "label": info.label,
                            "better": "higher" if info.higher_is_better else "lower",
                            "definition": info.definition, "protocol": info.protocol}
        for key, value in self.published.items():
            if key in metrics:
                metrics[key]["published"] = value
        out = {"frames": self.frames, "protocol": PROTOCOL, "metrics": metrics,
               "per_frame": {k: [num(v) for v in vals] for k, vals in self.per_frame.items()},
               "unavailable": dict(self.unavailable), "counts": dict(self.counts)}
        if self.groups:
            out["videos"] = {name: {k: num(v) for k, v in vals.items()} for name, vals in self.groups.items()}
        return out

    def table(self) -> str:
        paper = bool(self.published)
        rows = [("metric", "value", "", "paper" if paper else "", "protocol")]
        for key, value in self.summary.items():
            info = METRICS[key]
            rows.append((info.label, _fmt(value), "↑" if info.higher_is_better else "↓",
                         self.published.get(key, "-" if paper else ""), info.protocol.split(";")[0]))
        width = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = [f"MagicPose evaluation: {self.frames} frames" + (f" of {len(self.groups)} videos" if self.groups
                                                                  else "")]
        for r in rows:
            paper_col = f"  {r[3]:>{width[3]}}" if paper else ""
            lines.append(f"{r[0]:<{width[0]}}  {r[1]:>{width[1]}} {r[2]:<{width[2]}}{paper_col}  {r[4]}")
        notes = [f"  {METRICS[key].label}: {METRICS[key].note}" for key in self.summary if METRICS[key].note]
        if notes:
            lines += ["", *notes]
        if self.groups:
            keys = [k for k in self.summary if any(k in g for g in self.groups.values())]
            head = ["video", *(METRICS[k].label for k in keys)]
            body = [[name, *(_fmt(g.get(k, float("nan"))) for k in keys)] for name, g in self.groups.items()]
            cols = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
            lines += ["", "per video:"] + ["  ".join(f"{c:>{w}}" for c, w in zip(r, cols)) for r in [head, *body]]
        for key, why in self.unavailable.items():
            lines.append(f"{key}: not computed - {why}")
        return "\n".join(lines)


def _fmt(v: float) -> str:
    if v is None or not math.isfinite(v):
        return "n/a"
    if v != 0 and abs(v) < 1e-2:
        return f"{v:.3e}"
    return f"{v:.4f}"


def write_json(result: EvaluationResult, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.to_json(), indent=2, allow_nan=False))
    return path


def plot_curves(result: EvaluationResult, width: int = 960, panel: int = 140) -> np.ndarray:
    """(H, W, 3) uint8 RGB: one panel per per-frame metric (line over frame index, NaN gaps skipped)."""
    from PIL import Image, ImageDraw, ImageFont

    series = [(k, v) for k, v in result.per_frame.items() if k in PER_FRAME_LABELS and v]
    height = max(1, len(series)) * panel
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    left, right, top, bottom = 70, 16, 22, 20
    if not series:
        draw.text((10, 10), "no per-frame metrics", fill="black", font=font)
    for row, (key, vals) in enumerate(series):
        y0 = row * panel
        arr = np.asarray(vals, dtype=np.float64)
        finite = arr[np.isfinite(arr)]
        mean = float(finite.mean()) if len(finite) else float("nan")
        note = f"  - {METRICS[key].note}" if key in METRICS and METRICS[key].note else ""
        draw.text((left, y0 + 4), f"{PER_FRAME_LABELS[key]}  (mean {_fmt(mean)}, {len(arr)} values){note}",
                  fill="black", font=font)
        x_a, x_b, y_a, y_b = left, width - right, y0 + top, y0 + panel - bottom
        draw.rectangle([x_a, y_a, x_b, y_b], outline=(160, 160, 160))
        if not len(finite):
            continue
        lo, hi = float(finite.min()), float(finite.max())
        if hi - lo < 1e-12:
            lo, hi = lo - 0.5 * max(abs(lo), 1e-3), hi + 0.5 * max(abs(hi), 1e-3)
        draw.text((4, y_a), _fmt(hi), fill=(90, 90, 90), font=font)
        draw.text((4, y_b - 10), _fmt(lo), fill=(90, 90, 90), font=font)
        draw.text((x_a, y_b + 4), "0", fill=(90, 90, 90), font=font)
        draw.text((x_b - 30, y_b + 4), str(len(arr) - 1), fill=(90, 90, 90), font=font)
        n = max(len(arr) - 1, 1)
        segment: list[tuple[float, float]] = []
        for i, v in enumerate(arr):
            if not math.isfinite(v):
                if len(segment) > 1:
                    draw.line(segment, fill=(31, 119, 180), width=2)
                segment = []
                continue
            segment.append((x_a + (x_b - x_a) * i / n, y_b - (y_b - y_a) * (v - lo) / (hi - lo)))
        if len(segment) > 1:
            draw.line(segment, fill=(31, 119, 180), width=2)
        elif len(segment) == 1:
            x, y = segment[0]
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=(31, 119, 180))
    return np.asarray(img)


def write_plot(result: EvaluationResult, path: str | Path) -> Path:
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(plot_curves(result)).save(path)
    return path
