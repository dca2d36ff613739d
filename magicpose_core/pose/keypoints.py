"""The keypoint model of a pose map, and the POSE_KEYPOINT interchange format.

Over 400 lines: the interchange reader and writer are the only users of the model's part layout and
validation helpers; they stay beside them so the two conventions cannot drift apart.

A ``Person`` holds the OpenPose layout that MagicPose's pose ControlNet was trained on (ControlNet 1.1
"openpose_full", docs/pose.md §1): an 18-point body (COCO order with the neck, docs/pose.md §1.2), a 70-point face
(68 iBUG/300-W landmarks + right and left pupil, docs/pose.md §1.5) and two 21-point hands (§1.4). Every point is
``(x, y, confidence)`` in pixels of its frame; confidence 0 means "missing". Left and right are the
subject's sides everywhere.

``POSE_KEYPOINT`` is comfyui_controlnet_aux's type: a list with one OpenPose-JSON dict per frame
(``people[].pose_keypoints_2d`` / ``face_keypoints_2d`` / ``hand_left_keypoints_2d`` /
``hand_right_keypoints_2d`` as flat ``[x, y, c, ...]`` lists, ``canvas_width``, ``canvas_height``), with
either 0-1 normalised or pixel coordinates (docs/pose.md §5). Reading validates the structure and raises
``ValueError`` naming the offending frame/person/key; it never lets a ``KeyError`` or ``TypeError`` out.
Format facts: CMU OpenPose doc/02_output.md; comfyui_controlnet_aux ``encode_poses_as_dict`` /
``decode_json_as_poses``; ComfyUI core ``comfy_extras/nodes_sdpose.py``.

Numbers from outside are bounded before they size or draw anything: a canvas side above ``MAX_CANVAS`` is an
error; a NaN/inf/null coordinate, a negative confidence and a point more than ``OFF_CANVAS`` canvas sizes beyond
an edge become missing points (OpenCV overflows on them, and nothing of such a point would be on the map).

Coordinates. Producers differ: comfyui_controlnet_aux's OpenPose preprocessor and controlnet_aux write 0-1
values, its DWPose preprocessor, pose editors, OpenPose itself and core SDPose write pixels. comfyui_controlnet_aux's
consumers (``draw_poses`` via ``util.is_normalized``, Render Pose JSON, the pose-keypoint postprocess nodes) decide
per part: 0-1 when every present point of the part has |x| <= 1 and |y| <= 1, else pixels. ``auto`` takes that
decision for every part it calls 0-1, and gives a part it would call pixels the frame's vote instead: 0-1 when at
least ``NORMALISED_SHARE`` of the frame's present points lie within ``NORMALISED_MARGIN`` (25 %) of the unit square.
So a few points past the edge of a 0-1 frame (a wrist at x = 1.03, a hand raised out of frame) do not send their part
to the top-left corner as comfyui_controlnet_aux's drawing does (we draw them where they belong), one frame cannot
flip another, and points at (0, 0) (the usual "missing" spelling) do not vote. The canvas of each frame is its
``canvas_width`` x ``canvas_height``.

Missing hand and face points. ControlNet 1.1's drawing (and comfyui_controlnet_aux's) skips a hand or face point
whose truncated pixel x or y is not above 0.01; producers rely on that: comfyui_controlnet_aux's OpenPose writes a
hand or face point its detector did not find as (-1/W, -1/H) with confidence 1.0 (W, H = its detection image), others
write (0, 0). Such points (pixel x < 1 or y < 1, any confidence) are read as missing, so smoothing, person selection
and retargeting never see them. Body points are missing only by confidence (comfyui_controlnet_aux writes
``[0, 0, 0]``, and draws a body point at (0, 0) with c = 1). Its OpenPose face holds one point per facenet map that
has a peak: 71 when all were found (the 71st map is the background; dropped), fewer when some were not (later points
shift down; kept in order, so the dots are drawn as it draws them).

Confidence. comfyui_controlnet_aux writes c = 1.0 for present and 0 for missing points and its decoder drops
every point with c < 1.0; DWPose and SDPose treat c < 0.3 as missing (SDPoseDrawKeypoints' default
``score_threshold``). We write present points with c = 1.0 (so both draw exactly what we drew) and read with
``READ_THRESHOLD`` = 0.3, which is the same as comfyui_controlnet_aux's rule for its 0/1 confidences and the same as
SDPose's for its scores. We write every part of every person as a full list (body 18, face 70, hands 21, missing
points ``[0, 0, 0]``), never ``null``: comfyui_controlnet_aux iterates the body list and SDPose reshapes every
part, and both fail on ``null``. Top-level keys we do not know (``version``, ``animals``, ...) are kept.
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
MAX_CANVAS = 16384        # pixels per side of a POSE_KEYPOINT canvas (a 16384^2 RGB map is 0.8 GB)
OFF_CANVAS = 1.0          # points further than this many canvas sizes beyond an edge become missing
NORMALISED_MARGIN = 0.25  # "auto": normalised points may lie up to 25 % outside the canvas ...
NORMALISED_SHARE = 0.75   # ... and at least this share of a frame's present points must be within that margin
READ_THRESHOLD = 0.3      # a POSE_KEYPOINT point counts when c >= 0.3 (DWPose / SDPose; same as aux's c >= 1 on 0/1)
COORDINATE_MODES = ("auto", "normalized", "pixels")
FACENET_MAPS = 71         # OpenPose facenet's output maps: 70 points + background (comfyui_controlnet_aux keeps all)
RIGHT_EYE_CONTOUR = slice(36, 42)   # iBUG 36-41
LEFT_EYE_CONTOUR = slice(42, 48)    # iBUG 42-47


def _as_points(arr: Any, n: int, name: str) -> np.ndarray:
    a = np.asarray(arr, dtype=np.float64)
    if a.shape != (n, 3):
        raise ValueError(f"{name} must be an array of shape ({n}, 3) (x, y, confidence), got {a.shape}")
    a = a.copy()
    a[~(np.isfinite(a).all(axis=1) & (a[:, 2] > 0))] = 0.0  # a missing point is (0, 0, 0); so is NaN / inf
    return a


def empty_points(n: int) -> np.ndarray:
    return np.zeros((n, 3), dtype=np.float64)


def add_pupils(face68: np.ndarray) -> np.ndarray:
    """(68, 3) iBUG face -> (70, 3): pupils as eye-contour centroids (docs/pose.md §1.5), missing if any contour
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

    def bounded(self, margin: float = OFF_CANVAS) -> "PoseFrame":
        """A copy where points more than ``margin`` canvas sizes beyond an edge are missing."""
        out = self.copy()
        lo = -margin * np.array([self.width, self.height])        # (2,)
        hi = (1 + margin) * np.array([self.width, self.height])   # (2,)
        for p in out.people:
            for _, v in p.parts():
                v[((v[:, :2] < lo) | (v[:, :2] > hi)).any(axis=1)] = 0.0
        return out

    @property
    def is_empty(self) -> bool:
        return all(p.is_empty for p in self.people)


# ---------------------------------------------------------------------------------------------------------------
# POSE_KEYPOINT -> PoseFrame


def _number(v: Any, where: str) -> float:
    """A JSON number as float; null, NaN, inf and ints too large for a float give NaN (a missing point)."""
    if v is None:
        return math.nan
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise ValueError(f"{where}: expected a number, got {type(v).__name__} {v!r:.40}")
    try:
        f = float(v)
    except OverflowError:
        return math.nan
    return f if math.isfinite(f) else math.nan


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
    pts[~(np.isfinite(pts).all(axis=1) & (pts[:, 2] > 0))] = 0.0  # NaN/inf/null or c <= 0: a missing point
    return pts


def _fit_part(pts: np.ndarray | None, part: str, where: str) -> np.ndarray | None:
    """Points of one part -> our layout (module docstring): BODY_25 -> 18, 68-point face + pupils, an OpenPose face
    of any other count up to 71 (comfyui_controlnet_aux) to 70 slots."""
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
        if n > FACENET_MAPS:
            raise ValueError(f"{where}.face_keypoints_2d has {n} points; expected 70 (OpenPose), 68 (iBUG/DWPose) or "
                             "up to 71 (comfyui_controlnet_aux OpenPose)")
        out = empty_points(FACE_POINTS)
        out[:min(n, FACE_POINTS)] = pts[:FACE_POINTS]  # the 71st point is facenet's background map
        return out
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
        ok = ok and 1 <= v and int(v) == v  # NaN fails the comparison; huge ints compare without overflow
        if not ok:
            raise ValueError(f"{where}.{key} must be a positive integer (pixels), got {v!r:.40}")
        if v > MAX_CANVAS:
            raise ValueError(f"{where}.{key} is {int(v)} pixels; POSE_KEYPOINT canvases are limited to {MAX_CANVAS} "
                             "per side. Scale the keypoints to a smaller canvas (e.g. the video's size) first.")
        dims.append(int(v))
    return dims[0], dims[1]


def _as_frame_list(data: Any) -> list | tuple:
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
            raise ValueError(f"POSE_KEYPOINT text is not valid JSON: {e}") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, (list, tuple)):
        raise ValueError(f"POSE_KEYPOINT must be a list of frame dicts, got {type(data).__name__}")
    return data


def looks_normalised(points: Sequence[np.ndarray]) -> bool:
    """The ``auto`` rule for one frame: (N, 3) arrays of its parts -> True when at least ``NORMALISED_SHARE`` of
    the present points (c > 0, not at (0, 0)) lie within ``NORMALISED_MARGIN`` of the unit square. A frame without
    such points gives True (nothing to scale either way)."""
    xy = [v[(v[:, 2] > 0) & (v[:, :2] != 0).any(axis=1), :2] for v in points if v is not None]
    xy = np.concatenate(xy) if xy else np.zeros((0, 2))  # (N, 2)
    if not len(xy):
        return True
    inside = ((xy >= -NORMALISED_MARGIN) & (xy <= 1 + NORMALISED_MARGIN)).all(axis=1)
    return bool(inside.mean() >= NORMALISED_SHARE)


def part_is_normalised(points: np.ndarray) -> bool:
    """comfyui_controlnet_aux's consumers' rule for one (N, 3) part (``util.is_normalized``): True when it has present
    points (c > 0) and all of them have |x| <= 1 and |y| <= 1 (so OpenPose's (-1/W, -1/H) marker counts as 0-1)."""
    xy = points[points[:, 2] > 0, :2]
    return bool(len(xy)) and bool((np.abs(xy) <= 1).all())


def _drop_undrawable(points: np.ndarray) -> np.ndarray:
    """(N, 3) hand or face points in pixels -> the same with points at pixel x < 1 or y < 1 missing (the
    (-1/W, -1/H) marker, (0, 0), anything ControlNet's drawing would not draw; module docstring)."""
    points[(points[:, 0] < 1) | (points[:, 1] < 1)] = 0.0
    return points


def pose_keypoint_to_frames(data: Any, coordinates: str = "auto") -> list[PoseFrame]:
    """POSE_KEYPOINT (list of OpenPose-JSON dicts, one dict, or its JSON text) -> PoseFrames in pixels.

    ``coordinates``: ``"normalized"`` (0-1, multiplied by the canvas size), ``"pixels"``, or ``"auto"``, decided
    per part by ``part_is_normalised`` and else per frame by ``looks_normalised`` (module docstring). Hand and face
    points at pixel x < 1 or y < 1 are missing (comfyui_controlnet_aux OpenPose's (-1/W, -1/H) marker). A 68-point
    face gets synthesised pupils, a 71-point one loses facenet's background point; a BODY_25 body is reduced to the
    18 COCO points; other keys (``foot_keypoints_2d``, ...) are ignored. NaN/inf/null coordinates and points more
    than ``OFF_CANVAS`` canvas sizes outside become missing. Confidences are kept as they are (``READ_THRESHOLD`` is
    the caller's to apply).
    """
    if coordinates not in COORDINATE_MODES:
        raise ValueError(f"coordinates must be one of {', '.join(COORDINATE_MODES)}, got {coordinates!r}")
    data = _as_frame_list(data)
    frames = []
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
            persons.append((pw, {part: _flat_points(person.get(JSON_KEYS[part]), JSON_KEYS[part], pw)
                                 for part in PARTS}))
        frame_normalised = coordinates == "normalized"
        if coordinates == "auto":
            frame_normalised = looks_normalised([v for _, p in persons for v in p.values()])
        out = []
        for pw, p in persons:
            parts = {}
            for part, v in p.items():
                if v is not None:
                    normalised = frame_normalised or (coordinates == "auto" and part_is_normalised(v))
                    with np.errstate(over="ignore", invalid="ignore"):  # 1e300 x W -> inf -> a missing point
                        v = np.concatenate([v[:, :2] * ([w, h] if normalised else [1, 1]), v[:, 2:]], axis=1)
                    if part != "body":
                        v = _drop_undrawable(v)
                parts[part] = _fit_part(v, part, pw)
            if parts["body"] is None:
                parts["body"] = empty_points(BODY_POINTS)
            out.append(Person(**parts))
        frames.append(PoseFrame(w, h, out).bounded())
    return frames


def unknown_keys(data: Any) -> list[dict]:
    """Per frame, the top-level keys of a POSE_KEYPOINT that are not ``people`` / ``canvas_width`` /
    ``canvas_height`` (comfyui_controlnet_aux writes ``version`` and ``animals``), to be written back unchanged."""
    known = {"people", "canvas_width", "canvas_height"}
    return [{k: v for k, v in f.items() if k not in known} if isinstance(f, dict) else {}
            for f in _as_frame_list(data)]


# ---------------------------------------------------------------------------------------------------------------
# PoseFrame -> POSE_KEYPOINT


def _flatten(points: np.ndarray | None, n: int, w: int, h: int, normalized: bool, binary: bool) -> list[float]:
    """(n, 3) points -> [x, y, c, ...] with every slot written ([0, 0, 0] for a missing point or part)."""
    if points is None:
        return [0.0] * (3 * n)
    out = []
    for x, y, c in points:
        if c <= 0:
            out += [0.0, 0.0, 0.0]
        else:
            out += [float(x / w if normalized else x), float(y / h if normalized else y), 1.0 if binary else float(c)]
    return out


def frames_to_pose_keypoint(frames: Sequence[PoseFrame], normalized: bool = True, binary_confidence: bool = False,
                            extras: Sequence[dict] | None = None) -> list[dict]:
    """PoseFrames -> POSE_KEYPOINT (one OpenPose-JSON dict per frame).

    ``normalized``: 0-1 coordinates as controlnet_aux writes them, else pixels (DWPose / SDPose / OpenPose).
    ``binary_confidence``: write 1.0 for every present point (comfyui_controlnet_aux's decoder drops points with
    c < 1.0), else the score. Every part is a full list (body 18, face 70, hands 21); missing points are
    ``[0, 0, 0]``, never ``null``. ``extras``: per frame, further top-level keys (``unknown_keys``) to keep.
    """
    out = []
    for i, f in enumerate(frames):
        frame = dict(extras[i]) if extras is not None and i < len(extras) else {}
        frame.update({
            "people": [{JSON_KEYS[part]: _flatten(getattr(p, part), PART_SIZES[part], f.width, f.height, normalized,
                                                  binary_confidence)
                        for part in PARTS} for p in f.people],
            "canvas_width": f.width,
            "canvas_height": f.height,
        })
        out.append(frame)
    return out
