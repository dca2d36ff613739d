"""ExtractPose's pipeline, framework-free: detect -> select -> stabilise -> fit -> retarget -> render.

Coordinates: detection, selection and smoothing work in each source frame's pixels; the fit
(``magicpose_core.media.geometry``, the same code path as the reference and the frames) maps them to the output canvas,
where retargeting happens (the reference keypoints live there); maps are drawn back at source resolution and
fitted like the frames (render.py, docs/pose.md §1.6), and POSE_KEYPOINT is written on the output canvas, in pixels
(default: what comfyui_controlnet_aux's DWPose and core SDPose write, and what both draw) or 0-1.

Missing people: a few empty frames are a warning (smoothing bridges short gaps); a sequence with nobody in any
frame is an error naming the fixes, never a silent run of black maps.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import torch

from ..media.geometry import FIT_MODES, FitGeometry, fit_geometry, model_size_problem
from .keypoints import Person, PoseFrame, looks_normalised
from .render import RENDER_CANVASES, render_pose_fitted
from .retarget import RETARGET_MODES, retarget_track
from .smoothing import PERSON_MODES, SMOOTHING_PRESETS, select_people, stabilize

log = logging.getLogger("MagicPose")

ON_MISSING = ("warn", "error")
OUTPUT_COORDINATES = ("pixels", "normalized")


@dataclass(frozen=True)
class ExtractSettings:
    """Everything ExtractPose does after detection (node defaults)."""

    width: int = 512
    height: int = 512
    fit: str = "center_crop"            # as the official code (docs/method.md §5.5)
    body: bool = True
    hands: bool = True
    face: bool = True
    person: str = "largest"             # largest | index | all
    person_index: int = 0               # with person = index: 0 = leftmost
    smoothing: str = "medium"           # off | light | medium | strong (smoothing.SMOOTHING_PRESETS)
    fps: float = 30.0
    retarget: str = "none"              # none | global | per_bone
    strength: float = 1.0
    face_transfer: bool = True
    render_canvas: str = "source"       # source (official) | training | output
    threshold: float = 0.5              # the detector's score threshold
    on_missing: str = "warn"            # a frame with no person: warn (empty map) or error
    output_coordinates: str = "pixels"  # POSE_KEYPOINT output: pixels of the output canvas, or 0-1

    def __post_init__(self) -> None:
        for name, value, options in (("fit", self.fit, FIT_MODES), ("person", self.person, PERSON_MODES),
                                     ("smoothing", self.smoothing, tuple(SMOOTHING_PRESETS)),
                                     ("retarget", self.retarget, RETARGET_MODES),
                                     ("render_canvas", self.render_canvas, RENDER_CANVASES),
                                     ("on_missing", self.on_missing, ON_MISSING),
                                     ("output_coordinates", self.output_coordinates, OUTPUT_COORDINATES)):
            if value not in options:
                raise ValueError(f"{name} {value!r} is not one of {', '.join(options)}")
        if problem := model_size_problem(self.width, self.height):
            raise ValueError(f"pose map size: {problem}")
        if not 0.0 <= self.strength <= 1.0:
            raise ValueError(f"retarget strength must be in [0, 1], got {self.strength}")
        if not self.fps > 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        if self.person == "all" and self.retarget != "none":
            raise ValueError("retargeting follows one person: set person to 'largest' or 'index', or retarget to "
                             "'none'")


@dataclass
class PoseSequence:
    """The result: per frame, the people in source pixels (for drawing) and in output pixels."""

    source: list[PoseFrame]
    output: list[PoseFrame]
    geometries: list[FitGeometry]
    missing: list[int]                  # indices of frames with no person

    def window(self, start: int, stop: int) -> "PoseSequence":
        """Frames [start, stop) (a streaming render's window), with their own missing indices."""
        return PoseSequence(self.source[start:stop], self.output[start:stop], self.geometries[start:stop],
                            [i - start for i in self.missing if start <= i < stop])


def detect_sequence(detector, frames: Iterable[np.ndarray], on_frame: Callable[[int], None] | None = None,
                    raw: bool = True) -> list[PoseFrame]:
    """Run a detector over HWC uint8 frames; raw scores by default (the pipeline thresholds them)."""
    if hasattr(detector, "reset"):
        detector.reset()
    out = []
    for i, rgb in enumerate(frames):
        out.append(detector.detect_raw(rgb) if raw else detector(rgb))
        if on_frame is not None:
            on_frame(i)
    return out


def reference_person(frame: PoseFrame | None, width: int, height: int, fit: str) -> Person | None:
    """The largest person of a reference PoseFrame, fitted to the output canvas (width x height)."""
    if frame is None:
        return None
    people = [p for p in frame.people if not p.is_empty]
    if not people:
        return None
    p = max(people, key=lambda q: q.area())
    if (frame.width, frame.height) == (width, height):
        return p.copy()
    g = fit_geometry(frame.width, frame.height, width, height, fit)
    return p.transformed(g.map_points)


def _inside_only(p: Person, width: int, height: int) -> Person:
    """Points outside the canvas become missing (POSE_KEYPOINT consumers assume on-canvas coordinates)."""
    out = p.copy()
    for _, v in out.parts():
        outside = (v[:, 0] < 0) | (v[:, 0] >= width) | (v[:, 1] < 0) | (v[:, 1] >= height)
        v[outside] = 0.0
    return out


def process_sequence(raw: list[PoseFrame], settings: ExtractSettings,
                     reference: Person | None = None) -> PoseSequence:
    """Raw detections (source pixels, raw scores) -> selected, stabilised, retargeted people."""
    s = settings
    geoms: dict[tuple[int, int], FitGeometry] = {}
    geometries = []
    for f in raw:
        key = (f.width, f.height)
        if key not in geoms:
            geoms[key] = fit_geometry(f.width, f.height, s.width, s.height, s.fit)
        geometries.append(geoms[key])

    if s.person == "all":
        if s.smoothing != "off":
            log.warning("ExtractPose: smoothing follows one person; with person = 'all' it is skipped")
        src_people = [[q for q in (p.thresholded(s.threshold) for p in f.people) if not q.is_empty] for f in raw]
    else:
        chosen = select_people(raw, s.person, s.person_index)
        config = SMOOTHING_PRESETS[s.smoothing]
        unit = 512.0 / min(raw[0].width, raw[0].height) if raw else 1.0
        stable = stabilize(chosen, s.fps, s.threshold, config, unit_scale=unit)
        src_people = [[] if p is None else [p] for p in stable]

    out_people = [[p.transformed(g.map_points) for p in ps] for ps, g in zip(src_people, geometries)]
    if s.retarget != "none" and s.strength > 0:
        single = [ps[0] if ps else None for ps in out_people]
        moved = retarget_track(single, reference, s.retarget, s.strength, s.face_transfer)
        out_people = [[] if p is None else [p] for p in moved]
        src_people = [[p.transformed(g.unmap_points) for p in ps] for ps, g in zip(out_people, geometries)]

    source = [PoseFrame(f.width, f.height, ps) for f, ps in zip(raw, src_people)]
    if s.output_coordinates == "normalized":  # a point outside 0-1 would flip aux's per-part convention guess
        out_people = [[_inside_only(p, s.width, s.height) for p in ps] for ps in out_people]
    output = [PoseFrame(s.width, s.height, ps).bounded() for ps in out_people]
    missing = [i for i, f in enumerate(source) if f.is_empty]
    return PoseSequence(source, output, geometries, missing)


def report_missing(seq: PoseSequence, on_missing: str = "warn", source: str = "frames") -> None:
    """One warning line for frames without a person (their maps are empty), or an error; always an error when no
    frame has a person (``source``: ``frames`` or ``pose_keypoint``, for the hint)."""
    if not seq.missing:
        return
    n, total = len(seq.missing), len(seq.source)
    if n == total:
        if source == "pose_keypoint":
            fix = ("check that the POSE_KEYPOINT holds people with body points (confidence >= 0.3) and try "
                   "coordinates 'normalized' or 'pixels' if they were read in the wrong convention")
        else:
            fix = ("check that the frames show a person (not an empty or black batch, the right video), try another "
                   "detector (dwpose finds smaller and partly hidden people than mediapipe), or connect "
                   "pose_keypoint instead of images")
        raise ValueError(f"ExtractPose: no person found in any of the {total} frame(s), so every pose map would be "
                         f"black. Fix: {fix}.")
    shown = ", ".join(str(i) for i in seq.missing[:10]) + (", ..." if n > 10 else "")
    msg = f"no person found in {n} of {total} frame(s) (frame {shown})"
    if on_missing == "error":
        raise ValueError(f"ExtractPose: {msg}. Check the input frames or the detector, or set on_missing to 'warn' "
                         "to get empty pose maps instead.")
    log.warning("ExtractPose: %s; their pose maps are empty", msg)


def render_sequence(seq: PoseSequence, settings: ExtractSettings,
                    on_frame: Callable[[int], None] | None = None) -> torch.Tensor:
    """Pose maps (B, height, width, 3) float in [0, 1], black background."""
    s = settings
    # filled through numpy: single-threaded copies, far faster than torch's per-frame kernels on a busy CPU
    out = np.zeros((len(seq.source), s.height, s.width, 3), dtype=np.float32)
    for i, (f, g) in enumerate(zip(seq.source, seq.geometries)):
        if not f.is_empty:
            out[i] = render_pose_fitted(f, g, s.body, s.hands, s.face, s.render_canvas).numpy()
        if on_frame is not None:
            on_frame(i)
    return torch.from_numpy(out)


def carry_extras(extras: list[dict], seq: PoseSequence, settings: ExtractSettings) -> list[dict]:
    """Per frame, the POSE_KEYPOINT top-level keys we do not use (``keypoints.unknown_keys``), kept for the output;
    ``animals`` (comfyui_controlnet_aux's AP10K: one list of [x, y, c] per animal) is moved onto the output canvas
    like the people, so it stays aligned with ``canvas_width`` / ``canvas_height``."""
    out = []
    for ex, g in zip(extras, seq.geometries):
        ex = dict(ex)
        if isinstance(ex.get("animals"), list):
            ex["animals"] = _map_animals(ex["animals"], g, settings.output_coordinates == "normalized")
        out.append(ex)
    return out


def _map_animals(animals: list, g: FitGeometry, normalized_out: bool) -> list:
    try:
        raw = [np.asarray(a, dtype=np.float64) for a in animals]
        pts = [a.reshape(-1, 3) for a in raw]  # (N, 3) each
    except (TypeError, ValueError, OverflowError):
        return animals  # not keypoint lists: passed through as they came
    scale_in = np.array([g.src_w, g.src_h]) if looks_normalised(pts) else np.ones(2)
    scale_out = np.array([g.dst_w, g.dst_h]) if normalized_out else np.ones(2)
    out = []
    for a, p in zip(raw, pts):
        q = np.concatenate([g.map_points(p[:, :2] * scale_in) / scale_out, p[:, 2:]], axis=1)  # (N, 3)
        q[~(np.isfinite(p).all(axis=1) & (p[:, 2] > 0))] = 0.0
        out.append(q.reshape(a.shape).tolist())
    return out
