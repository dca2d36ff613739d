"""DWPose whole-body detector on onnxruntime: YOLOX-L person boxes, then DWPose-L 133 keypoints per box.

Weights: ``yolox_l.onnx`` and ``dw-ll_ucoco_384.onnx`` from the Hugging Face repository yzd-v/DWPose
(Apache-2.0). Behaviour matched (no code copied) from IDEA-Research/DWPose
ControlNet-v1-1-nightly/annotator/dwpose (``onnxdet.py``, ``onnxpose.py``, ``wholebody.py``) and mmpose's
top-down RTMPose pipeline:

- detector: the image is resized by r = min(640 / H, 640 / W) (bilinear), placed top-left on a 114-gray
  640x640 canvas, fed as float (1, 3, 640, 640) 0-255 without normalisation; outputs (1, 8400, 85) with
  xy offsets, log-wh, sigmoid objectness and class scores on stride 8/16/32 grids; boxes are decoded,
  divided by r, class-wise NMS at IoU 0.45 (score > 0.1), and persons (class 0) with score > 0.3 are kept;
  when none is found the whole image is used as the box;
- pose: box -> centre and scale x 1.25, aspect fixed to the model's 288:384 (w:h), affine crop (bilinear) to
  (1, 3, 384, 288), normalised with mean (123.675, 116.28, 103.53) and std (58.395, 57.12, 57.375);
  SimCC outputs simcc_x (1, 133, 576) and simcc_y (1, 133, 768) are decoded by argmax / 2 (split ratio 2),
  score = the smaller of the two maxima (a point with score <= 0 is missing), and mapped back through the crop;
- COCO-WholeBody-133 -> OpenPose by mapping.py; points with score < 0.3 are missing (DWPose's rule).
"""
from __future__ import annotations

import logging

import cv2
import numpy as np
from einops import rearrange

from .base import BaseDetector, as_rgb_uint8
from .keypoints import PoseFrame
from .mapping import coco_wholebody_to_person

log = logging.getLogger("MagicPose")

DET_SIZE = (640, 640)          # (H, W) of the YOLOX input
DET_PAD = 114
DET_STRIDES = (8, 16, 32)
NMS_IOU = 0.45
DET_SCORE = 0.1                # candidate threshold before NMS
PERSON_SCORE = 0.3             # kept person boxes
POSE_SIZE = (288, 384)         # (W, H) of the DWPose-L input
BOX_PADDING = 1.25
SIMCC_SPLIT = 2.0
MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)
KEYPOINT_SCORE = 0.3


# ---------------------------------------------------------------------------------------------------------------
# person detector


def letterbox(rgb: np.ndarray, size: tuple[int, int] = DET_SIZE) -> tuple[np.ndarray, float]:
    """(H, W, 3) uint8 -> (1, 3, size_h, size_w) float32 YOLOX input and the resize ratio r."""
    h, w = rgb.shape[:2]
    r = min(size[0] / h, size[1] / w)
    nw, nh = max(1, int(w * r)), max(1, int(h * r))
    canvas = np.full((size[0], size[1], 3), DET_PAD, dtype=np.uint8)
    canvas[:nh, :nw] = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(rearrange(canvas, "h w c -> 1 c h w"), dtype=np.float32), r


def yolox_grids(size: tuple[int, int] = DET_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Anchor grid cells (N, 2) and their strides (N, 1) in YOLOX output order (stride 8, then 16, then 32)."""
    grids, strides = [], []
    for s in DET_STRIDES:
        gh, gw = size[0] // s, size[1] // s
        xv, yv = np.meshgrid(np.arange(gw), np.arange(gh))
        grids.append(rearrange(np.stack([xv, yv], axis=-1), "gh gw xy -> (gh gw) xy"))
        strides.append(np.full((gh * gw, 1), s))
    return np.concatenate(grids).astype(np.float64), np.concatenate(strides).astype(np.float64)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU) -> list[int]:
    """Greedy NMS (boxes x0, y0, x1, y1 in pixels, +1 area convention as in YOLOX's demo)."""
    x0, y0, x1, y1 = boxes.T
    areas = (x1 - x0 + 1) * (y1 - y0 + 1)
    order = list(np.argsort(-scores, kind="stable"))
    keep = []
    while order:
        i, rest = order[0], np.array(order[1:], dtype=int)
        keep.append(int(i))
        if not len(rest):
            break
        iw = np.maximum(0.0, np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]) + 1)
        ih = np.maximum(0.0, np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]) + 1)
        inter = iw * ih
        ovr = inter / (areas[i] + areas[rest] - inter)
        order = list(rest[ovr <= iou])
    return keep


def decode_yolox(output: np.ndarray, ratio: float, size: tuple[int, int] = DET_SIZE) -> np.ndarray:
    """YOLOX raw output (1, N, 5 + classes) -> person boxes (K, 4) x0, y0, x1, y1 in source pixels."""
    pred = np.asarray(output, dtype=np.float64)[0]                  # (N, 5 + C)
    grids, strides = yolox_grids(size)
    if pred.shape[0] != grids.shape[0]:
        raise ValueError(f"YOLOX output has {pred.shape[0]} anchors; a {size[1]}x{size[0]} input needs "
                         f"{grids.shape[0]} — is this yolox_l.onnx?")
    xy = (pred[:, :2] + grids) * strides
    wh = np.exp(np.minimum(pred[:, 2:4], 20.0)) * strides
    boxes = np.concatenate([xy - wh / 2, xy + wh / 2], axis=1) / ratio  # (N, 4)
    scores = pred[:, 4:5] * pred[:, 5:]                             # (N, C) objectness x class
    kept = []
    for c in range(scores.shape[1]):
        m = scores[:, c] > DET_SCORE
        if not m.any():
            continue
        b, s = boxes[m], scores[m, c]
        for i in nms(b, s):
            kept.append((b[i], s[i], c))
    return np.array([b for b, s, c in kept if c == 0 and s > PERSON_SCORE]).reshape(-1, 4)


# ---------------------------------------------------------------------------------------------------------------
# pose model


def box_to_center_scale(box: np.ndarray, padding: float = BOX_PADDING,
                        aspect: float = POSE_SIZE[0] / POSE_SIZE[1]) -> tuple[np.ndarray, np.ndarray]:
    """(x0, y0, x1, y1) -> centre (2,) and scale (w, h) (2,) padded and widened/heightened to ``aspect`` (w/h)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    center = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    w, h = (x1 - x0) * padding, (y1 - y0) * padding
    if w > h * aspect:
        h = w / aspect
    else:
        w = h * aspect
    return center, np.array([w, h])


def crop_matrix(center: np.ndarray, scale: np.ndarray, size: tuple[int, int] = POSE_SIZE) -> np.ndarray:
    """2x3 affine from source pixels to the (W, H) model crop of the box (no rotation)."""
    sx, sy = size[0] / scale[0], size[1] / scale[1]
    return np.array([[sx, 0.0, size[0] / 2 - center[0] * sx], [0.0, sy, size[1] / 2 - center[1] * sy]])


def pose_input(rgb: np.ndarray, box: np.ndarray, size: tuple[int, int] = POSE_SIZE
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source image + box -> normalised (1, 3, H, W) float32 crop, centre, scale."""
    center, scale = box_to_center_scale(box, aspect=size[0] / size[1])
    crop = cv2.warpAffine(rgb, crop_matrix(center, scale, size), size, flags=cv2.INTER_LINEAR)
    x = (crop.astype(np.float32) - MEAN) / STD
    return np.ascontiguousarray(rearrange(x, "h w c -> 1 c h w")), center, scale


def decode_simcc(simcc_x: np.ndarray, simcc_y: np.ndarray, center: np.ndarray, scale: np.ndarray,
                 size: tuple[int, int] = POSE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """SimCC (K, Wx), (K, Wy) -> keypoints (K, 2) in source pixels and scores (K,) (min of the two maxima)."""
    xl = np.argmax(simcc_x, axis=-1).astype(np.float64)
    yl = np.argmax(simcc_y, axis=-1).astype(np.float64)
    score = np.minimum(simcc_x.max(axis=-1), simcc_y.max(axis=-1)).astype(np.float64)
    locs = np.stack([xl, yl], axis=-1) / SIMCC_SPLIT                 # (K, 2) in crop pixels
    xy = locs / np.array(size, dtype=np.float64) * scale + center - scale / 2
    score[score <= 0] = 0.0
    return xy, score


class DWPoseDetector(BaseDetector):
    """YOLOX-L + DWPose-L on onnxruntime (CPU by default); several people per frame."""

    name = "dwpose"
    threshold = KEYPOINT_SCORE

    def __init__(self, det_path: str, pose_path: str, providers: list[str] | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise RuntimeError("the dwpose detector needs onnxruntime: pip install onnxruntime") from None
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        providers = providers or ["CPUExecutionProvider"]
        try:
            self.det = ort.InferenceSession(det_path, sess_options=opts, providers=providers)
            self.pose = ort.InferenceSession(pose_path, sess_options=opts, providers=providers)
        except Exception as e:
            raise RuntimeError(f"could not load the DWPose ONNX models ({det_path}, {pose_path}): {e}. Re-download "
                               "yolox_l.onnx and dw-ll_ucoco_384.onnx (yzd-v/DWPose).") from None
        shape = self.pose.get_inputs()[0].shape  # (1, 3, H, W)
        self.pose_size = (int(shape[3]), int(shape[2])) if all(isinstance(v, int) for v in shape[2:]) else POSE_SIZE
        dshape = self.det.get_inputs()[0].shape
        self.det_size = (int(dshape[2]), int(dshape[3])) if all(isinstance(v, int) for v in dshape[2:]) else DET_SIZE

    def boxes(self, rgb: np.ndarray) -> np.ndarray:
        x, r = letterbox(rgb, self.det_size)
        out = self.det.run(None, {self.det.get_inputs()[0].name: x})[0]
        return decode_yolox(out, r, self.det_size)

    def keypoints(self, rgb: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x, center, scale = pose_input(rgb, box, self.pose_size)
        names = [o.name for o in self.pose.get_outputs()]
        outs = dict(zip(names, self.pose.run(None, {self.pose.get_inputs()[0].name: x})))
        if "simcc_x" in outs and "simcc_y" in outs:
            sx, sy = outs["simcc_x"], outs["simcc_y"]
        else:  # unnamed: simcc_x has W x 2 bins, simcc_y H x 2
            sx, sy = sorted(list(outs.values())[:2], key=lambda o: abs(o.shape[-1] - self.pose_size[0] * SIMCC_SPLIT))
        return decode_simcc(sx[0], sy[0], center, scale, self.pose_size)

    def detect_raw(self, rgb: np.ndarray) -> PoseFrame:
        rgb = as_rgb_uint8(rgb)
        h, w = rgb.shape[:2]
        boxes = self.boxes(rgb)
        if len(boxes) == 0:
            boxes = np.array([[0.0, 0.0, float(w), float(h)]])  # DWPose's fallback: the whole image
        people = []
        for box in boxes:
            xy, score = self.keypoints(rgb, box)
            if xy.shape[0] != 133:
                raise ValueError(f"the DWPose model gave {xy.shape[0]} keypoints; dw-ll_ucoco_384.onnx gives 133")
            p = coco_wholebody_to_person(xy, score, w, h)
            if not p.is_empty:
                people.append(p)
        return PoseFrame(w, h, people)
