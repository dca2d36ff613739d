"""The `autocast` option at sampling time: a concrete choice as given, `auto` resolved by the measured probe.

`auto` is resolved at a patched MODEL's first model evaluation (per device and MODEL dtype) and then kept, so no
step pays for it; the probe's measurement is also cached per machine in ComfyUI's user directory
(`magicpose/autocast_probe.json`; delete it to measure again). The rule and the probe:
magicpose_core/model/precision.py, docs/performance.md §7.
"""
from __future__ import annotations

import os

import folder_paths
import torch

from ...magicpose_core.model.precision import DTYPES, AutocastDecision, choose_autocast

CHOICES = (*DTYPES, "auto")      # the `autocast` option: off (the MODEL's dtype), bf16, fp16, auto


def default_cache_path() -> str:
    """Where `auto` keeps its per-machine measurement: <ComfyUI user directory>/magicpose/autocast_probe.json."""
    return os.path.join(folder_paths.get_user_directory(), "magicpose", "autocast_probe.json")


def compute_dtype(model) -> torch.dtype:
    """The dtype ComfyUI runs `model` (a BaseModel) in: its manual-cast dtype, else its weights' dtype."""
    get = getattr(model, "get_dtype_inference", None) or model.get_dtype
    return get()


class AutocastResolver:
    """One patched MODEL's autocast dtype: `dtype(device, model)` is cheap after the first call of `auto`."""

    def __init__(self, name: str, cache_path: str | None = None):
        self.name = name
        self.cache_path = cache_path
        self.decisions: dict[tuple[str, torch.dtype], AutocastDecision] = {}

    def dtype(self, device: torch.device, model) -> torch.dtype | None:
        if self.name != "auto":
            return DTYPES[self.name]
        key = (str(device), compute_dtype(model))
        if key not in self.decisions:   # once per device and MODEL dtype, not per step
            self.decisions[key] = choose_autocast(device, model_dtype=key[1],
                                                  cache_path=self.cache_path or default_cache_path())
        return self.decisions[key].dtype
