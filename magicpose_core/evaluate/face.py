"""Face-Cos: cosine similarity of face-identity embeddings of each generated frame and its ground-truth frame.

The paper reports Face-Cos but its repository has no code for it (docs/evaluation.md §2.5). Here: the face is
located with the pack's pose detector (its 70-point face), aligned by a similarity transform from five points
(eye centres, nose tip 30, mouth corners 48 and 54) onto the standard 112x112 ArcFace template, embedded by an
ArcFace-convention ONNX model (RGB, (x - 127.5) / 127.5, NCHW; default InsightFace's ``w600k_r50.onnx``) on
onnxruntime, and the cosine of the two L2-normalised embeddings is taken. Frames where either face is not found
are skipped and counted.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..pose.keypoints import Person, PoseFrame
from .pixel import SKIMAGE_INSTALL, MetricUnavailable

FACE_SIZE = 112
# the 112x112 ArcFace landmark template (image-left eye, image-right eye, nose tip, mouth corners)
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)


def five_points(face: np.ndarray | None) -> np.ndarray | None:
    """(70, 3) OpenPose face -> (5, 2) alignment points, or None if any is missing."""
    if face is None:
        return None
    pts = []
    for pupil, contour in ((68, slice(36, 42)), (69, slice(42, 48))):   # subject's right eye first (image left)
        if face[pupil, 2] > 0:
            pts.append(face[pupil, :2])
        elif (face[contour, 2] > 0).all():
            pts.append(face[contour, :2].mean(0))
        else:
            return None
    for i in (30, 48, 54):
        if face[i, 2] <= 0:
            return None
        pts.append(face[i, :2])
    return np.array(pts, dtype=np.float64)  # (5, 2)


def main_face(frame: PoseFrame) -> np.ndarray | None:
    """Five alignment points of the largest person that has a complete face."""
    people: list[Person] = sorted(frame.people, key=lambda p: -p.area())
    for p in people:
        pts = five_points(p.face)
        if pts is not None:
            return pts
    return None


def align_face(rgb: np.ndarray, points: np.ndarray) -> np.ndarray | None:
    """(H, W, 3) uint8 + (5, 2) points -> (112, 112, 3) uint8 aligned face (least-squares similarity); None when
    the points are degenerate (e.g. all in one place)."""
    import cv2

    m = similarity(points, ARCFACE_TEMPLATE)
    return None if m is None else cv2.warpAffine(rgb, m, (FACE_SIZE, FACE_SIZE), borderValue=0)


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray | None:
    """2x3 least-squares similarity transform src -> dst: scikit-image's ``SimilarityTransform`` estimate
    (Umeyama 1991, no reflection), the fit InsightFace's own ArcFace alignment uses."""
    try:
        from skimage.transform import SimilarityTransform
    except ImportError:
        raise MetricUnavailable(f"Face-Cos face alignment needs scikit-image: {SKIMAGE_INSTALL}") from None
    if hasattr(SimilarityTransform, "from_estimate"):  # scikit-image >= 0.26 (``estimate`` is deprecated there)
        tf = SimilarityTransform.from_estimate(src, dst)
        ok = bool(tf)
    else:
        tf = SimilarityTransform()
        ok = tf.estimate(src, dst)
    if not ok or not np.isfinite(tf.params).all():
        return None
    return np.asarray(tf.params[:2], dtype=np.float64)  # (3, 3) homogeneous -> (2, 3)


class FaceEmbedder:
    """Callable: (112, 112, 3) uint8 aligned RGB face -> (D,) unit embedding (ONNX on onnxruntime)."""

    def __init__(self, onnx_path: str | Path) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise MetricUnavailable("Face-Cos needs onnxruntime: pip install onnxruntime") from None
        self.session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        if len(inp.shape) != 4 or inp.shape[1] != 3:
            raise MetricUnavailable(f"{onnx_path}: expected a face-recognition input (N, 3, 112, 112), got {inp.shape}")
        self.input = inp.name

    def __call__(self, face: np.ndarray) -> np.ndarray:
        x = (face.astype(np.float32) - 127.5) / 127.5
        x = x.transpose(2, 0, 1)[None]  # (1, 3, 112, 112)
        emb = np.asarray(self.session.run(None, {self.input: x})[0], dtype=np.float64).reshape(-1)  # (D,)
        norm = np.linalg.norm(emb)
        if not np.isfinite(norm) or norm == 0:
            raise MetricUnavailable("the face model returned a zero or non-finite embedding")
        return emb / norm


def face_cosine(embedder: FaceEmbedder, gen: np.ndarray, gen_pose: PoseFrame, gt: np.ndarray,
                gt_pose: PoseFrame) -> float:
    """Cosine of the identity embeddings, NaN when a face is missing in either frame."""
    a, b = main_face(gen_pose), main_face(gt_pose)
    face_a = None if a is None else align_face(gen, a)
    face_b = None if b is None else align_face(gt, b)
    if face_a is None or face_b is None:
        return float("nan")
    return float(embedder(face_a) @ embedder(face_b))
