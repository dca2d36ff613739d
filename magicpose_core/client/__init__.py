"""Headless client of a ComfyUI server running the MagicPose workflows; CLI: ``python -m magicpose_core.client``."""
from .core import *  # noqa: F401,F403
