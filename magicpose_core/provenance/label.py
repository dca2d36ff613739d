"""The plain-text provenance label in a video container's metadata, and finding it again.

The label sits next to the ``prompt`` / ``workflow`` tags that core Save Video writes (comfy_extras/
nodes_video.py: JSON strings under those keys; mp4 with ``movflags=use_metadata_tags``). It uses the
standard ``comment`` key, which FFmpeg maps to the mp4 comment atom / Matroska COMMENT tag, so players and
``ffprobe`` show it without knowing MagicPose.
"""
from __future__ import annotations

from typing import Mapping

from .payload import PACK_NAME

LABEL = f"AI-generated with {PACK_NAME}"
LABEL_KEY = "comment"


def label_metadata(version: str) -> dict[str, str]:
    """The container tags to add: {'comment': 'AI-generated with MagicPose 0.1.0'}."""
    return {LABEL_KEY: f"{LABEL} {version}"}


def find_label(metadata: Mapping[str, object]) -> str | None:
    """The first metadata value (any key, any case) that carries the label, else None."""
    for value in metadata.values():
        if isinstance(value, str) and LABEL.lower() in value.lower():
            return value
    return None
