"""Stand-in detector weights with the real input/output signatures, built at test time (never downloaded):

- a fake ``yolox_l.onnx``: (1, 3, 640, 640) -> (1, 8400, 85) encoding chosen boxes on the stride-32 grid;
- a fake ``dw-ll_ucoco_384.onnx``: (1, 3, 384, 288) -> simcc_x (1, 133, 576), simcc_y (1, 133, 768) whose peaks
  are the brightest column/row of the red channel of the crop, so every keypoint lands on the brightest pixel of
  the person box: decoding, the crop affine and its inverse are checked against a known image position;
- random-weight CMU OpenPose body/hand/face ``.pth`` files with the layouts controlnet_aux loads.

ONNX files use onnx 1.17 with IR version 8 and opset 13 (docs/pose.md §3.5).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

CACHE = Path(__file__).resolve().parents[2] / ".cache" / "test-weights"
DET_ANCHORS = 8400


def _save(graph, path: Path) -> Path:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="magicpose-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def yolox_output(boxes: list[tuple[float, float, float, float, float, int]], ratio: float) -> np.ndarray:
    """Raw YOLOX output (1, 8400, 85) holding ``boxes`` = (x0, y0, x1, y1, score, class) in source pixels, for a
    source image resized by ``ratio`` into the 640 x 640 input. Each box sits in its own stride-32 cell."""
    out = np.zeros((1, DET_ANCHORS, 85), dtype=np.float32)
    out[0, :, 2:4] = -5.0
    base = 80 * 80 + 40 * 40          # stride-32 anchors start here (20 x 20 grid)
    used = set()
    for x0, y0, x1, y1, score, cls in boxes:
        cx, cy, w, h = (x0 + x1) / 2 * ratio, (y0 + y1) / 2 * ratio, (x1 - x0) * ratio, (y1 - y0) * ratio
        gx, gy = int(cx // 32), int(cy // 32)
        while (gx, gy) in used:       # duplicates (for NMS tests) go to the next cell, same box
            gx += 1
        used.add((gx, gy))
        a = base + gy * 20 + gx
        out[0, a, :4] = [cx / 32 - gx, cy / 32 - gy, np.log(w / 32), np.log(h / 32)]
        out[0, a, 4] = score
        out[0, a, 5 + cls] = 1.0
    return out


def fake_yolox(path: Path, boxes, ratio: float) -> Path:
    """A YOLOX-shaped model returning ``yolox_output(boxes, ratio)`` (+ 0 x the input mean, so it reads it)."""
    from onnx import TensorProto, helper, numpy_helper

    const = numpy_helper.from_array(yolox_output(boxes, ratio), "boxes")
    zero = numpy_helper.from_array(np.zeros((1,), dtype=np.float32), "zero")
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["m"], keepdims=0),
        helper.make_node("Mul", ["m", "zero"], ["z"]),
        helper.make_node("Add", ["boxes", "z"], ["output"]),
    ]
    graph = helper.make_graph(nodes, "fake_yolox",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 640, 640])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, DET_ANCHORS, 85])],
                              initializer=[const, zero])
    return _save(graph, path)


def fake_dwpose(path: Path, k: int = 133) -> Path:
    """simcc_x[k] = the red channel's column maxima of the crop, each repeated twice (split ratio 2); simcc_y
    likewise over rows; all 133 keypoints alike."""
    from onnx import TensorProto, helper, numpy_helper

    def c(name, values):
        return numpy_helper.from_array(np.array(values, dtype=np.int64), name)

    inits = [c("s0", [0]), c("s1", [1]), c("ax1", [1]), c("rx", [1, 1, 288, 1]), c("ry", [1, 1, 384, 1]),
             c("rep2", [1, 1, 1, 2]), c("fx", [1, 1, 576]), c("fy", [1, 1, 768]), c("repk", [1, k, 1])]
    nodes = [
        helper.make_node("Slice", ["input", "s0", "s1", "ax1"], ["red"]),                  # (1, 1, 384, 288)
        helper.make_node("ReduceMax", ["red"], ["colmax"], axes=[2], keepdims=1),          # (1, 1, 1, 288)
        helper.make_node("Reshape", ["colmax", "rx"], ["cx"]),                             # (1, 1, 288, 1)
        helper.make_node("Tile", ["cx", "rep2"], ["cx2"]),                                 # (1, 1, 288, 2)
        helper.make_node("Reshape", ["cx2", "fx"], ["sx1"]),                               # (1, 1, 576)
        helper.make_node("Tile", ["sx1", "repk"], ["simcc_x"]),                            # (1, 133, 576)
        helper.make_node("ReduceMax", ["red"], ["rowmax"], axes=[3], keepdims=1),          # (1, 1, 384, 1)
        helper.make_node("Reshape", ["rowmax", "ry"], ["cy"]),
        helper.make_node("Tile", ["cy", "rep2"], ["cy2"]),                                 # (1, 1, 384, 2)
        helper.make_node("Reshape", ["cy2", "fy"], ["sy1"]),                               # (1, 1, 768)
        helper.make_node("Tile", ["sy1", "repk"], ["simcc_y"]),                            # (1, 133, 768)
    ]
    graph = helper.make_graph(nodes, "fake_dwpose",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 384, 288])],
                              [helper.make_tensor_value_info("simcc_x", TensorProto.FLOAT, [1, k, 576]),
                               helper.make_tensor_value_info("simcc_y", TensorProto.FLOAT, [1, k, 768])],
                              initializer=inits)
    return _save(graph, path)


def dwpose_folder(folder: Path, boxes, ratio: float) -> Path:
    fake_yolox(folder / "yolox_l.onnx", boxes, ratio)
    fake_dwpose(folder / "dw-ll_ucoco_384.onnx")
    return folder


def openpose_folder(folder: Path = CACHE / "openpose") -> Path:
    """Random-weight body_pose_model.pth / hand_pose_model.pth / facenet.pth (fp16 to halve the ~500 MB), in the
    key layouts controlnet_aux's Body/Hand (first name component dropped) and Face (as is) load."""
    import torch
    from controlnet_aux.open_pose.face import FaceNet
    from controlnet_aux.open_pose.model import bodypose_model, handpose_model

    files = {"body_pose_model.pth": (bodypose_model, True), "hand_pose_model.pth": (handpose_model, True),
             "facenet.pth": (FaceNet, False)}
    folder.mkdir(parents=True, exist_ok=True)
    for name, (cls, strip) in files.items():
        path = folder / name
        if path.exists():
            continue
        torch.manual_seed(0)
        sd = cls().state_dict()
        sd = {(k.split(".", 1)[1] if strip else k): v.half() for k, v in sd.items()}
        torch.save(sd, str(path) + ".part")
        Path(str(path) + ".part").rename(path)
    return folder
