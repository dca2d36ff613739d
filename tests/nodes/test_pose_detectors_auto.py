"""The `auto` detector in the glue: where it looks for DWPose (our model folder, comfyui_controlnet_aux's
checkpoint folders: config.yaml's annotator_ckpts_path, its default ckpts/, $AUX_ANNOTATOR_CKPTS_PATH), which one
wins, and that each run names the detector in the log. Fake ONNX files with the real signatures; no hub."""
from __future__ import annotations

import logging

import pytest
import torch
from support.pose_fakes import dwpose_folder

pytestmark = pytest.mark.comfy

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


@pytest.fixture
def pd(pack, tmp_path, monkeypatch):
    import folder_paths

    mod = pack.nodes.pose_detectors
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "custom_nodes", ([str(tmp_path / "custom_nodes")], set()))
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "magicpose", ([str(tmp_path / "models" / "magicpose")],
                                                                           set()))
    monkeypatch.delenv("AUX_ANNOTATOR_CKPTS_PATH", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    mod.clear_cache()
    yield mod
    mod.clear_cache()


def test_auto_finds_dwpose_where_comfyui_controlnet_aux_keeps_it(pd, tmp_path, monkeypatch):
    aux = tmp_path / "custom_nodes" / "comfyui_controlnet_aux"
    dwpose_folder(aux / "ckpts" / "yzd-v" / "DWPose", [], 1.0)
    choice = pd.resolve_auto()
    assert choice.detector == "dwpose" and choice.weights_dir == str(aux / "ckpts" / "yzd-v" / "DWPose")
    assert "comfyui_controlnet_aux" in choice.note and str(tmp_path) not in choice.note

    (aux / "config.yaml").write_text("annotator_ckpts_path: ./elsewhere\nUSE_SYMLINKS: False\n")
    dwpose_folder(aux / "elsewhere" / "yzd-v" / "DWPose", [], 1.0)
    pd.clear_cache()
    assert pd.resolve_auto().weights_dir == str(aux / "elsewhere" / "yzd-v" / "DWPose")   # the configured folder first

    monkeypatch.setenv("AUX_ANNOTATOR_CKPTS_PATH", str(tmp_path / "env-ckpts"))
    dwpose_folder(tmp_path / "env-ckpts" / "yzd-v" / "DWPose", [], 1.0)
    pd.clear_cache()
    assert pd.resolve_auto().weights_dir == str(tmp_path / "env-ckpts" / "yzd-v" / "DWPose")

    ours = dwpose_folder(tmp_path / "models" / "magicpose" / "dwpose", [], 1.0)
    pd.clear_cache()
    choice = pd.resolve_auto()                                               # our own folder wins over all
    assert choice.weights_dir == str(ours) and choice.note == "DWPose (weights found in models/magicpose/dwpose)"


def test_each_run_names_the_detector_and_auto_caches_its_choice(pd, tmp_path, caplog):
    dwpose_folder(tmp_path / "models" / "magicpose" / "dwpose", [], 1.0)
    images = torch.zeros(2, 48, 32, 3)
    images[:, 20:23, 10:13, 0] = 1.0                                         # one red dot: the fake model's keypoint
    with caplog.at_level(logging.INFO, logger="MagicPose"):
        frames = pd.detect_frames(images, "auto")
    assert len(frames) == 2 and all(len(f.people) == 1 for f in frames)
    assert "pose detector: DWPose (weights found in models/magicpose/dwpose) [auto]" in caplog.text
    assert pd.get_detector("auto") is pd.get_detector("dwpose")               # one instance for both names
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="MagicPose"):
        pd.detect_frames(images[:1], "dwpose")
    assert "pose detector: dwpose" in caplog.text
    with pytest.raises(ValueError, match="unknown pose detector 'yolo'.*auto"):
        pd.get_detector("yolo")


def test_extract_pose_defaults_to_auto(pack):
    schema = pack.nodes.extract_pose.ExtractPose.define_schema()
    detector = next(i for i in schema.inputs if i.id == "detector")
    assert detector.default == "auto" and detector.options[0] == "auto"
