"""The error the weights modules raise for a file that is not the weights MagicPose needs, and the advice their
messages end with (MagicPose, ICML 2024, arXiv 2311.12052; weights: HF `Boese0601/MagicDance`)."""
from __future__ import annotations

from . import hub

SHOW = 5  # offending keys quoted in error messages
HINT = (f"MagicPose needs the official {hub.FILENAME} ({hub.URL}; saved as {hub.LOCAL_FILENAME} or under its own "
        f"name) or the parts converted from it (`{hub.CONVERT_COMMAND}`).")


class CheckpointError(ValueError):
    """A file that is not (a readable, complete, code-free copy of) the weights MagicPose needs."""

    __module__ = "magicpose_core.weights.errors"  # ComfyUI shows module + name; else a machine path
