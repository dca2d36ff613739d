"""MagicPose provenance: an invisible watermark on every rendered frame and an 'AI-generated' label.

MagicPose renders real people doing what they never did; its authors name misuse (fake videos for fraud)
and propose watermarking and detection as the remedy (arXiv 2311.12052, impact statement). This package
holds the framework-free parts:

- ``payload``: the 32-bit payload (tag "MP" + pack version, whitened);
- ``watermark``: RivaGAN embed/decode (ONNX files of invisible-watermark, run with onnxruntime, imported
  lazily: a missing package is reported once and never stops the pack);
- ``label``: the 'AI-generated with MagicPose' container tag;
- ``check``: reading both back from files or frames; ``python -m magicpose_core.provenance check FILE...``.
"""
from .label import LABEL, LABEL_KEY, find_label, label_metadata
from .payload import pack_version, payload_bits

__all__ = ["LABEL", "LABEL_KEY", "find_label", "label_metadata", "pack_version", "payload_bits"]
