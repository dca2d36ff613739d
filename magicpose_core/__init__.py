"""MagicPose core: framework-free MagicPose logic (no ComfyUI imports; enforced by tests).

MagicPose: "Realistic Human Poses and Facial Expressions Retargeting with Identity-aware Diffusion"
(ICML 2024, arXiv 2311.12052). Official code: Boese0601/MagicDance (research licence; facts only).

Submodules: config, geometry, reference, attention_bank, guidance, checkpoint, keymap, layout, hub,
video, client, websocket, pose (keypoints, mapping, render, smoothing, retarget, detect, pipeline).
Names below are imported on first use, so light submodules (the headless client) never import torch.
"""
from importlib import import_module

_EXPORTS = {"SITES": ".config", "FitGeometry": ".geometry", "fit_geometry": ".geometry",
            "MagicPoseReference": ".reference"}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    """PEP 562: import the submodule on first use of one of its names."""
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
