"""Video stabilisation of keypoint tracks: person selection, confidence hysteresis, gap filling, One Euro filter.

MagicPose generates every frame independently (docs/method.md §9), so keypoint jitter becomes flicker and
a joint that blinks on and off makes a limb flash; the authors name OpenPose's instability as their main
weakness. What is done here, in order (docs/pose.md §6.2):

1. person selection per frame: the largest (or the i-th from the left) in the first frame, then the person
   whose box overlaps the previous choice most (IoU), so the track does not jump between people;
2. confidence hysteresis: a point appears at score >= ``on`` and disappears below ``off``;
3. gaps: interior gaps up to ``max_gap`` frames are linearly interpolated; at the ends of a track the nearest
   value is held for up to ``hold`` frames; longer gaps stay missing (never extrapolated far);
4. the One Euro filter (Casiez, Roussel, Vogel, "1 Euro Filter", CHI 2012) per coordinate, fps-aware, reset
   after each gap, with a lower cut-off for the face than for the body.

A track is an array (T, 130, 3): body 18 + face 70 + left hand 21 + right hand 21, (x, y, score), score 0 =
missing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .keypoints import BODY_POINTS, FACE_POINTS, HAND_POINTS, PARTS, Person, PoseFrame

SLICES = {"body": slice(0, 18), "face": slice(18, 88), "left_hand": slice(88, 109), "right_hand": slice(109, 130)}
TRACK_POINTS = BODY_POINTS + FACE_POINTS + 2 * HAND_POINTS  # 130
PERSON_MODES = ("largest", "index", "all")


@dataclass(frozen=True)
class SmoothingConfig:
    """One Euro parameters in pixel units (time base = the video's fps) and the track-repair limits."""

    min_cutoff: float = 0.7        # Hz; lower = smoother when still (docs/pose.md §6.2 starts at 1.0)
    beta: float = 0.03             # speed coefficient, per px/s at 512 px; higher = less lag when moving
    d_cutoff: float = 1.0          # Hz, cut-off of the speed estimate (Casiez et al.)
    face_factor: float = 0.5       # face min_cutoff = min_cutoff x this (smoother: dots are small)
    hysteresis: float = 0.1        # on = threshold + this, off = threshold - this (0.6 / 0.4 around 0.5)
    max_gap: int = 8               # interior gaps up to this many frames are interpolated
    hold: int = 3                  # frames a value is held at the start/end of a track


SMOOTHING_PRESETS = {
    "off": None,
    "light": SmoothingConfig(min_cutoff=1.5, beta=0.05),
    "medium": SmoothingConfig(),   # jitter / 2.5 on noisy tracks, <= 2 frames lag on 20-100 px steps at 30 fps
    "strong": SmoothingConfig(min_cutoff=0.3, beta=0.02),
}


# ---------------------------------------------------------------------------------------------------------------
# person selection


def _iou(a: tuple[float, float, float, float] | None, b: tuple[float, float, float, float] | None) -> float:
    if a is None or b is None:
        return 0.0
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _pick(people: list[Person], mode: str, index: int) -> Person | None:
    people = [p for p in people if not p.is_empty]
    if not people:
        return None
    if mode == "largest":
        return max(people, key=lambda p: p.area())
    ordered = sorted(people, key=lambda p: (p.bbox()[0] + p.bbox()[2]) / 2)  # left to right by box centre
    return ordered[index] if 0 <= index < len(ordered) else None


def select_people(frames: list[PoseFrame], mode: str = "largest", index: int = 0,
                  min_iou: float = 0.3) -> list[Person | None]:
    """One person per frame (None where none): ``largest`` box, or the ``index``-th from the left; after the
    first choice, the person overlapping the previous choice most (IoU >= ``min_iou``) is followed."""
    if mode not in ("largest", "index"):
        raise ValueError(f"person selection must be 'largest' or 'index', got {mode!r}")
    out: list[Person | None] = []
    prev_box = None
    for f in frames:
        chosen = None
        if prev_box is not None and len(f.people) > 1:
            scored = [(_iou(prev_box, p.bbox()), k) for k, p in enumerate(f.people) if not p.is_empty]
            if scored:
                best, k = max(scored)
                if best >= min_iou:
                    chosen = f.people[k]
        if chosen is None:
            chosen = _pick(f.people, mode, index)
        out.append(chosen)
        if chosen is not None:
            prev_box = chosen.bbox()
    return out


# ---------------------------------------------------------------------------------------------------------------
# tracks


def person_to_track(person: Person | None) -> np.ndarray:
    """Person -> (130, 3); missing parts are missing points."""
    t = np.zeros((TRACK_POINTS, 3))
    if person is not None:
        for part in PARTS:
            v = getattr(person, part)
            if v is not None:
                t[SLICES[part]] = v
    return t


def track_to_person(row: np.ndarray) -> Person | None:
    """(130, 3) -> Person (a part with no point becomes None), or None when nothing is present."""
    if not (row[:, 2] > 0).any():
        return None
    parts = {}
    for part in PARTS:
        v = row[SLICES[part]].copy()
        parts[part] = v if (v[:, 2] > 0).any() or part == "body" else None
    return Person(**parts)


def apply_hysteresis(scores: np.ndarray, on: float, off: float) -> np.ndarray:
    """(T, N) scores -> (T, N) visibility: a point appears at score >= on and stays until score < off."""
    if off > on:
        raise ValueError(f"hysteresis needs off <= on, got off={off}, on={on}")
    vis = np.zeros(scores.shape, dtype=bool)
    state = np.zeros(scores.shape[1], dtype=bool)
    for t in range(scores.shape[0]):
        s = scores[t]
        state = np.where(state, s >= off, s >= on) & (s > 0)
        vis[t] = state
    return vis


def fill_gaps(track: np.ndarray, max_gap: int = 8, hold: int = 3) -> np.ndarray:
    """(T, N, 3) -> (T, N, 3): interpolate interior gaps of <= max_gap frames; longer gaps and the ends of the
    track hold the nearest value for <= hold frames; score of an interpolated point = the lower of its two
    neighbours, of a held point = the neighbour's."""
    out = track.copy()
    T = track.shape[0]
    for n in range(track.shape[1]):
        present = np.flatnonzero(track[:, n, 2] > 0)
        if len(present) == 0:
            continue
        for a, b in zip(present[:-1], present[1:]):
            gap = b - a - 1
            if 0 < gap <= max_gap:
                w = (np.arange(1, gap + 1) / (gap + 1))[:, None]  # (gap, 1)
                out[a + 1:b, n, :2] = track[a, n, :2] * (1 - w) + track[b, n, :2] * w
                out[a + 1:b, n, 2] = min(track[a, n, 2], track[b, n, 2])
            elif gap > max_gap:  # too long to interpolate: hold each side briefly, leave the middle missing
                out[a + 1:a + 1 + hold, n] = track[a, n]
                out[b - hold:b, n] = track[b, n]
        first, last = present[0], present[-1]
        out[max(0, first - hold):first, n] = track[first, n]
        out[last + 1:min(T, last + 1 + hold), n] = track[last, n]
    return out


class OneEuroFilter:
    """Vectorised One Euro filter over N 2-D points (Casiez et al., CHI 2012), time base 1/fps.

    ``__call__(xy (N, 2), present (N,))`` filters the present points; a point that was missing restarts from its
    raw value (never smoothed across a gap).
    """

    def __init__(self, fps: float, min_cutoff: np.ndarray | float = 1.0, beta: float = 0.05,
                 d_cutoff: float = 1.0) -> None:
        if not (fps > 0 and math.isfinite(fps)):
            raise ValueError(f"fps must be a positive number, got {fps!r}")
        self.dt = 1.0 / fps
        self.min_cutoff = np.asarray(min_cutoff, dtype=np.float64)
        self.beta, self.d_cutoff = beta, d_cutoff
        self.x: np.ndarray | None = None     # (N, 2) last filtered value
        self.dx: np.ndarray | None = None    # (N, 2) last filtered speed
        self.alive: np.ndarray | None = None  # (N,) had a value last frame

    def _alpha(self, cutoff: np.ndarray | float) -> np.ndarray:
        tau = 1.0 / (2 * math.pi * np.asarray(cutoff))
        return 1.0 / (1.0 + tau / self.dt)

    def __call__(self, xy: np.ndarray, present: np.ndarray) -> np.ndarray:
        xy = np.asarray(xy, dtype=np.float64)
        if self.x is None:
            self.x, self.dx = xy.copy(), np.zeros_like(xy)
            self.alive = np.zeros(len(xy), dtype=bool)
        cont = present & self.alive                                      # points filtered, not restarted
        dx_raw = (xy - self.x) / self.dt
        dx = self.dx + self._alpha(self.d_cutoff) * (dx_raw - self.dx)
        speed = np.linalg.norm(dx, axis=1)                               # (N,)
        a = self._alpha(self.min_cutoff + self.beta * speed)[:, None]    # (N, 1)
        x = self.x + a * (xy - self.x)
        self.x = np.where(cont[:, None], x, xy)
        self.dx = np.where(cont[:, None], dx, 0.0)
        self.alive = present.copy()
        return self.x.copy()


def one_euro_track(track: np.ndarray, fps: float, config: SmoothingConfig = SmoothingConfig()) -> np.ndarray:
    """(T, N, 3) -> (T, N, 3) with the One Euro filter on the present points; scores unchanged.
    N = 130 (a full track) gets the lower face cut-off; any other N uses the body cut-off."""
    n = track.shape[1]
    cut = np.full(n, config.min_cutoff)
    if n == TRACK_POINTS:
        cut[SLICES["face"]] = config.min_cutoff * config.face_factor
    f = OneEuroFilter(fps, cut, config.beta, config.d_cutoff)
    out = track.copy()
    for t in range(track.shape[0]):
        present = track[t, :, 2] > 0
        out[t, :, :2] = np.where(present[:, None], f(track[t, :, :2], present), track[t, :, :2])
    return out


def stabilize(people: list[Person | None], fps: float, threshold: float,
              config: SmoothingConfig | None = SmoothingConfig(), unit_scale: float = 1.0) -> list[Person | None]:
    """One selected person per frame, raw scores -> a stable track (hysteresis, gaps, One Euro).

    ``config`` None: only the detector threshold is applied (no temporal processing). ``unit_scale``: pixels
    are multiplied by this for the filter (512 / the frame's short side makes the presets resolution-free).
    """
    if config is None:
        return [None if p is None else track_to_person(person_to_track(p.thresholded(threshold))) for p in people]
    if not people:
        return []
    track = np.stack([person_to_track(p) for p in people])  # (T, 130, 3)
    on = min(threshold + config.hysteresis, 1.0)
    off = max(threshold - config.hysteresis, 0.0)
    vis = apply_hysteresis(track[:, :, 2], on, off)          # (T, 130)
    track[~vis] = 0.0
    track = fill_gaps(track, config.max_gap, config.hold)
    track[..., :2] *= unit_scale
    track = one_euro_track(track, fps, config)
    track[..., :2] /= unit_scale
    return [track_to_person(row) for row in track]


def jitter(xy: np.ndarray) -> float:
    """Mean |x[t+1] - 2 x[t] + x[t-1]| over a (T, ..., 2) trajectory (docs/pose.md §6.1's jitter metric)."""
    xy = np.asarray(xy, dtype=np.float64)
    second = xy[2:] - 2 * xy[1:-1] + xy[:-2]  # (T-2, ..., 2)
    return float(np.linalg.norm(second, axis=-1).mean())
