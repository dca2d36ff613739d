"""Detector backends without real weights: DWPose pre/post-processing through fake ONNX models with the real
signatures (known keypoints come out), OpenPose through controlnet_aux with random weights (plumbing), and the
missing-weights messages."""
from __future__ import annotations

import os

import numpy as np
import pytest
from support.pose_fakes import dwpose_folder, openpose_folder, yolox_output

from magicpose_core.pose import dwpose
from magicpose_core.pose.detect import MissingWeightsError, PoseDetector, create_detector, resolve_weights

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

W, H = 400, 600
RATIO = min(640 / H, 640 / W)


def _dot_image(points) -> np.ndarray:
    img = np.zeros((H, W, 3), dtype=np.uint8)
    for x, y in points:
        img[y - 1:y + 2, x - 1:x + 2] = 255  # 3 x 3: survives the bilinear crop resize
    return img


def test_dwpose_keypoints_land_on_the_known_image_position(tmp_path):
    box = (100.0, 120.0, 260.0, 380.0, 0.9, 0)
    det = create_detector("dwpose", weights_dir=str(dwpose_folder(tmp_path, [box], RATIO)))
    assert isinstance(det, PoseDetector) and det.threshold == 0.3
    frame = det(_dot_image([(180, 250)]))
    assert (frame.width, frame.height) == (W, H) and len(frame.people) == 1
    p = frame.people[0]
    for part, pts in p.parts():
        assert (pts[:, 2] > 2.0).all(), part       # score = normalised red of the dot, (255 - 123.675) / 58.395
        np.testing.assert_allclose(pts[:, :2], np.broadcast_to([180, 250], pts[:, :2].shape), atol=2.0)
    assert p.face.shape == (70, 3) and p.left_hand.shape == (21, 3)


def test_dwpose_boxes_nms_classes_and_scores(tmp_path):
    boxes = [(20.0, 40.0, 180.0, 400.0, 0.9, 0),    # person A
             (22.0, 42.0, 182.0, 402.0, 0.8, 0),    # duplicate of A (suppressed by NMS)
             (230.0, 100.0, 390.0, 560.0, 0.7, 0),  # person B
             (230.0, 100.0, 390.0, 560.0, 0.9, 1),  # not a person
             (10.0, 10.0, 90.0, 90.0, 0.25, 0)]     # below the 0.3 person score
    got = dwpose.decode_yolox(yolox_output(boxes, RATIO), RATIO)
    assert got.shape == (2, 4)
    np.testing.assert_allclose(sorted(got.tolist()), [list(boxes[0][:4]), list(boxes[2][:4])], atol=1e-3)
    det = create_detector("dwpose", weights_dir=str(dwpose_folder(tmp_path, boxes, RATIO)))
    frame = det(_dot_image([(60, 200), (300, 330)]))  # each dot only inside its own crop
    noses = sorted(p.body[0, :2].tolist() for p in frame.people)
    np.testing.assert_allclose(noses, [[60, 200], [300, 330]], atol=2.0)


def test_dwpose_without_boxes_uses_the_whole_image_and_empty_images_give_no_person(tmp_path):
    det = create_detector("dwpose", weights_dir=str(dwpose_folder(tmp_path, [], RATIO)))
    frame = det(_dot_image([(350, 40)]))
    assert len(frame.people) == 1
    np.testing.assert_allclose(frame.people[0].body[0, :2], [350, 40], atol=2.0)
    assert det(np.zeros((H, W, 3), dtype=np.uint8)).people == []        # every score <= 0: nobody
    with pytest.raises(ValueError, match="uint8"):
        det(np.zeros((H, W, 3), dtype=np.float32))


def test_dwpose_crop_geometry():
    center, scale = dwpose.box_to_center_scale(np.array([100, 120, 244, 312]))   # 144 x 192 = 3:4 already
    np.testing.assert_allclose(center, [172, 216])
    np.testing.assert_allclose(scale, [180, 240])
    m = dwpose.crop_matrix(center, scale)
    np.testing.assert_allclose(m @ [172, 216, 1], [144, 192])    # box centre -> crop centre
    np.testing.assert_allclose(m @ [82, 96, 1], [0, 0], atol=1e-9)        # padded box corner -> crop origin
    x, y = np.zeros((1, 576)), np.zeros((1, 768))
    x[0, 2 * 100], y[0, 2 * 50] = 1.0, 0.5
    xy, s = dwpose.decode_simcc(x, y, center, scale)
    np.testing.assert_allclose(xy[0], [100 * 180 / 288 + 82, 50 * 240 / 384 + 96])
    assert s[0] == 0.5


def test_missing_weights_name_files_and_folder(tmp_path, monkeypatch):
    with pytest.raises(MissingWeightsError) as e:
        create_detector("dwpose", weights_dir=str(tmp_path / "dwpose"))
    msg = str(e.value)
    assert "yolox_l.onnx" in msg and "dw-ll_ucoco_384.onnx" in msg and str(tmp_path / "dwpose") in msg
    assert "allow_download" in msg
    (tmp_path / "op").mkdir()
    (tmp_path / "op" / "facenet.pth").write_bytes(b"x")
    with pytest.raises(MissingWeightsError) as e:
        create_detector("openpose", weights_dir=str(tmp_path / "op"))
    assert "body_pose_model.pth" in str(e.value) and "facenet.pth" not in str(e.value).split("(")[0]
    assert "non-commercial" in str(e.value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingWeightsError, match="HF_HUB_OFFLINE"):
        resolve_weights("dwpose", str(tmp_path / "dl"), allow_download=True)
    assert not os.path.exists(tmp_path / "dl" / "yolox_l.onnx")
    with pytest.raises(ValueError, match="unknown pose detector"):
        create_detector("yolo")


def test_openpose_through_controlnet_aux_with_random_weights():
    pytest.importorskip("controlnet_aux")
    folder = openpose_folder()
    det = create_detector("openpose", weights_dir=str(folder))
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (64, 48, 3), dtype=np.uint8)
    frame = det(img)
    assert (frame.width, frame.height) == (48, 64)
    for p in frame.people:                       # random weights: whatever comes out is well-formed
        assert p.body.shape == (18, 3) and set(np.unique(p.body[:, 2])) <= {0.0, 1.0}
        for _, v in p.parts():
            on = v[:, 2] > 0
            assert (v[on, 0] >= 0).all() and (v[on, 0] <= 48).all() and (v[on, 1] <= 64).all()


def test_openpose_results_are_converted_to_pixels_with_missing_points():
    """The adapter over controlnet_aux's PoseResult: 0-1 -> pixels, None / negative (undetected) -> missing."""
    aux = pytest.importorskip("controlnet_aux.open_pose")
    from controlnet_aux.open_pose.body import BodyResult, Keypoint

    from magicpose_core.pose.openpose_backend import OpenPoseDetector

    body = [Keypoint(0.5, 0.25)] + [None] * 17
    hand = [Keypoint(0.1, 0.2)] * 20 + [Keypoint(-1 / 48, -1 / 64)]
    face = [Keypoint(0.3, 0.4)] * 70
    result = aux.PoseResult(BodyResult(body, 1.0, 1), hand, None, face)

    class Stub:
        def detect_poses(self, image, include_hand, include_face):
            assert include_hand and include_face and image.shape == (64, 48, 3)
            return [result]

    det = OpenPoseDetector.__new__(OpenPoseDetector)
    det._det = Stub()
    p = det(np.zeros((64, 48, 3), dtype=np.uint8)).people[0]
    np.testing.assert_allclose(p.body[0], [24, 16, 1])
    assert (p.body[1:, 2] == 0).all() and p.right_hand is None
    np.testing.assert_allclose(p.left_hand[0], [4.8, 12.8, 1])
    assert p.left_hand[20, 2] == 0 and p.face.shape == (70, 3)


def test_download_only_when_allowed_into_the_folder_and_without_hub_tracebacks(tmp_path, monkeypatch):
    """huggingface_hub is replaced by a local stand-in: tests never reach a hub."""
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    calls = []

    def fake_download(repo_id, filename, local_dir):
        calls.append((repo_id, filename))
        if filename == "facenet.pth":
            raise OSError("connection refused")
        (tmp_path / "w" / filename).write_bytes(b"weights")
        return str(tmp_path / "w" / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    paths = resolve_weights("dwpose", str(tmp_path / "w"), allow_download=True)
    assert calls == [("yzd-v/DWPose", "yolox_l.onnx"), ("yzd-v/DWPose", "dw-ll_ucoco_384.onnx")]
    assert all(os.path.isfile(p) for p in paths.values())
    assert resolve_weights("dwpose", str(tmp_path / "w")) == paths        # present now: no download, no error
    with pytest.raises(MissingWeightsError, match="download of facenet.pth failed") as e:
        resolve_weights("openpose", str(tmp_path / "w"), allow_download=True)
    assert e.value.__cause__ is None and e.value.__suppress_context__
