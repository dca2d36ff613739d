"""Detector backends without real weights: DWPose pre/post-processing through fake ONNX models with the real
signatures (known keypoints come out), OpenPose through controlnet_aux with random weights (plumbing), and the
missing-weights messages."""
from __future__ import annotations

import os
import sys
import time

import numpy as np
import pytest
from support import figures
from support.hub_standin import StandInHub, closed_port_url, silent_port
from support.pose_fakes import dwpose_folder, openpose_folder, yolox_output

from magicpose_core.pose import dwpose
from magicpose_core.pose.detect import (
    DetectorChoice,
    MissingWeightsError,
    PoseDetector,
    choose_detector,
    create_detector,
    resolve_weights,
)

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

W, H = 400, 600
RATIO = min(640 / H, 640 / W)


@pytest.fixture
def standin_hub(tmp_path):
    """A stand-in hub serving fake DWPose ONNX files with the real signatures (one person box)."""
    src = dwpose_folder(tmp_path / "hub-files", [(100.0, 120.0, 260.0, 380.0, 0.9, 0)], RATIO)
    files = {("yzd-v/DWPose", f): src / f for f in ("yolox_l.onnx", "dw-ll_ucoco_384.onnx")}
    with StandInHub(files) as hub:
        yield hub


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
    assert "yolox_l.onnx" in msg and "dw-ll_ucoco_384.onnx" in msg and os.path.join(tmp_path.name, "dwpose") in msg
    assert str(tmp_path) not in msg                                         # no machine path
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


def test_download_only_when_allowed_into_the_folder_and_without_hub_tracebacks(tmp_path, monkeypatch, standin_hub):
    """The real huggingface_hub download code against the stand-in hub on 127.0.0.1 (HF_ENDPOINT)."""
    hub = standin_hub
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(MissingWeightsError, match="allow_download"):
        resolve_weights("dwpose", str(tmp_path / "w"))
    assert hub.requests == []                                              # not allowed: the hub is not asked
    paths = resolve_weights("dwpose", str(tmp_path / "w"), allow_download=True)
    assert hub.downloads("yolox_l.onnx") == 1 and hub.downloads("dw-ll_ucoco_384.onnx") == 1
    for f, p in paths.items():
        assert open(p, "rb").read() == (hub.files[("yzd-v/DWPose", f)]).read_bytes()
    n = len(hub.requests)
    assert resolve_weights("dwpose", str(tmp_path / "w"), allow_download=True) == paths   # present: no request
    assert len(hub.requests) == n
    with pytest.raises(MissingWeightsError, match="downloading them failed.*facenet.pth|facenet.pth.*failed") as e:
        resolve_weights("openpose", str(tmp_path / "w"), allow_download=True)  # the stand-in holds no CMU weights
    assert e.value.__cause__ is None and e.value.__suppress_context__
    assert not any(name.endswith(".pth") for name in os.listdir(tmp_path / "w"))   # nothing partial left


# --- auto ------------------------------------------------------------------------------------------------------

def test_auto_uses_dwpose_files_found_in_any_searched_folder_without_asking_the_hub(tmp_path, monkeypatch,
                                                                                     standin_hub):
    monkeypatch.setenv("HF_ENDPOINT", standin_hub.url)
    found = dwpose_folder(tmp_path / "aux" / "yzd-v" / "DWPose", [], RATIO)
    (tmp_path / "ours").mkdir()
    (tmp_path / "ours" / "yolox_l.onnx").write_bytes(b"half a pair is not a pair")
    folders = [(str(tmp_path / "ours"), "models/magicpose/dwpose"), (str(found), "controlnet_aux ckpts")]
    choice = choose_detector(folders, str(tmp_path / "dl"))
    assert choice == DetectorChoice("dwpose", str(found), "DWPose (weights found in controlnet_aux ckpts)")
    assert standin_hub.requests == [] and not (tmp_path / "dl").exists()
    det = create_detector(choice.detector, weights_dir=choice.weights_dir)
    assert det.name == "dwpose"


def test_auto_downloads_dwpose_once_through_huggingface_hub(tmp_path, monkeypatch, standin_hub):
    monkeypatch.setenv("HF_ENDPOINT", standin_hub.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    seen = []
    t0 = time.perf_counter()
    choice = choose_detector([(str(tmp_path / "none"), "models/magicpose/dwpose")], str(tmp_path / "dl"),
                             progress=lambda done, total: seen.append((done, total)))
    figures.record("auto detector: DWPose fetched from the stand-in hub (s)", round(time.perf_counter() - t0, 2))
    assert choice == DetectorChoice("dwpose", str(tmp_path / "dl"), "DWPose (downloaded from yzd-v/DWPose)")
    assert standin_hub.downloads("yolox_l.onnx") == 1 and standin_hub.downloads("dw-ll_ucoco_384.onnx") == 1
    sizes = {(tmp_path / "dl" / f).stat().st_size for f in ("yolox_l.onnx", "dw-ll_ucoco_384.onnx")}
    assert {t for _, t in seen} == sizes and seen[-1][0] == seen[-1][1]   # progress reached each file's size
    frame = create_detector("dwpose", weights_dir=choice.weights_dir)(_dot_image([(180, 250)]))
    assert len(frame.people) == 1
    again = choose_detector([(str(tmp_path / "dl"), "models/magicpose/dwpose")], str(tmp_path / "dl"))
    assert again.note == "DWPose (weights found in models/magicpose/dwpose)"
    assert standin_hub.downloads("yolox_l.onnx") == 1


def test_auto_finds_dwpose_in_the_hugging_face_cache(tmp_path, monkeypatch, standin_hub):
    from huggingface_hub import constants, hf_hub_download

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    for f in ("yolox_l.onnx", "dw-ll_ucoco_384.onnx"):
        hf_hub_download("yzd-v/DWPose", f, cache_dir=str(tmp_path / "hf"), endpoint=standin_hub.url)
    n = len(standin_hub.requests)
    choice = choose_detector([(str(tmp_path / "none"), "models/magicpose/dwpose")], str(tmp_path / "dl"))
    assert choice.detector == "dwpose" and choice.note == "DWPose (weights found in the Hugging Face cache)"
    assert choice.weights_dir.startswith(str(tmp_path / "hf")) and len(standin_hub.requests) == n


def _offline_case(tmp_path, monkeypatch, endpoint: str | None, offline: bool, timeout: float | None = None):
    if endpoint:
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    t0 = time.perf_counter()
    choice = choose_detector([(str(tmp_path / "none"), "models/magicpose/dwpose")], str(tmp_path / "dl"),
                             timeout=timeout)
    return choice, time.perf_counter() - t0


def test_auto_falls_through_to_mediapipe_within_seconds_when_offline(tmp_path, monkeypatch):
    pytest.importorskip("mediapipe")
    choice, s = _offline_case(tmp_path, monkeypatch, None, offline=True)
    figures.record("auto detector: fall-through with HF_HUB_OFFLINE=1 (s)", round(s, 2))
    assert choice.detector == "mediapipe" and "HF_HUB_OFFLINE" in choice.note
    choice, s = _offline_case(tmp_path, monkeypatch, closed_port_url(), offline=False)
    figures.record("auto detector: fall-through, endpoint refuses connections (s)", round(s, 2))
    assert choice.detector == "mediapipe" and "not reachable" in choice.note and s < 20  # huggingface_hub: ~23 s
    sock, url = silent_port()
    try:
        choice, s = _offline_case(tmp_path, monkeypatch, url, offline=False, timeout=2.0)
    finally:
        sock.close()
    figures.record("auto detector: fall-through, endpoint never answers, 2 s probe (s)", round(s, 2))
    assert choice.detector == "mediapipe" and s < 20
    assert not (tmp_path / "dl" / "yolox_l.onnx").exists()


def test_auto_without_dwpose_or_mediapipe_names_both_fixes(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mediapipe", None)        # as if not installed (find_spec -> None)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingWeightsError) as e:
        choose_detector([(str(tmp_path / "none"), "models/magicpose/dwpose")], str(tmp_path / "dl"))
    msg = str(e.value)
    for part in ("yolox_l.onnx", "dw-ll_ucoco_384.onnx", "yzd-v/DWPose", "models/magicpose/dwpose", "HF_HUB_OFFLINE",
                 "mediapipe==0.10.21", "numpy<2", "mediapipe is not installed"):
        assert part in msg, (part, msg)
    assert str(tmp_path) not in msg                             # labels, not machine paths
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    dwpose_folder(tmp_path / "found", [], RATIO)
    with pytest.raises(MissingWeightsError, match="pip install onnxruntime"):
        choose_detector([(str(tmp_path / "found"), "models/magicpose/dwpose")], str(tmp_path / "dl"))
