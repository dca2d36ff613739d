"""Pose accuracy of generated frames: keypoints detected on them against the target keypoints they were made from.

Not in the paper (its table has no pose metric); the definitions are the standard ones:
- PCK@a (body, hands): the share of target keypoints whose detected counterpart lies within ``a * size`` pixels,
  where ``size`` is the longer side of the target person's body bounding box (all parts when the body has
  fewer than two points). A target point the detector missed counts as wrong; pooled over all frames.
- NME (face): the mean distance between the 68 detected and target iBUG landmarks present in both, divided by
  the target's inter-ocular distance (outer eye corners 36 and 45, the 300-W convention); averaged over the
  frames where both faces are found, with the face detection rate reported beside it.

One person per frame: the target's largest person, and the detected person closest to it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..pose.keypoints import Person, PoseFrame

PCK_THRESHOLDS = (0.05, 0.1)
HAND_PARTS = ("left_hand", "right_hand")
OUTER_EYE_CORNERS = (36, 45)


@dataclass
class PoseAccuracy:
    """Pooled counts and per-frame values (NaN where a frame has nothing to measure)."""

    body_hits: dict[float, int] = field(default_factory=lambda: {a: 0 for a in PCK_THRESHOLDS})
    body_total: int = 0
    hand_hits: dict[float, int] = field(default_factory=lambda: {a: 0 for a in PCK_THRESHOLDS})
    hand_total: int = 0
    face_frames: int = 0          # frames with a measurable target face
    face_found: int = 0           # of those, frames where a face was detected
    per_frame_body: list[float] = field(default_factory=list)   # PCK@0.1 per frame
    per_frame_nme: list[float] = field(default_factory=list)

    def pck_body(self, a: float) -> float:
        return self.body_hits[a] / self.body_total if self.body_total else float("nan")

    def pck_hands(self, a: float) -> float:
        return self.hand_hits[a] / self.hand_total if self.hand_total else float("nan")

    @property
    def nme_face(self) -> float:
        vals = [v for v in self.per_frame_nme if np.isfinite(v)]
        return float(np.mean(vals)) if vals else float("nan")

    @property
    def face_detection_rate(self) -> float:
        return self.face_found / self.face_frames if self.face_frames else float("nan")


def scale_frame(frame: PoseFrame, width: int, height: int) -> PoseFrame:
    """Target keypoints on a ``width`` x ``height`` image (the generated frames' size)."""
    if (frame.width, frame.height) == (width, height):
        return frame
    s = np.array([width / frame.width, height / frame.height])
    return frame.transformed(lambda xy: xy * s, width, height)


def _largest(frame: PoseFrame) -> Person | None:
    people = [p for p in frame.people if not p.is_empty]
    return max(people, key=lambda p: p.area()) if people else None


def _closest(frame: PoseFrame, target: Person) -> Person | None:
    """The detected person whose shared body points are nearest the target's (largest if none are shared)."""
    people = [p for p in frame.people if not p.is_empty]
    if not people:
        return None

    def cost(p: Person) -> float:
        both = (p.body[:, 2] > 0) & (target.body[:, 2] > 0)
        if not both.any():
            return float("inf")
        return float(np.linalg.norm(p.body[both, :2] - target.body[both, :2], axis=1).mean())

    best = min(people, key=cost)
    return best if np.isfinite(cost(best)) else max(people, key=lambda p: p.area())


def person_size(p: Person) -> float:
    """Longer side of the body bounding box (all parts if the body has fewer than two points)."""
    box = p.bbox(("body",)) if (p.body[:, 2] > 0).sum() >= 2 else p.bbox()
    return 0.0 if box is None else max(box[2] - box[0], box[3] - box[1])


def _hits(target: np.ndarray, detected: np.ndarray | None, limit: float) -> tuple[int, int]:
    """(points within ``limit`` px, target points present)."""
    present = target[:, 2] > 0
    if detected is None or not present.any():
        return 0, int(present.sum())
    found = present & (detected[:, 2] > 0)
    d = np.linalg.norm(detected[:, :2] - target[:, :2], axis=1)  # (N,)
    return int((found & (d <= limit)).sum()), int(present.sum())


def face_nme(target: np.ndarray | None, detected: np.ndarray | None) -> float | None:
    """NME of the 68 iBUG points, or None when the target face is not measurable; NaN when not detected."""
    if target is None:
        return None
    a, b = OUTER_EYE_CORNERS
    if target[a, 2] <= 0 or target[b, 2] <= 0:
        return None
    iod = float(np.linalg.norm(target[a, :2] - target[b, :2]))
    if iod <= 0:
        return None
    if detected is None:
        return float("nan")
    both = (target[:68, 2] > 0) & (detected[:68, 2] > 0)
    if not both.any():
        return float("nan")
    return float(np.linalg.norm(detected[:68][both, :2] - target[:68][both, :2], axis=1).mean() / iod)


def pose_accuracy(targets: Sequence[PoseFrame], detections: Sequence[PoseFrame]) -> PoseAccuracy:
    """Compare per-frame detections with the targets (same length, same pixel space)."""
    if len(targets) != len(detections):
        raise ValueError(f"{len(targets)} target pose frames but {len(detections)} generated frames")
    acc = PoseAccuracy()
    for tf, df in zip(targets, detections):
        target = _largest(tf)
        size = person_size(target) if target is not None else 0.0
        if target is None or size <= 0:
            acc.per_frame_body.append(float("nan"))
            acc.per_frame_nme.append(float("nan"))
            continue
        det = _closest(df, target)
        frame_hits, frame_total = 0, 0
        for a in PCK_THRESHOLDS:
            h, n = _hits(target.body, det.body if det is not None else None, a * size)
            acc.body_hits[a] += h
            if a == 0.1:
                frame_hits, frame_total = h, n
            for part in HAND_PARTS:
                t = getattr(target, part)
                if t is not None:
                    h, n_hand = _hits(t, getattr(det, part) if det is not None else None, a * size)
                    acc.hand_hits[a] += h
                    if a == PCK_THRESHOLDS[0]:
                        acc.hand_total += n_hand
        acc.body_total += frame_total
        acc.per_frame_body.append(frame_hits / frame_total if frame_total else float("nan"))
        nme = face_nme(target.face, det.face if det is not None else None)
        if nme is None:
            acc.per_frame_nme.append(float("nan"))
        else:
            acc.face_frames += 1
            acc.face_found += int(np.isfinite(nme))
            acc.per_frame_nme.append(nme)
    return acc
