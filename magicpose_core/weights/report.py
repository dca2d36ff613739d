"""`inspect`: a human-readable report of a weights file (what it is, whether it is valid MagicPose weights, its key
groups, dtypes, parameter count and metadata), for `python -m magicpose_core.checkpoint inspect FILE`.

Valid means the exact layout of the official `model_state-110000.th` (MagicPose, ICML 2024, arXiv 2311.12052;
HF `Boese0601/MagicDance`) or of one of its converted parts (validate.py).
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from . import hub
from . import layout as L
from .describe import compare_layout, describe, group_counts, shapes_of
from .errors import CheckpointError
from .safe_load import looks_like_safetensors, read_state_dict, safetensors_info
from .validate import expected_official_layout, normalize_appearance, normalize_pose_controlnet


def inspect(path: str | os.PathLike) -> str:
    """A human-readable report: what the file is, its key groups, dtypes, parameter count, metadata."""
    path = Path(path)
    meta: dict[str, str] = {}
    if path.is_file() and looks_like_safetensors(path):
        shapes, dtypes, meta = safetensors_info(path)
    else:
        sd = read_state_dict(path)
        shapes = shapes_of(sd)
        dtypes = {k: str(v.dtype).replace("torch.", "") for k, v in sd.items()}
    kind = describe(shapes)
    expected, cfg, dec = expected_official_layout(shapes)
    if not compare_layout(shapes, expected):
        kind = (f"the official MagicPose checkpoint ({hub.FILENAME} layout, valid; UNet model_channels "
                f"{cfg.model_channels}, channel_mult {cfg.channel_mult}; VAE decoder width {dec})")
    else:
        for label, fn in (("MagicPose appearance part", normalize_appearance),
                          ("MagicPose pose ControlNet part", normalize_pose_controlnet)):
            try:
                fn(shapes, path)  # shapes stand in for tensors: only names and shapes are checked
            except CheckpointError:
                continue
            kind = f"a {label} (valid), " + kind
            break
    dcount = Counter(dtypes.values())
    lines = [f"file: {path} ({path.stat().st_size / 1e9:.3f} GB)" if path.is_file() else f"file: {path}",
             f"kind: {kind}",
             f"tensors: {len(shapes)}, parameters: {L.count_params(shapes) / 1e6:.2f} M",
             "dtypes: " + ", ".join(f"{k} {n}" for k, n in dcount.items()),
             "groups:"]
    lines += [f"  {g:45s} {n}" for g, n in group_counts(shapes).items()]
    if meta:
        lines.append("metadata:")
        lines += [f"  {k}: {v}" for k, v in sorted(meta.items())]
    return "\n".join(lines)
