"""MagicPose core: framework-free MagicPose logic (no ComfyUI imports; enforced by tests).

MagicPose: "Realistic Human Poses and Facial Expressions Retargeting with Identity-aware Diffusion"
(ICML 2024, arXiv 2311.12052). Official code: Boese0601/MagicDance (research licence; facts only).

Packages, each by what it is (docs/architecture.md):
  model/       the method: attention bank, reference, guidance, temporal sources, the official constants
  weights/     safe loading, validation, conversion, key maps, layouts, downloads   (python -m ...weights)
  media/       video, frame selection, images, model-size geometry
  pose/        keypoints, detectors (base + backends + factory), smoothing, retargeting, drawing
  client/      headless client of a ComfyUI server, several servers                   (python -m ...client)
  provenance/  invisible watermark and label                                          (python -m ...provenance)
  evaluate/    the paper's metrics                                                    (python -m ...evaluate)
Names below are imported on first use, so light subpackages (the headless client) never import torch.
"""
from importlib import import_module

_EXPORTS = {"SITES": ".model.constants", "FitGeometry": ".media.geometry", "fit_geometry": ".media.geometry",
            "MagicPoseReference": ".model.reference"}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    """PEP 562: import the submodule on first use of one of its names."""
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
