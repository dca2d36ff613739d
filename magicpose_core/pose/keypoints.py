"""The keypoint model of a pose map, and the POSE_KEYPOINT interchange format.

A ``Person`` holds the OpenPose layout that MagicPose's pose ControlNet was trained on (ControlNet 1.1
"openpose_full", pose.md §1): an 18-point body (COCO order with the neck, pose.md §1.2), a 70-point face
(68 iBUG/300-W landmarks + right and left pupil, §1.5) and two 21-point hands (§1.4). Every point is
``(x, y, confidence)`` in pixels of its frame; confidence 0 means "missing". Left and right are the
subject's sides everywhere.

``POSE_KEYPOINT`` is comfyui_controlnet_aux's type: a list with one OpenPose-JSON dict per frame
(``people[].pose_keypoints_2d`` / ``face_keypoints_2d`` / ``hand_left_keypoints_2d`` /
``hand_right_keypoints_2d`` as flat ``[x, y, c, ...]`` lists, ``canvas_width``, ``canvas_height``), with
either 0-1 normalised or pixel coordinates (pose.md §5). Reading validates everything and raises
``ValueError`` naming the offending frame/person/key; it never lets a ``KeyError`` or ``TypeError`` out.
Format facts: CMU OpenPose doc/02_output.md; comfyui_controlnet_aux ``encode_poses_as_dict``.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

BODY_POINTS = 18
FACE_POINTS = 70          # 68 iBUG + pupils (68 = right, 69 = left)
FACE_POINTS_NO_PUPILS = 68
HAND_POINTS = 21
PARTS = ("body", "face", "left_hand", "right_hand")
PART_SIZES = {"body": BODY_POINTS, "face": FACE_POINTS, "left_hand": HAND_POINTS, "right_hand": HAND_POINTS}
JSON_KEYS = {"body": "pose_keypoints_2d", "face": "face_keypoints_2d",
             "left_hand": "hand_left_keypoints_2d", "right_hand": "hand_right_keypoints_2d"}

# OpenPose BODY_25 -> COCO-18 (BODY_25 adds MidHip at 8 and six foot points at 19-24; CMU doc/02_output.md)
BODY25_TO_BODY18 = [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18]
RIGHT_EYE_CONTOUR = slice(36, 42)   # iBUG 36-41
LEFT_EYE_CONTOUR = slice(42, 48)    # iBUG 42-47


def _as_points(arr: Any, n: int, name: str) -> np.ndarray:
    a = np.asarray(arr, dtype=np.float64)
    if a.shape != (n, 3):
        raise ValueError(f"{name} must be an array of shape ({n}, 3) (x, y, confidence), got {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    a = a.copy()
    a[a[:, 2] <= 0] = 0.0  # a missing point is (0, 0, 0)
    return a


def empty_points(n: int) -> np.ndarray:
    return np.zeros((n, 3), dtype=np.float64)


def add_pupils(face68: np.ndarray) -> np.ndarray:
    """(68, 3) iBUG face -> (70, 3): pupils as eye-contour centroids (pose.md §1.5), missing if any contour
    point is missing; confidence = the lowest of the contour."""
    face68 = np.asarray(face68, dtype=np.float64)
    out = np.zeros((FACE_POINTS, 3))
    out[:FACE_POINTS_NO_PUPILS] = face68
    for dst, sl in ((68, RIGHT_EYE_CONTOUR), (69, LEFT_EYE_CONTOUR)):
        eye = face68[sl]
        if (eye[:, 2] > 0).all():
            out[dst, :2] = eye[:, :2].mean(axis=0)
            out[dst, 2] = eye[:, 2].min()
    return out


@dataclass(eq=False)
class Person:
    """One person in OpenPose layout, pixel coordinates; confidence 0 = missing point, None = missing part."""

    body: np.ndarray = field(default_factory=lambda: empty_points(BODY_POINTS))  # (18, 3)
    face: np.ndarray | None = None         # (70, 3)
    left_hand: np.ndarray | None = None    # (21, 3), subject's left
    right_hand: np.ndarray | None = None   # (21, 3), subject's right

    def __post_init__(self) -> None:
        self.body = _as_points(self.body, BODY_POINTS, "body")
        for part in PARTS[1:]:
            v = getattr(self, part)
            if v is not None:
                setattr(self, part, _as_points(v, PART_SIZES[part], part))

    def parts(self) -> Iterable[tuple[str, np.ndarray]]:
        """(name, points) of the parts that are not None."""
        for part in PARTS:
            v = getattr(self, part)
            if v is not None:
                yield part, v

    def copy(self) -> "Person":
        return Person(**{p: (None if getattr(self, p) is None else getattr(self, p).copy()) for p in PARTS})

    def all_points(self) -> np.ndarray:
        """Present points of every part, (N, 3)."""
        pts = [v[v[:, 2] > 0] for _, v in self.parts()]
        return np.concatenate(pts, axis=0) if pts else np.zeros((0, 3))  # (N, 3)

    def bbox(self, parts: Sequence[str] = PARTS) -> tuple[float, float, float, float] | None:
        """(x0, y0, x1, y1) of the present points of the given parts, or None when there are none."""
        pts = [v[v[:, 2] > 0, :2] for p, v in self.parts() if p in parts]
        pts = [p for p in pts if len(p)]
        if not pts:
            return None
        xy = np.concatenate(pts, axis=0)  # (N, 2)
        return float(xy[:, 0].min()), float(xy[:, 1].min()), float(xy[:, 0].max()), float(xy[:, 1].max())

    def area(self) -> float:
        b = self.bbox()
        return 0.0 if b is None else (b[2] - b[0]) * (b[3] - b[1])

    @property
    def is_empty(self) -> bool:
        return not any((v[:, 2] > 0).any() for _, v in self.parts())

    def transformed(self, fn: Callable[[np.ndarray], np.ndarray]) -> "Person":
        """A copy with ``fn`` applied to the (N, 2) coordinates of the present points of every part."""
        out = self.copy()
        for _, v in out.parts():
            m = v[:, 2] > 0
            if m.any():
                v[m, :2] = fn(v[m, :2])
        return out

    def thresholded(self, threshold: float) -> "Person":
        """A copy where points with confidence below ``threshold`` become missing."""
        out = self.copy()
        for _, v in out.parts():
            v[v[:, 2] < threshold] = 0.0
        return out


@dataclass(eq=False)
class PoseFrame:
    """The people of one frame on a ``width`` x ``height`` canvas (pixel coordinates)."""

    width: int
    height: int
    people: list[Person] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name, v in (("width", self.width), ("height", self.height)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer, float)) or int(v) != v or v < 1:
                raise ValueError(f"pose canvas {name} must be a positive integer, got {v!r}")
        self.width, self.height = int(self.width), int(self.height)
        self.people = list(self.people)

    def copy(self) -> "PoseFrame":
        return PoseFrame(self.width, self.height, [p.copy() for p in self.people])

    def transformed(self, fn: Callable[[np.ndarray], np.ndarray], width: int, height: int) -> "PoseFrame":
        """Every person's coordinates through ``fn`` onto a new ``width`` x ``height`` canvas."""
        return PoseFrame(width, height, [p.transformed(fn) for p in self.people])

    def thresholded(self, threshold: float) -> "PoseFrame":
        return PoseFrame(self.width, self.height, [p.thresholded(threshold) for p in self.people])

    @property
    def is_empty(self) -> bool:
        return all(p.is_empty for p in self.people)


# ---------------------------------------------------------------------------------------------------------------
# POSE_KEYPOINT -> PoseFrame


def _number(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise ValueError(f"{where}: expected a number, got {type(v).__name__} {v!r:.40}")
    try:
        f = float(v)
    except OverflowError:
        f = math.inf
    if not math.isfinite(f):
        raise ValueError(f"{where}: coordinates and confidences must be finite numbers, got {f}")
    return f


def _flat_points(values: Any, key: str, where: str) -> np.ndarray | None:
    """A flat [x, y, c, ...] list -> (N, 3) array, or None for a missing part (None or empty list)."""
    if values is None:
        return None
    if isinstance(values, np.ndarray):
        values = values.reshape(-1).tolist()
    if not isinstance(values, (list, tuple)):
        raise ValueError(f"{where}.{key} must be a flat list [x, y, c, ...] or null, got {type(values).__name__}")
    if len(values) == 0:
        return None
    if len(values) % 3:
        raise ValueError(f"{where}.{key} has {len(values)} numbers; expected a multiple of 3 (x, y, c per point)")
    pts = np.array([_number(v, f"{where}.{key}[{i}]") for i, v in enumerate(values)]).reshape(-1, 3)  # (N, 3)
    if (pts[:, 2] < 0).any():
        raise ValueError(f"{where}.{key}: confidences must be >= 0 (0 marks a missing point)")
    return pts


def _fit_part(pts: np.ndarray | None, part: str, where: str) -> np.ndarray | None:
    if pts is None:
        return None
    n = len(pts)
    if part == "body":
        if n == 25:
            return pts[BODY25_TO_BODY18]
        if n != BODY_POINTS:
            raise ValueError(f"{where}.pose_keypoints_2d has {n} points; expected 18 (OpenPose COCO) or 25 (BODY_25)")
        return pts
    if part == "face":
        if n == FACE_POINTS_NO_PUPILS:
            return add_pupils(pts)
        if n != FACE_POINTS:
            raise ValueError(f"{where}.face_keypoints_2d has {n} points; expected 70 (OpenPose) or 68 (iBUG/DWPose)")
        return pts
    if n != HAND_POINTS:
        raise ValueError(f"{where}.{JSON_KEYS[part]} has {n} points; expected 21")
    return pts


def _canvas(frame: dict, where: str) -> tuple[int, int]:
    dims = []
    for key in ("canvas_width", "canvas_height"):
        if key not in frame:
            raise ValueError(f"{where} has no {key}; POSE_KEYPOINT frames need canvas_width and canvas_height")
        v = frame[key]
        ok = not isinstance(v, bool) and isinstance(v, (int, float, np.integer, np.floating))
        ok = ok and 1 <= v <= 65536 and int(v) == v  # a range check first: no overflow on huge ints, NaN fails it
        if not ok:
            raise ValueError(f"{where}.{key} must be a positive integer (pixels), got {v!r:.40}")
        dims.append(int(v))
    return dims[0], dims[1]


def pose_keypoint_to_frames(data: Any, coordinates: str = "auto") -> list[PoseFrame]:
    """POSE_KEYPOINT (list of OpenPose-JSON dicts, one dict, or its JSON text) -> PoseFrames in pixels.

    ``coordinates``: ``"normalized"`` (0-1, multiplied by the canvas size), ``"pixels"``, or ``"auto"``:
    normalised when every present coordinate of the whole sequence lies in [-1, 1] (pose.md §5).
    A 68-point face gets synthesised pupils; a BODY_25 body is reduced to the 18 COCO points.
    """
    if coordinates not in ("auto", "normalized", "pixels"):
        raise ValueError(f"coordinates must be 'auto', 'normalized' or 'pixels', got {coordinates!r}")
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"POSE_KEYPOINT text is not valid JSON: {e}") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, (list, tuple)):
        raise ValueError(f"POSE_KEYPOINT must be a list of frame dicts, got {type(data).__name__}")
    parsed: list[tuple[int, int, list[dict[str, np.ndarray | None]]]] = []
    for i, frame in enumerate(data):
        where = f"POSE_KEYPOINT frame {i}"
        if not isinstance(frame, dict):
            raise ValueError(f"{where} must be a dict with 'people', 'canvas_width', 'canvas_height'; "
                             f"got {type(frame).__name__}")
        w, h = _canvas(frame, where)
        people = frame.get("people", [])
        if people is None:
            people = []
        if not isinstance(people, (list, tuple)):
            raise ValueError(f"{where}.people must be a list, got {type(people).__name__}")
        persons = []
        for j, person in enumerate(people):
            pw = f"{where} person {j}"
            if not isinstance(person, dict):
                raise ValueError(f"{pw} must be a dict of keypoint lists, got {type(person).__name__}")
            persons.append({part: _fit_part(_flat_points(person.get(JSON_KEYS[part]), JSON_KEYS[part], pw), part, pw)
                            for part in PARTS})
        parsed.append((w, h, persons))
    if coordinates == "auto":
        present = [v[v[:, 2] > 0, :2] for _, _, ps in parsed for p in ps for v in p.values() if v is not None]
        coords = np.concatenate(present) if present else np.zeros((0, 2))  # (N, 2)
        coordinates = "normalized" if (np.abs(coords) <= 1.0).all() else "pixels"
    frames = []
    for w, h, persons in parsed:
        people = []
        for p in persons:
            parts = {}
            for part, v in p.items():
                if v is not None:
                    v = v.copy()
                    if coordinates == "normalized":
                        v[:, 0] *= w
                        v[:, 1] *= h
                    parts[part] = v
            people.append(Person(body=parts.get("body", empty_points(BODY_POINTS)), face=parts.get("face"),
                                 left_hand=parts.get("left_hand"), right_hand=parts.get("right_hand")))
        frames.append(PoseFrame(w, h, people))
    return frames


# ---------------------------------------------------------------------------------------------------------------
# PoseFrame -> POSE_KEYPOINT


def _flatten(points: np.ndarray | None, w: int, h: int, normalized: bool, binary: bool) -> list[float] | None:
    if points is None or not (points[:, 2] > 0).any():
        return None
    out = []
    for x, y, c in points:
        if c <= 0:
            out += [0.0, 0.0, 0.0]
        else:
            out += [float(x / w if normalized else x), float(y / h if normalized else y), 1.0 if binary else float(c)]
    return out


def frames_to_pose_keypoint(frames: Sequence[PoseFrame], normalized: bool = True,
                            binary_confidence: bool = False) -> list[dict]:
    """PoseFrames -> POSE_KEYPOINT (one OpenPose-JSON dict per frame).

    ``normalized``: 0-1 coordinates as controlnet_aux writes them, else pixels. ``binary_confidence``: write
    1.0 for every present point (controlnet_aux's decoder drops points with c < 1.0), else the score.
    Missing points are ``[0, 0, 0]``; missing parts are None.
    """
    out = []
    for f in frames:
        out.append({
            "people": [{JSON_KEYS[part]: _flatten(getattr(p, part), f.width, f.height, normalized, binary_confidence)
                        for part in PARTS} for p in f.people],
            "canvas_width": f.width,
            "canvas_height": f.height,
        })
    return out
