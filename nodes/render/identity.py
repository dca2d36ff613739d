"""What determines a streaming render's frames, as JSON-able values for the resume key (windows.render_key).

Models are identified by their weights without hashing gigabytes: for every tensor of the state dict its name,
shape, dtype and 256 evenly spaced values; LoRA and other weight patches of a MODEL (their adapters' weights) the
same way. Conditioning,
the reference latent and its keypoints are hashed whole (they are small). Objects of other kinds count by type.
"""
from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import torch

SAMPLES = 256  # values read per tensor
MAX_DEPTH = 8


def _tensor(h, t: torch.Tensor, whole: bool) -> None:
    h.update(f"T{tuple(t.shape)}{t.dtype}".encode())
    if t.is_meta or t.numel() == 0:
        return
    flat = t.detach().reshape(-1)
    if not whole and flat.numel() > SAMPLES:
        flat = flat[::flat.numel() // SAMPLES][:SAMPLES]                 # (SAMPLES,) evenly spaced values
    h.update(flat.to("cpu", torch.float32).contiguous().numpy().tobytes())


def _feed(h, obj, whole: bool, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        h.update(b"<deep>")
    elif obj is None or isinstance(obj, (bool, int, float, str, bytes)):
        h.update(repr(obj).encode())
    elif isinstance(obj, torch.Tensor):
        _tensor(h, obj, whole)
    elif isinstance(obj, np.ndarray):
        _tensor(h, torch.from_numpy(np.ascontiguousarray(obj)), whole)
    elif isinstance(obj, dict):
        for k in sorted(obj, key=str):
            h.update(str(k).encode())
            _feed(h, obj[k], whole, depth + 1)
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}".encode())
        for v in obj:
            _feed(h, v, whole, depth + 1)
    elif isinstance(obj, torch.nn.Module):
        _feed(h, obj.state_dict(), whole, depth + 1)
    elif hasattr(obj, "patches") and hasattr(obj, "model"):                       # comfy ModelPatcher
        _feed(h, obj.model, whole, depth + 1)
        _feed(h, obj.patches, whole, depth + 1)
        _feed(h, sorted(getattr(obj, "object_patches", {}) or {}), whole, depth + 1)
    elif hasattr(obj, "first_stage_model"):                                       # comfy VAE
        _feed(h, obj.first_stage_model, whole, depth + 1)
    elif hasattr(obj, "control_model"):                                           # comfy ControlNet
        _feed(h, obj.control_model, whole, depth + 1)
        _feed(h, [getattr(obj, "strength", None), getattr(obj, "timestep_percent_range", None)], whole, depth + 1)
    elif isinstance(getattr(obj, "weights", None), (list, tuple)):                # comfy LoRA / weight adapters
        h.update(type(obj).__qualname__.encode())
        _feed(h, obj.weights, whole, depth + 1)
    elif dataclasses.is_dataclass(obj):
        h.update(type(obj).__name__.encode())
        for f in dataclasses.fields(obj):
            h.update(f.name.encode())
            _feed(h, getattr(obj, f.name), whole, depth + 1)
    else:
        h.update(type(obj).__qualname__.encode())


def fingerprint(obj, whole: bool = False) -> str:
    """sha256 (hex) of an object as described in the module docstring; ``whole``: every tensor value counts."""
    h = hashlib.sha256()
    _feed(h, obj, whole)
    return h.hexdigest()
