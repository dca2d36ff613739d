"""Stabilisation: One Euro jitter/lag on synthetic tracks, hysteresis, gap limits, person selection
(docs/pose.md §6)."""
from __future__ import annotations

import numpy as np
import pytest
from support.pose_data import standing_person

from magicpose_core.pose.keypoints import PoseFrame
from magicpose_core.pose.smoothing import (
    SMOOTHING_PRESETS,
    SmoothingConfig,
    apply_hysteresis,
    fill_gaps,
    jitter,
    one_euro_track,
    select_people,
    stabilize,
)

FPS = 30.0


def _track(xy: np.ndarray) -> np.ndarray:
    """(T, N, 2) -> (T, N, 3) with score 1."""
    return np.concatenate([xy, np.ones(xy.shape[:2] + (1,))], axis=-1)


def test_one_euro_cuts_jitter_at_least_in_half():
    rng = np.random.default_rng(0)
    t = np.arange(120) / FPS
    truth = np.stack([200 + 40 * np.sin(2 * np.pi * 0.5 * t), 300 + 25 * np.cos(2 * np.pi * 0.3 * t)], -1)  # (T, 2)
    truth = np.repeat(truth[:, None], 18, axis=1)                                    # (T, 18, 2)
    noisy = truth + rng.normal(0, 3.0, truth.shape)
    out = one_euro_track(_track(noisy), FPS, SMOOTHING_PRESETS["medium"])[..., :2]
    raw_j, out_j = jitter(noisy), jitter(out)
    print(f"jitter raw {raw_j:.2f} px -> filtered {out_j:.2f} px ({raw_j / out_j:.1f}x)")
    assert out_j * 2 <= raw_j
    assert np.abs(out - truth).mean() < np.abs(noisy - truth).mean()  # closer to the truth, not just flatter


@pytest.mark.parametrize("step", [20.0, 50.0, 100.0])
def test_step_response_lags_at_most_two_frames(step):
    xy = np.zeros((40, 18, 2))
    xy[10:] = step                                    # a jump at frame 10 (a fast move)
    lags = {}
    for preset in ("light", "medium"):
        out = one_euro_track(_track(xy), FPS, SMOOTHING_PRESETS[preset])[:, 0, 0]
        lags[preset] = int(np.argmax(out >= 0.9 * step)) - 10   # frames until within 10 % of the new value
        assert out[9] == 0.0 and abs(out[-1] - step) < 0.01 * step
    print(f"{step:.0f} px step: 90 % reached after {lags} frame(s)")
    assert max(lags.values()) <= 2


def test_filter_restarts_after_a_gap_and_scales_with_fps():
    xy = np.full((10, 1, 3), 1.0)
    xy[:5, 0, :2] = 0.0
    xy[5, 0] = 0.0                                    # missing
    xy[6:, 0, :2] = 50.0
    out = one_euro_track(xy, FPS)
    assert out[6, 0, 0] == 50.0                      # not smoothed across the gap
    slow = one_euro_track(_track(np.linspace(0, 10, 30)[:, None, None].repeat(2, -1)), 10.0)
    fast = one_euro_track(_track(np.linspace(0, 10, 30)[:, None, None].repeat(2, -1)), 120.0)
    assert not np.allclose(slow, fast)
    with pytest.raises(ValueError, match="fps"):
        one_euro_track(xy, 0.0)


def test_hysteresis_stops_blinking():
    s = np.array([0.7, 0.45, 0.55, 0.42, 0.35, 0.55, 0.58, 0.65, 0.5])[:, None]
    vis = apply_hysteresis(s, on=0.6, off=0.4)[:, 0]
    assert vis.tolist() == [True, True, True, True, False, False, False, True, True]
    plain = (s[:, 0] >= 0.5)
    assert np.sum(plain[1:] != plain[:-1]) > np.sum(vis[1:] != vis[:-1])


def test_gap_filling_limits():
    tr = np.zeros((30, 1, 3))
    tr[0:5] = [0, 0, 1]
    tr[8:12] = [30, 0, 0.8]                          # gap of 3 -> interpolated
    tr[22:24] = [100, 0, 1]                           # gap of 10 -> stays open (max_gap 8), ends held 3 frames
    out = fill_gaps(tr, max_gap=8, hold=3)
    np.testing.assert_allclose(out[5:8, 0, 0], [7.5, 15, 22.5])
    assert (out[5:8, 0, 2] == 0.8).all()
    assert (out[12:15, 0, 0] == 30).all() and (out[15:19, 0, 2] == 0).all()   # held 3 then dropped
    assert (out[19:22, 0, 0] == 100).all() and (out[24:27, 0, 0] == 100).all() and out[27, 0, 2] == 0


def test_person_selection_largest_index_and_tracking():
    small = standing_person(scale=0.4, offset=(20, 50))
    big = standing_person(scale=0.9, offset=(200, 0))
    frames = [PoseFrame(800, 600, [small, big]), PoseFrame(800, 600, [big, small])]
    assert select_people(frames, "largest") == [big, big]
    left = select_people(frames, "index", 0)
    assert left[0] is small and left[1] is small     # followed by overlap, not by list order
    assert select_people([PoseFrame(10, 10, [])], "largest") == [None]
    with pytest.raises(ValueError):
        select_people(frames, "all")


def test_stabilize_handles_empty_frames_and_thresholds():
    rng = np.random.default_rng(1)
    people = [standing_person(rng=rng) for _ in range(12)]
    people[4] = None                                  # a whole-person miss, short: interpolated
    for p in people[:7]:
        if p is not None:
            p.body[4, 2] = 0.55                       # RWrist above the 0.5 threshold, below the 0.6 "on" level
    out = stabilize(people, FPS, threshold=0.5, config=SmoothingConfig())
    assert out[4] is not None and out[4].body[1, 2] > 0
    assert all(o.body[4, 2] == 0 for o in out[:4])    # hysteresis: not shown until >= 0.6 (frame 7) ...
    assert all(o.body[4, 2] > 0 for o in out[4:])     # ... then held back 3 frames (4-6) and kept
    raw = stabilize(people, FPS, threshold=0.5, config=None)
    assert raw[4] is None and raw[0].body[4, 2] == 0.55   # plain threshold 0.5: shown
    people[0].body[4, 2] = 0.45
    assert stabilize(people, FPS, threshold=0.5, config=None)[0].body[4, 2] == 0
    assert stabilize([], FPS, 0.5) == [] and stabilize([None, None], FPS, 0.5) == [None, None]
