"""Provenance in the nodes, on real ComfyUI: Frames to Video marks every frame by default (mp4 and the gif
path's VIDEO output), writes the label next to core's prompt/workflow tags, has a working off switch and keeps
working without the RivaGAN files (one message); Watermark Image and Check Provenance round trip."""
from __future__ import annotations

import importlib
import json
import logging
import sys
import warnings

import numpy as np
import pytest
import torch
from support.video_probe import probe

pytestmark = pytest.mark.comfy


@pytest.fixture(scope="module")
def mods(pack):
    names = ("frames_to_video", "watermark_image", "check_provenance")
    return [importlib.import_module(f"magicpose_pack.nodes.{n}") for n in names]


@pytest.fixture(scope="module")
def core(pack):
    return (importlib.import_module("magicpose_pack.magicpose_core.provenance.check"),
            importlib.import_module("magicpose_pack.magicpose_core.provenance.watermark"))


def photo_frames(n: int = 3, size: int = 256) -> torch.Tensor:
    """IMAGE (n, size, size, 3): a slow pan over a real photo."""
    import cv2
    import skimage.data

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        big = cv2.resize(skimage.data.astronaut(), (size * 2, size * 2), interpolation=cv2.INTER_AREA)
    crops = [cv2.resize(big[10 * i:10 * i + size * 3 // 2, 14 * i:14 * i + size * 3 // 2], (size, size),
                        interpolation=cv2.INTER_AREA) for i in range(n)]
    return torch.from_numpy(np.stack(crops)).float() / 255.0


def saved_path(out) -> str:
    import os

    import folder_paths

    item = out.ui.as_dict()["images"][0]
    base = folder_paths.get_output_directory() if item["type"] == "output" else folder_paths.get_temp_directory()
    return os.path.join(base, item["subfolder"], item["filename"])


def run(node, images, format="mp4", **kw):
    with torch.inference_mode():
        return node.execute(images, 12.0, format, 19, "MagicPose/provenance", True, **kw)


def test_frames_to_video_marks_by_default_and_labels_next_to_core_metadata(mods, core):
    from comfy_api.latest import io

    f2v, _, _ = mods
    prompt = {"1": {"class_type": "MagicPoseFramesToVideo", "inputs": {}}}
    clone = f2v.FramesToVideo.PREPARE_CLASS_CLONE({"hidden_inputs": {
        io.Hidden.prompt: prompt, io.Hidden.extra_pnginfo: {"workflow": {"nodes": []}}}})
    out = run(clone, photo_frames())
    path = saved_path(out)
    meta = probe(path).metadata
    assert json.loads(meta["prompt"]) == prompt and json.loads(meta["workflow"]) == {"nodes": []}  # core's keys
    assert meta["comment"].startswith("AI-generated with MagicPose ")
    report = core[0].check_file(path)
    assert report.present and report.label == meta["comment"], report.text()


def test_switch_off_writes_unmarked_frames_but_keeps_the_label(mods, core):
    out = run(mods[0].FramesToVideo, photo_frames(), watermark=False)
    report = core[0].check_file(saved_path(out))
    assert not report.present and report.label.startswith("AI-generated with MagicPose")


def test_gif_file_and_its_video_output_are_marked(mods, core):
    out = run(mods[0].FramesToVideo, photo_frames(2), format="gif")
    assert core[0].check_file(saved_path(out)).present
    video = out.result[0]  # built from the encoded frames (VideoFromComponents)
    present, accuracy, text = mods[2].CheckProvenance.execute(video=video).result
    assert present and accuracy >= 28 / 32, text


def test_watermark_image_then_check_provenance(mods):
    _, wimg, chk = mods
    images = photo_frames(2)
    marked = wimg.WatermarkImage.execute(images).result[0]
    assert marked.shape == images.shape and marked.dtype == torch.float32
    assert 0 < (marked - images).abs().mean() < 4 / 255  # changed, invisibly
    out = chk.CheckProvenance.execute(images=marked)
    present, accuracy, text = out.result
    assert present and accuracy >= 28 / 32 and "decoded payload: MagicPose" in text
    assert out.ui.as_dict()["text"] == (text,)
    present, _, text = chk.CheckProvenance.execute(images=images).result
    assert not present and "not found" in text
    with pytest.raises(ValueError, match="connect a video"):
        chk.CheckProvenance.execute()


def test_check_provenance_reads_a_video_file_and_its_label(mods):
    f2v, _, chk = mods
    video = run(f2v.FramesToVideo, photo_frames(), format="webm").result[0]
    present, accuracy, text = chk.CheckProvenance.execute(video=video).result
    assert present and "label: AI-generated with MagicPose" in text and accuracy >= 28 / 32


def test_missing_model_files_frames_to_video_still_works_and_says_so_once(mods, core, monkeypatch, caplog, tmp_path):
    wm = core[1]
    monkeypatch.setitem(sys.modules, "imwatermark", None)  # as if invisible-watermark were not installed
    monkeypatch.setattr(wm, "BUNDLED_DIR", str(tmp_path))  # ... and the pack's rivagan/ folder were empty
    monkeypatch.setattr(wm, "_warned", False)
    wm._sessions.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="MagicPose"):
            for _ in range(2):
                out = run(mods[0].FramesToVideo, photo_frames(2))
                report = core[0].check_file(saved_path(out))
                assert report.watermark is None and "--no-deps" in report.error
                assert report.label.startswith("AI-generated with MagicPose")
        warned = [r for r in caplog.records if "WITHOUT the invisible watermark" in r.getMessage()]
        assert len(warned) == 1
        with pytest.raises(RuntimeError, match="invisible-watermark"):
            mods[1].WatermarkImage.execute(photo_frames(1))
    finally:
        wm._sessions.cache_clear()
