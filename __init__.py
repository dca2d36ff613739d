"""MagicPose for ComfyUI: V3 entry point. Exports only comfy_entrypoint and WEB_DIRECTORY."""
from .nodes import MagicPoseExtension

WEB_DIRECTORY = "./web"


async def comfy_entrypoint() -> MagicPoseExtension:
    return MagicPoseExtension()
