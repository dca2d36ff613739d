"""Frame chunks, step-major: one sampling run over every frame, each model evaluation done `rows` frames at a time.

The sampler sees the whole batch of frames (so its result does not depend on the chunk size), while the networks
only ever see `rows` frames: a CALC_COND_BATCH wrapper splits the batch, runs ComfyUI's own cond batching on each
chunk and concatenates the results. Every chunk of a step runs before the next step, so one cached bank per step
serves them all and memory does not grow with the number of steps.

Per-frame conditioning follows its rows: a ControlNet (chain) whose hint has one image per frame is copied once per
chunk with its rows of the hint, and per-row tensors in the model conditions are sliced; batch-1 ones broadcast as
ComfyUI broadcasts them.
"""
from __future__ import annotations

import comfy.model_management
import torch


class ChunkState:
    """Per sampling run: the chunk copies of ControlNet chains (released at the end of the run)."""

    def __init__(self):
        self.controls: dict[tuple[int, int, int], object] = {}

    def clear(self) -> None:
        self.controls.clear()


def calc_in_chunks(executor, model, conds: list, x_in: torch.Tensor, timestep: torch.Tensor, model_options: dict, *,
                   rows: int, state: ChunkState) -> list[torch.Tensor]:
    """`executor(model, conds, x_in, timestep, model_options)` on rows [s, s + rows) at a time; x_in (N, C, h, w)."""
    n = x_in.shape[0]
    if rows <= 0 or n <= rows:
        return executor(model, conds, x_in, timestep, model_options)
    parts: list[list[torch.Tensor]] | None = None
    for s in range(0, n, rows):
        comfy.model_management.throw_exception_if_processing_interrupted()
        e = min(n, s + rows)
        sub = [None if c is None else [_cond_rows(d, s, e, n, model, state) for d in c] for c in conds]
        t = timestep[s:e] if timestep.ndim and timestep.shape[0] == n else timestep
        out = executor(model, sub, x_in[s:e], t, model_options)
        _release_hints(sub)
        parts = [[o] for o in out] if parts is None else [p + [o] for p, o in zip(parts, out)]
    return [torch.cat(p) for p in parts]  # per cond: (N, C, h, w)


def _cond_rows(d: dict, s: int, e: int, n: int, model, state: ChunkState) -> dict:
    """A processed cond dict restricted to rows [s, e) of an n-row batch."""
    d = dict(d)
    if d.get("control") is not None:
        d["control"] = _control_rows(d["control"], s, e, n, model, state)
    mc = d.get("model_conds")
    if mc:
        d["model_conds"] = {k: _rows_of(v, s, e, n) for k, v in mc.items()}
    mask = d.get("mask")
    if torch.is_tensor(mask) and mask.shape[0] == n and n > 1:
        d["mask"] = mask[s:e]
    return d


def _rows_of(c, s: int, e: int, n: int):
    """A model cond (CONDRegular-like, `.cond` tensor) with its rows [s, e) when it has one row per frame."""
    t = getattr(c, "cond", None)
    if torch.is_tensor(t) and t.ndim and t.shape[0] == n and n > 1 and hasattr(c, "_copy_with"):
        return c._copy_with(t[s:e])
    return c


def _control_rows(control, s: int, e: int, n: int, model, state: ChunkState):
    """A copy of a ControlNet chain with the hints' rows [s, e) (cached for the run); `pre_run` as the sampler did."""
    key = (id(control), s, e)
    if key not in state.controls:
        top = _copy_chain(control, s, e, n)
        ms = model.model_sampling
        top.pre_run(model, lambda p: ms.percent_to_sigma(p))
        state.controls[key] = top
    return state.controls[key]


def _copy_chain(control, s: int, e: int, n: int):
    c = control.copy()
    hint = getattr(control, "cond_hint_original", None)
    if torch.is_tensor(hint) and hint.shape[0] == n and n > 1:
        c.cond_hint_original = hint[s:e]  # (N, 3, H, W) -> (e - s, 3, H, W), a view
    prev = getattr(control, "previous_controlnet", None)
    c.set_previous_controlnet(None if prev is None else _copy_chain(prev, s, e, n))
    return c


def _release_hints(conds: list) -> None:
    """Drop the device copies of the chunk's hints (the next step of this chunk recomputes them)."""
    for c in conds:
        for d in c or ():
            ctrl = d.get("control")
            while ctrl is not None:
                ctrl.cond_hint = None
                ctrl = getattr(ctrl, "previous_controlnet", None)
