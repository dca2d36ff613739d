"""Temporal flicker: the warping error of the generated frames along the driving video's motion.

Not in the paper. Definition (Lai et al., ECCV 2018, "Learning Blind Video Temporal Consistency"), with the
optical flow taken from the **driving** frames, so a generator that follows the motion scores low and one that
flickers or boils scores high:

    E_t = sum_x M_t(x) * ||G_{t+1}(x) - G_t(x + F_{t+1->t}(x))||^2 / sum_x M_t(x)

on RGB in [0, 1], summed over the channels; ``F`` is OpenCV's DIS optical flow (``DISOpticalFlow``, medium
preset) between consecutive greyscale driving frames resized to the generated size, ``G_t(x + F)`` is
``cv2.remap`` (bilinear), and ``M`` keeps pixels that pass the forward-backward consistency test of
Sundaram et al. (|F_b + F_f(x + F_b)|^2 <= 0.01 (|F_b|^2 + |F_f(x + F_b)|^2) + 0.5) and land inside the frame.
The summary is the mean over the T-1 frame pairs. The same error on the driving frames themselves is the
floor set by the flow (``warp_error_driving``).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def _flow(dis, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(H, W, 2) flow from grey frame a to grey frame b."""
    return dis.calc(a, b, None)


def _sample(img: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """img(x + flow(x)) by bilinear remapping; (H, W, C) float32."""
    import cv2

    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(img, gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def consistency_mask(back: np.ndarray, fwd: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels of frame t+1 whose backward flow is confirmed by the forward flow and stays inside."""
    h, w = back.shape[:2]
    fwd_at = _sample(fwd, back)  # F_{t->t+1} at x + F_{t+1->t}(x), (H, W, 2)
    s = back + fwd_at
    ok = (s ** 2).sum(-1) <= 0.01 * ((back ** 2).sum(-1) + (fwd_at ** 2).sum(-1)) + 0.5
    gx, gy = np.meshgrid(np.arange(w), np.arange(h))
    tx, ty = gx + back[..., 0], gy + back[..., 1]
    return ok & (tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1)


def warp_errors(generated: Sequence[np.ndarray], driving: Sequence[np.ndarray]) -> tuple[list[float], list[float]]:
    """(per-pair warping error of the generated frames, same for the driving frames), T-1 values each.

    Both sequences are (H, W, 3) uint8 RGB; the driving frames are resized to the generated size.
    """
    import cv2

    if len(generated) != len(driving):
        raise ValueError(f"flicker needs one driving frame per generated frame: {len(generated)} vs {len(driving)}")
    if len(generated) < 2:
        raise ValueError("flicker needs at least 2 frames")
    h, w = generated[0].shape[:2]
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    drv = [cv2.resize(d, (w, h)) if d.shape[:2] != (h, w) else d for d in driving]
    grey = [cv2.cvtColor(d, cv2.COLOR_RGB2GRAY) for d in drv]
    gen_err, drv_err = [], []
    for t in range(len(generated) - 1):
        back = _flow(dis, grey[t + 1], grey[t])  # F_{t+1->t}, (H, W, 2)
        fwd = _flow(dis, grey[t], grey[t + 1])   # F_{t->t+1}
        mask = consistency_mask(back, fwd)       # (H, W)
        n = max(int(mask.sum()), 1)
        for seq, out in ((generated, gen_err), (drv, drv_err)):
            prev = seq[t].astype(np.float32) / 255.0
            nxt = seq[t + 1].astype(np.float32) / 255.0
            diff = (nxt - _sample(prev, back)) ** 2  # (H, W, 3)
            out.append(float(diff.sum(-1)[mask].sum() / n))
    return gen_err, drv_err
