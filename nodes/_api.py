"""The one import of comfy_api in the pack; the API version is pinned here (Comfy-Org/ComfyUI#10951)."""
from comfy_api.v0_0_2 import ComfyExtension, Input, InputImpl, Types, io, ui

__all__ = ["ComfyExtension", "Input", "InputImpl", "Types", "io", "ui"]
