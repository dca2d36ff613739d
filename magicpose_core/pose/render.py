"""Keypoints -> ControlNet 1.1 "openpose_full" pose map, pixel-identical to controlnet_aux 0.0.10.

MagicPose's pose ControlNet was trained on maps drawn by ControlNet 1.1 ``annotator/openpose/util.py``
(MagicDance@a515a1f misc_scripts/detect_openpose_map_tiktok.py, behaviour only; docs/method.md §5.4).
This module is written from the spec in docs/pose.md §1 and is checked against controlnet_aux's ``draw_bodypose`` /
``draw_handpose`` / ``draw_facepose`` (0 differing pixels, tests/core/test_pose_render.py):

- body: 17 limbs as filled ``cv2.ellipse2Poly`` polygons (semi-axes length/2 and 4 px) in colour x 0.6, then the
  joints as radius-4 discs in full colour (the last two ``limbSeq`` entries, ear-shoulder, are never drawn);
- hands: 20 edges, ``cv2.line`` thickness 2, HSV rainbow, then blue radius-4 dots; a point counts only when its
  truncated pixel x and y are > 0.01 (i.e. >= 1);
- face: white radius-3 dots, same rule.

Those drawing functions take 0-1 keypoints and truncate ``x * W``; we go through the same normalised value
(``(x / W) * W``) so truncation agrees bit for bit. Strokes are fixed in pixels, so *where* the map is drawn
matters (docs/pose.md §1.6): ``render_pose_fitted`` draws at the source frame's size and then crops/letterboxes/resizes
with ``magicpose_core.media.geometry`` (the same code path as the frames and the reference), as the official data was
drawn at 604x1080 and centre-cropped to 512.
"""
from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np
import torch

from ..media.geometry import FitGeometry, fit_geometry, fit_images
from ..media.images import from_uint8
from .keypoints import MAX_CANVAS, PoseFrame

# Joint colours (RGB) of the 18 OpenPose body points; limb i is drawn in colour i x 0.6 (docs/pose.md §1.2).
BODY_COLORS = [(255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
               (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
               (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85)]
# The 17 drawn limbs, 0-based joint pairs (ControlNet's 1-based limbSeq minus its last two entries).
LIMBS = [(1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
         (1, 0), (0, 14), (14, 16), (0, 15), (15, 17)]
LIMB_COLORS = [tuple(int(c * 0.6) for c in BODY_COLORS[i]) for i in range(len(LIMBS))]
STICK_WIDTH = 4      # ellipse minor semi-axis (limbs ~8 px wide)
JOINT_RADIUS = 4
# 20 hand edges (docs/pose.md §1.4) and the colour OpenCV actually draws for hsv_to_rgb(e / 20, 1, 1) * 255
# (OpenCV rounds the float scalar half-to-even, so e.g. 76.50000000000001 -> 77 and 229.49999999999997 -> 229).
HAND_EDGES = [(0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10), (10, 11), (11, 12),
              (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20)]
HAND_EDGE_COLORS = [(255, 0, 0), (255, 77, 0), (255, 153, 0), (255, 229, 0), (204, 255, 0), (128, 255, 0),
                    (51, 255, 0), (0, 255, 25), (0, 255, 102), (0, 255, 179), (0, 255, 255), (0, 178, 255),
                    (0, 102, 255), (0, 25, 255), (51, 0, 255), (128, 0, 255), (204, 0, 255), (255, 0, 230),
                    (255, 0, 153), (255, 0, 77)]
HAND_LINE_WIDTH = 2
HAND_DOT_RADIUS = 4
HAND_DOT_COLOR = (0, 0, 255)
FACE_DOT_RADIUS = 3
FACE_DOT_COLOR = (255, 255, 255)
EPS = 0.01           # ControlNet's "point exists" test on integer pixels of hands and faces
TRAINING_CANVAS = 604  # short side of the official training frames (604x1080 TikTok), docs/pose.md §1.6
RENDER_CANVASES = ("source", "training", "output")


def _pixels(points: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Float pixel coordinates as ControlNet computes them: (x / W) * W, via the normalised value."""
    return (points[:, 0] / width) * float(width), (points[:, 1] / height) * float(height)


def draw_body(canvas: np.ndarray, body: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """Draw an (18, 3) body on an RGB uint8 canvas in place; points with confidence <= threshold are missing."""
    h, w = canvas.shape[:2]
    px, py = _pixels(body, w, h)
    present = body[:, 2] > threshold
    for (a, b), color in zip(LIMBS, LIMB_COLORS):
        if not (present[a] and present[b]):
            continue
        xs, ys = np.array([px[a], px[b]]), np.array([py[a], py[b]])
        cx, cy = np.mean(xs), np.mean(ys)
        length = ((ys[0] - ys[1]) ** 2 + (xs[0] - xs[1]) ** 2) ** 0.5
        angle = math.degrees(math.atan2(ys[0] - ys[1], xs[0] - xs[1]))
        poly = cv2.ellipse2Poly((int(cx), int(cy)), (int(length / 2), STICK_WIDTH), int(angle), 0, 360, 1)
        cv2.fillConvexPoly(canvas, poly, color)
    for i, color in enumerate(BODY_COLORS):
        if present[i]:
            cv2.circle(canvas, (int(px[i]), int(py[i])), JOINT_RADIUS, color, thickness=-1)
    return canvas


def _dot_mask(points: np.ndarray, w: int, h: int, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    px, py = _pixels(points, w, h)
    ix = np.array([int(v) for v in px])
    iy = np.array([int(v) for v in py])
    ok = (points[:, 2] > threshold) & (ix > EPS) & (iy > EPS)
    return ix, iy, ok


def draw_hand(canvas: np.ndarray, hand: np.ndarray | None, threshold: float = 0.0) -> np.ndarray:
    """Draw a (21, 3) hand in place: rainbow edges, then blue dots."""
    if hand is None:
        return canvas
    h, w = canvas.shape[:2]
    ix, iy, ok = _dot_mask(hand, w, h, threshold)
    for (a, b), color in zip(HAND_EDGES, HAND_EDGE_COLORS):
        if ok[a] and ok[b]:
            cv2.line(canvas, (int(ix[a]), int(iy[a])), (int(ix[b]), int(iy[b])), color, thickness=HAND_LINE_WIDTH)
    for i in np.flatnonzero(ok):
        cv2.circle(canvas, (int(ix[i]), int(iy[i])), HAND_DOT_RADIUS, HAND_DOT_COLOR, thickness=-1)
    return canvas


def draw_face(canvas: np.ndarray, face: np.ndarray | None, threshold: float = 0.0) -> np.ndarray:
    """Draw a (70, 3) face in place as white dots."""
    if face is None:
        return canvas
    h, w = canvas.shape[:2]
    ix, iy, ok = _dot_mask(face, w, h, threshold)
    for i in np.flatnonzero(ok):
        cv2.circle(canvas, (int(ix[i]), int(iy[i])), FACE_DOT_RADIUS, FACE_DOT_COLOR, thickness=-1)
    return canvas


def render_pose(frame: PoseFrame, body: bool = True, hands: bool = True, face: bool = True,
                threshold: float = 0.0) -> np.ndarray:
    """A PoseFrame -> openpose_full map, (H, W, 3) uint8 RGB at the frame's canvas size, black background.

    People are drawn in order, each body then hands then face (controlnet_aux ``draw_poses`` order). Points more
    than one canvas size beyond an edge are not drawn (``PoseFrame.bounded``: OpenCV overflows on huge values).
    """
    if frame.width > MAX_CANVAS or frame.height > MAX_CANVAS:
        raise ValueError(f"pose canvas {frame.width}x{frame.height} is larger than the {MAX_CANVAS} px per side limit")
    canvas = np.zeros((frame.height, frame.width, 3), dtype=np.uint8)
    for p in frame.bounded().people:
        if body:
            draw_body(canvas, p.body, threshold)
        if hands:
            draw_hand(canvas, p.left_hand, threshold)
            draw_hand(canvas, p.right_hand, threshold)
        if face:
            draw_face(canvas, p.face, threshold)
    return canvas


def canvas_scale(geometry: FitGeometry, render_canvas: str) -> float:
    """How much the source canvas is scaled before drawing.

    ``source``: 1 (official: draw at the frame's own size, then fit). ``training``: the used source region
    is drawn so its short side matches 604 px per 512 output px, giving the stroke widths the training maps
    had after their 604 -> 512 resize. ``output``: the used region is drawn at the output size (strokes at full
    width in the output, like controlnet_aux with detect_resolution = output size).
    """
    if render_canvas not in RENDER_CANVASES:
        raise ValueError(f"render canvas {render_canvas!r} is not one of {', '.join(RENDER_CANVASES)}")
    if render_canvas == "source":
        return 1.0
    box, crop = min(geometry.box_w, geometry.box_h), min(geometry.crop_w, geometry.crop_h)
    target = box * (TRAINING_CANVAS / 512.0) if render_canvas == "training" else box
    return target / crop


def render_pose_fitted(frame: PoseFrame, geometry: FitGeometry, body: bool = True, hands: bool = True,
                       face: bool = True, render_canvas: str = "source", threshold: float = 0.0) -> torch.Tensor:
    """Draw a source-frame PoseFrame at its source resolution (optionally rescaled, see ``canvas_scale``), then
    fit it to the output exactly like the frames and the reference (``geometry.fit_images``, black padding).

    ``geometry`` must be the fit of ``frame.width x frame.height``. Returns (dst_h, dst_w, 3) float in [0, 1].
    """
    g = geometry
    if (frame.width, frame.height) != (g.src_w, g.src_h):
        raise ValueError(f"pose frame canvas is {frame.width}x{frame.height} but the fit was computed for "
                         f"{g.src_w}x{g.src_h}")
    s = canvas_scale(g, render_canvas)
    if abs(s - 1.0) > 1e-9:
        cw, ch = max(1, round(frame.width * s)), max(1, round(frame.height * s))
        sx, sy = cw / frame.width, ch / frame.height
        frame = frame.transformed(lambda xy: xy * np.array([sx, sy]), cw, ch)
        g = fit_geometry(cw, ch, g.dst_w, g.dst_h, g.mode)
    canvas = render_pose(frame, body, hands, face, threshold)
    # fit_images slices the crop first anyway: slice the uint8 canvas so only the used region is converted
    crop = canvas[g.crop_y:g.crop_y + g.crop_h, g.crop_x:g.crop_x + g.crop_w]
    g = dataclasses.replace(g, src_w=g.crop_w, src_h=g.crop_h, crop_x=0, crop_y=0)
    if (g.crop_w, g.crop_h) == (g.box_w, g.box_h) == (g.dst_w, g.dst_h):
        # a pure crop: the values fit_images(from_uint8(.)) gives, without torch's threaded kernels on a frame
        return torch.from_numpy(np.ascontiguousarray(crop).astype(np.float32) / np.float32(255.0))
    return fit_images(from_uint8(crop), g, pad="black")[0]  # (1, H, W, 3) -> (dst_h, dst_w, 3)


def overlay_pose(image: torch.Tensor, pose_map: torch.Tensor, opacity: float = 0.6) -> torch.Tensor:
    """Preview helper: the pose map over a dimmed image, both (H, W, 3) float in [0, 1]."""
    drawn = (pose_map.max(dim=-1, keepdim=True).values > 0).to(image.dtype)  # (H, W, 1)
    base = image * (1 - opacity * 0.5)
    return base * (1 - drawn) + pose_map * drawn
