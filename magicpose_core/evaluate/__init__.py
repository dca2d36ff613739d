"""Evaluation of generated frames: the paper's metrics (DisCo's protocol, with the correct PSNR beside DisCo's
wrapped-around one), pose accuracy and temporal flicker.

``python -m magicpose_core.evaluate GENERATED --gt GT ...`` (see ``__main__``) or ``evaluate(...)`` on frames;
``python -m magicpose_core.evaluate tiktok RESULTS --clips CLIPS --vae SD15`` for the TikTok reference table.
Submodules: frames (sources, resizing), pixel (SSIM/PSNR/PSNR-DisCo/L1), lpips_metric, fid, resnet3d + fid_vid,
face (Face-Cos), pose_accuracy (PCK/NME), flicker (warping error), weights (model folder, opt-in downloads),
report (table/JSON/PNG), runner (``evaluate``), tiktok (MagicPose Table 1's protocol end to end). Optional
libraries (scikit-image, lpips, clean-fid; diffusers for the TikTok ground truth) are imported only by the code
that needs them: ``pip install "magicpose[metrics]"``.
"""
from .frames import load_frames
from .pixel import PSNR_IDENTICAL, MetricUnavailable
from .report import METRICS, EvaluationResult, plot_curves, write_json, write_plot
from .runner import METRIC_GROUPS, EvaluationSettings, evaluate
from .weights import WEIGHTS, default_weights_dir, weight_path

__all__ = ["load_frames", "PSNR_IDENTICAL", "MetricUnavailable", "METRICS", "EvaluationResult", "plot_curves",
           "write_json", "write_plot", "METRIC_GROUPS", "EvaluationSettings", "evaluate", "WEIGHTS",
           "default_weights_dir", "weight_path"]
