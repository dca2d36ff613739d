"""Evaluation of generated frames: the paper's metrics (DisCo's protocol), pose accuracy and temporal flicker.

``python -m magicpose_core.evaluate GENERATED --gt GT ...`` (see ``__main__``) or ``evaluate(...)`` on frames.
Submodules: frames (sources, resizing), pixel (SSIM/PSNR/L1), lpips_metric, fid, resnet3d + fid_vid, face
(Face-Cos), pose_accuracy (PCK/NME), flicker (warping error), weights (model folder, opt-in downloads),
report (table/JSON/PNG), runner (``evaluate``). Optional libraries (scikit-image, lpips, clean-fid) are
imported only by the metric that needs them: ``pip install "magicpose[metrics]"``.
"""
from .frames import load_frames
from .pixel import PSNR_IDENTICAL, MetricUnavailable
from .report import METRICS, EvaluationResult, plot_curves, write_json, write_plot
from .runner import METRIC_GROUPS, EvaluationSettings, evaluate
from .weights import WEIGHTS, default_weights_dir, weight_path

__all__ = ["load_frames", "PSNR_IDENTICAL", "MetricUnavailable", "METRICS", "EvaluationResult", "plot_curves",
           "write_json", "write_plot", "METRIC_GROUPS", "EvaluationSettings", "evaluate", "WEIGHTS",
           "default_weights_dir", "weight_path"]
