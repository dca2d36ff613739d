"""MagicPose core: framework-free MagicPose logic (no ComfyUI imports; enforced by tests).

MagicPose: "Realistic Human Poses and Facial Expressions Retargeting with Identity-aware Diffusion"
(ICML 2024, arXiv 2311.12052). Official code: Boese0601/MagicDance (research licence; facts only).

Submodules: config, geometry, reference, attention_bank, guidance, checkpoint, keymap, layout, hub,
video, client, pose (keypoints, mapping, render, smoothing, retarget, detect).
"""
from .config import SITES
from .geometry import FitGeometry, fit_geometry
from .reference import MagicPoseReference

__all__ = ["SITES", "FitGeometry", "fit_geometry", "MagicPoseReference"]
