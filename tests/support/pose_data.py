"""Test material for the pose tests: synthetic people, the real photos shipped by registry packages, and a
converter to controlnet_aux's keypoint objects (the parity reference)."""
from __future__ import annotations

import os

import numpy as np

from magicpose_core.pose.keypoints import Person, PoseFrame

# A plausible standing person on a 512 x 512 canvas (OpenPose-18 order, pixels).
STANDING = np.array([
    [256, 100], [256, 150], [216, 150], [196, 210], [186, 265], [296, 150], [316, 210], [326, 265],
    [231, 270], [226, 350], [224, 430], [281, 270], [286, 350], [288, 430], [246, 90], [266, 90],
    [236, 95], [276, 95]], dtype=np.float64)


def hand_points(wrist: np.ndarray, scale: float = 1.0, rng: np.random.Generator | None = None) -> np.ndarray:
    """A 21-point open hand fanning upward from ``wrist``."""
    pts = [wrist]
    for f in range(5):
        ang = np.deg2rad(-150 + 30 * f)
        for k in range(1, 5):
            pts.append(wrist + scale * k * 9 * np.array([np.cos(ang), np.sin(ang)]))
    xy = np.array(pts)
    if rng is not None:
        xy = xy + rng.normal(0, 1.5, xy.shape)
    return np.concatenate([xy, np.ones((21, 1))], axis=1)


def face_points(center: np.ndarray, width: float = 60.0, mouth_open: float = 4.0,
                eye_dist: float | None = None) -> np.ndarray:
    """A schematic frontal 70-point iBUG face (jaw, brows, nose, eyes, lips, pupils) around ``center``."""
    w = width
    h = 1.2 * w
    ed = eye_dist if eye_dist is not None else 0.42 * w
    cx, cy = center
    pts = np.zeros((70, 2))
    t = np.linspace(np.pi, 0, 17)
    pts[0:17] = np.stack([cx + 0.5 * w * np.cos(t), cy + 0.1 * h + 0.5 * h * np.sin(t)], 1)  # jaw: ear to ear via chin
    for k in range(5):
        pts[17 + k] = [cx - ed / 2 - 0.18 * w + 0.09 * w * k, cy - 0.25 * h - 0.03 * h * np.sin(np.pi * k / 4)]
        pts[22 + k] = [cx + ed / 2 - 0.18 * w + 0.09 * w * k, cy - 0.25 * h - 0.03 * h * np.sin(np.pi * k / 4)]
    for k in range(4):
        pts[27 + k] = [cx, cy - 0.15 * h + 0.07 * h * k]
    for k in range(5):
        pts[31 + k] = [cx - 0.1 * w + 0.05 * w * k, cy + 0.15 * h]
    for side, start in ((-1, 36), (1, 42)):
        ex = cx + side * ed / 2
        ang = np.linspace(0, 2 * np.pi, 7)[:-1]
        pts[start:start + 6] = np.stack([ex - 0.1 * w * np.cos(ang), cy - 0.1 * h + 0.03 * h * np.sin(ang)], 1)
    ang = np.linspace(0, 2 * np.pi, 13)[:-1]
    pts[48:60] = np.stack([cx - 0.2 * w * np.cos(ang), cy + 0.3 * h + (0.04 * h + mouth_open / 2) * np.sin(ang)], 1)
    ang = np.linspace(0, 2 * np.pi, 9)[:-1]
    pts[60:68] = np.stack([cx - 0.14 * w * np.cos(ang), cy + 0.3 * h + (mouth_open / 2) * np.sin(ang)], 1)
    pts[68] = pts[36:42].mean(0)
    pts[69] = pts[42:48].mean(0)
    return np.concatenate([pts, np.ones((70, 1))], axis=1)


def standing_person(scale: float = 1.0, offset=(0.0, 0.0), rng: np.random.Generator | None = None,
                    hands: bool = True, face: bool = True) -> Person:
    xy = STANDING * scale + np.asarray(offset)
    if rng is not None:
        xy = xy + rng.normal(0, 3, xy.shape)
    body = np.concatenate([xy, np.ones((18, 1))], axis=1)
    return Person(body=body,
                  face=face_points(xy[0] + [0, 5 * scale], 50 * scale) if face else None,
                  left_hand=hand_points(xy[7], scale, rng) if hands else None,
                  right_hand=hand_points(xy[4], scale, rng) if hands else None)


def random_person(rng: np.random.Generator, width: int, height: int, missing: float = 0.15,
                  low_conf: float = 0.15) -> Person:
    """Random points anywhere (some off-canvas), some missing and some with low confidence."""
    def part(n):
        xy = rng.uniform([-0.05 * width, -0.05 * height], [1.05 * width, 1.05 * height], (n, 2))
        if rng.random() < 0.5:
            xy = np.round(xy)  # integer pixels: where x / W * W truncation matters
        conf = rng.uniform(0.5, 1.0, n)
        conf[rng.random(n) < low_conf] = rng.uniform(0.01, 0.3)
        conf[rng.random(n) < missing] = 0.0
        return np.concatenate([xy, conf[:, None]], axis=1)
    return Person(body=part(18), face=part(70) if rng.random() < 0.8 else None,
                  left_hand=part(21) if rng.random() < 0.8 else None,
                  right_hand=part(21) if rng.random() < 0.8 else None)


def to_controlnet_aux(frame: PoseFrame, threshold: float = 0.0):
    """PoseFrame -> controlnet_aux PoseResults (0-1 keypoints; None / (0, 0) for missing points)."""
    from controlnet_aux.open_pose import PoseResult
    from controlnet_aux.open_pose.body import BodyResult, Keypoint

    w, h = frame.width, frame.height

    def body(v):
        return [Keypoint(x / w, y / h) if c > threshold else None for x, y, c in v]

    def dots(v):
        if v is None:
            return None
        return [Keypoint(x / w, y / h) if c > threshold else Keypoint(0.0, 0.0) for x, y, c in v]

    return [PoseResult(BodyResult(body(p.body), 0.0, 0), dots(p.left_hand), dots(p.right_hand), dots(p.face))
            for p in frame.people]


def astronaut() -> np.ndarray:
    import skimage.data

    return skimage.data.astronaut()  # (512, 512, 3) uint8, public domain (NASA)


def grace_hopper() -> np.ndarray:
    import cv2
    import matplotlib

    path = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
    return cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)  # (600, 512, 3), public domain (US Navy)


def aux_draw(frame: dict, draw_body: bool = True, draw_hand: bool = True, draw_face: bool = True) -> np.ndarray:
    """What comfyui_controlnet_aux (Fannovel16, v1.1.x) draws for one POSE_KEYPOINT frame, with controlnet_aux's own
    drawing functions (the same ControlNet 1.1 code its ``draw_poses`` runs).

    Its node code is not installable, so its decoding is described here, not copied (``decode_json_as_poses`` and
    ``util.is_normalized`` in src/custom_controlnet_aux/dwpose): each part list is cut into (x, y, c) triplets, a
    point with c < 1.0 is missing, an empty or null part is "no part" (a null *body* is then iterated and raises
    TypeError); at drawing time every part on its own counts as normalised when all its present points have
    |x|, |y| <= 1, else as pixels (drawn with W = H = 1). ``animals`` are not drawn here.
    """
    from controlnet_aux.open_pose import util
    from controlnet_aux.open_pose.body import Keypoint

    w, h = frame["canvas_width"], frame["canvas_height"]

    def decode(numbers):
        if not numbers:
            return None
        assert len(numbers) % 3 == 0
        return [Keypoint(x, y) if c >= 1.0 else None for x, y, c in zip(numbers[0::3], numbers[1::3], numbers[2::3])]

    def as_normalised(kps, missing):
        """controlnet_aux's drawing takes 0-1 points: pixel parts are divided by the canvas (its W = H = 1)."""
        present = [k for k in kps if k is not None]
        normalised = bool(present) and all(abs(k.x) <= 1 and abs(k.y) <= 1 for k in present)
        s = (1.0, 1.0) if normalised else (w, h)
        return [missing if k is None else Keypoint(k.x / s[0], k.y / s[1]) for k in kps]

    canvas = np.zeros((h, w, 3), dtype=np.uint8)
    for person in frame.get("people", []):
        body = decode(person.get("pose_keypoints_2d"))
        if body is None:
            raise TypeError("'NoneType' object is not subscriptable (aux draw_bodypose on a null body)")
        if draw_body:
            canvas = util.draw_bodypose(canvas, as_normalised(body, None))
        for key in ("hand_left_keypoints_2d", "hand_right_keypoints_2d"):
            hand = decode(person.get(key))
            if draw_hand and hand:
                canvas = util.draw_handpose(canvas, as_normalised(hand, Keypoint(0.0, 0.0)))
        face = decode(person.get("face_keypoints_2d"))
        if draw_face and face:
            canvas = util.draw_facepose(canvas, as_normalised(face, Keypoint(0.0, 0.0)))
    return canvas


def aux_openpose_json(frame: PoseFrame, face_background: tuple[float, float] | None = None) -> dict:
    """A frame as comfyui_controlnet_aux's OpenPose node writes it (Fannovel16 v1.1.x, described, not copied:
    ``OpenposeDetector.detect_poses`` / ``detect_hands`` / ``detect_face`` and ``encode_poses_as_dict`` in
    src/custom_controlnet_aux/open_pose/__init__.py). The frame's canvas is the detection image (a multiple of 64, so
    its pad-to-64 adds nothing) and the coordinates are divided by it in float32, as there:

    - body: ``[x/W, y/H, 1.0]``, a joint it did not find ``[0, 0, 0]``;
    - a hand whose box was searched (``left_hand`` / ``right_hand`` not None): 21 points, a point the hand net did
      not find (its peak (0, 0), c = 0 here) written as ``[-1/W, -1/H, 1.0]``; a hand with no box: ``null``;
    - face: one point per facenet map that has a peak, in map order: the found landmarks (a missing one is left
      out, so later points move up), then the background map's peak ``face_background`` (pixels) when given.
    """
    w, h = np.float32(frame.width), np.float32(frame.height)

    def xy(x, y):
        return [float(np.float32(x) / w), float(np.float32(y) / h), 1.0]

    def hand(v):
        if v is None:
            return None
        return [c for x, y, s in v for c in (xy(x, y) if s > 0 else [float(np.float32(-1) / w),
                                                                      float(np.float32(-1) / h), 1.0])]

    people = []
    for p in frame.people:
        face = None
        if p.face is not None:
            face = [c for x, y, s in p.face if s > 0 for c in xy(x, y)]
            face += xy(*face_background) if face_background is not None else []
        people.append({"pose_keypoints_2d": [c for x, y, s in p.body for c in (xy(x, y) if s > 0 else [0.0] * 3)],
                       "face_keypoints_2d": face, "hand_left_keypoints_2d": hand(p.left_hand),
                       "hand_right_keypoints_2d": hand(p.right_hand)})
    return {"people": people, "canvas_height": frame.height, "canvas_width": frame.width}


def aux_dwpose_json(frame: PoseFrame) -> dict:
    """A frame as comfyui_controlnet_aux's DWPose node writes it (its ``Wholebody.format_result`` +
    ``encode_poses_as_dict``, described): pixels of the input frame, c = 1 / ``[0, 0, 0]`` (score < 0.3), a part with
    no point at all is null (the body is 18 x [0, 0, 0] instead), the face is 68 points + body REye + body LEye."""
    def part(v, n):
        if v is None or not (v[:, 2] > 0).any():
            return None if n != 18 else [0.0] * 54
        return [float(c) for x, y, s in v for c in ((x, y, 1.0) if s > 0 else (0.0, 0.0, 0.0))]

    people = []
    for p in frame.people:
        face = None if p.face is None else np.concatenate([p.face[:68], p.body[[14, 15]]])
        people.append({"pose_keypoints_2d": part(p.body, 18), "face_keypoints_2d": part(face, 70),
                       "hand_left_keypoints_2d": part(p.left_hand, 21),
                       "hand_right_keypoints_2d": part(p.right_hand, 21)})
    return {"people": people, "canvas_height": frame.height, "canvas_width": frame.width}


FINGERTIPS = [4, 8, 12, 16, 20]
FLICKER = [8, 12]             # right-hand fingertips the hand net misses in every third frame (short gaps)
NEVER = 20                    # a left-hand fingertip it never finds
AUX_CLIP_SIZE = (512, 768, 9)  # canvas width, height (multiples of 64: no pad-to-64), frames


def aux_clip_frames() -> list[PoseFrame]:
    """The truth of a static clip for comfyui_controlnet_aux interop: person A (large) with both hands and a 70-point
    face, fingertips ``FLICKER`` missing in every third frame and ``NEVER`` in all; person B (small, bottom right)
    whose left hand box was searched but no point found, no right hand box, no face. Integer pixels (its OpenPose
    peaks are); static, so smoothing must not move anything."""
    w, h, n = AUX_CLIP_SIZE
    frames = []
    for t in range(n):
        a = standing_person(offset=(10.0, 160.0)).transformed(np.round)
        b = standing_person(scale=0.5, offset=(330.0, 520.0), face=False).transformed(np.round)
        a.left_hand[NEVER] = 0.0
        if t % 3 == 1:
            a.right_hand[FLICKER] = 0.0
        b.left_hand[:] = 0.0
        b.right_hand = None
        frames.append(PoseFrame(w, h, [a, b]))
    return frames


def aux_clip_json(writer: str, background: bool = True) -> list[dict]:
    """``aux_clip_frames`` as comfyui_controlnet_aux's ``openpose`` node writes them (with a 71st face point:
    facenet's background map peaking inside the face box; ``background`` False leaves it out) or its ``dwpose``
    node, as plain JSON."""
    import json

    frames = aux_clip_frames()
    if writer == "openpose":
        data = [aux_openpose_json(f, face_background=(f.people[0].face[0, 0] - 6, f.people[0].face[19, 1] - 9)
                                  if background else None) for f in frames]
    else:
        data = [aux_dwpose_json(f) for f in frames]
    return json.loads(json.dumps(data))


def lit_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of the drawn (non-black) pixels of two (H, W, 3) maps; 1.0 when both are black."""
    la, lb = a.any(axis=-1), b.any(axis=-1)
    union = int((la | lb).sum())
    return 1.0 if union == 0 else int((la & lb).sum()) / union


def frontend_photo(name: str) -> np.ndarray:
    """A photo shipped in the ComfyUI frontend package (comfyui_frontend_package/static/assets/<name>)."""
    import glob

    import comfyui_frontend_package
    from PIL import Image

    root = os.path.dirname(comfyui_frontend_package.__file__)
    (path,) = glob.glob(os.path.join(root, "static", "assets", name))
    return np.asarray(Image.open(path).convert("RGB"))


def full_body_dancer() -> np.ndarray:
    """The full-body photo in the ComfyUI frontend package's poster image: a woman in a wide stance with her right
    arm raised (hand clearly visible), cropped to (620, 520, 3)."""
    return np.ascontiguousarray(frontend_photo("center-image-*.jpg")[200:820, 520:1040])


def padded(img: np.ndarray, where: str = "below") -> np.ndarray:
    """A half-body photo at half size inside a black frame of the same size (letterbox-like framing): ``below`` =
    at the top centre, ``around`` = centred."""
    import cv2

    h, w = img.shape[:2]
    out = np.zeros_like(img)
    small = cv2.resize(img, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    y0 = 0 if where == "below" else (h - h // 2) // 2
    x0 = (w - w // 2) // 2
    out[y0:y0 + h // 2, x0:x0 + w // 2] = small
    return out
