"""The plain-install path, as a user meets it: ComfyUI's requirements plus `pip install -r requirements.txt` and
nothing else (numpy 2, no mediapipe, whatever versions pip picks; scripts/env_plain.sh builds that venv under
.cache/plain-venv, rebuilding only when a requirements file changes), a real ComfyUI server started from it, and
a shipped API workflow run end to end on the factory's tiny weights with the default `auto` pose detector.

DWPose's two ONNX files come through the real huggingface_hub download code from a stand-in hub on 127.0.0.1
(HF_ENDPOINT) that serves small ONNX files with the real models' input/output signatures (support/pose_fakes.py);
they are fetched once, into models/magicpose/dwpose/, and found there on the next run. The node shows which
detector ran (progress text on the node, and the log). Provenance needs nothing beyond requirements.txt either:
Frames to Video on that server writes a video that the check CLI (run with the plain venv's Python) finds
watermarked and labelled, with the RivaGAN files the pack ships and no invisible-watermark package installed.
"""
from __future__ import annotations

import copy
import os
import subprocess
import time
from pathlib import Path

import pytest
from support import figures
from support.hub_standin import StandInHub
from support.pose_fakes import dwpose_folder
from support.workflows import load_api, load_script, of_type, titled

pytestmark = [pytest.mark.comfy, pytest.mark.server, pytest.mark.slow, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
DWPOSE_FILES = ("yolox_l.onnx", "dw-ll_ucoco_384.onnx")


@pytest.fixture(scope="module")
def plain_python(comfy_root) -> str:
    """The plain-install venv's Python (built or refreshed by scripts/env_plain.sh; seconds when up to date)."""
    t0 = time.perf_counter()
    r = subprocess.run([str(ROOT / "scripts" / "env_plain.sh")], capture_output=True, text=True, timeout=1500,
                       env={**os.environ, "COMFYUI_PATH": str(comfy_root)})
    assert r.returncode == 0, f"scripts/env_plain.sh failed:\n{r.stderr[-4000:]}"
    figures.record("plain install: scripts/env_plain.sh (s, a rebuild only when requirements changed)",
                   round(time.perf_counter() - t0, 1))
    for line in r.stderr.splitlines():
        if line.startswith("[env-plain] ") and " " in line[12:] and "building" not in line:
            figures.record("plain install: " + line[12:].split(" ", 1)[0], line[12:].split(" ", 1)[1])
    return r.stdout.strip().splitlines()[-1]


def test_plain_env_is_what_a_user_gets(plain_python):
    code = ("import importlib.util, numpy; "
            "print(numpy.__version__, importlib.util.find_spec('mediapipe') is None, "
            "importlib.util.find_spec('controlnet_aux') is None, importlib.util.find_spec('diffusers') is None, "
            "importlib.util.find_spec('imwatermark') is None)")
    out = subprocess.run([plain_python, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    version, no_mp, no_aux, no_diffusers, no_imwatermark = out.split()
    assert int(version.split(".")[0]) >= 2 and no_mp == "True" and no_aux == "True" and no_diffusers == "True", out
    assert no_imwatermark == "True", out                 # the watermark must work from the files the pack ships


def test_shipped_workflow_runs_after_a_plain_install_with_dwpose_from_the_hub(plain_python, comfy_root,
                                                                             factory_files, tmp_path_factory):
    from support.server import ComfyServer

    t_test = time.perf_counter()
    tmp = tmp_path_factory.mktemp("plain")
    src = dwpose_folder(tmp / "hub-files", [], 1.0)   # no person boxes: DWPose then uses the whole image
    base = tmp / "base"
    with StandInHub({("yzd-v/DWPose", f): src / f for f in DWPOSE_FILES}) as hub:
        srv = ComfyServer(comfy_root, base, ROOT / ".cache" / "test-logs" / f"server-plain-{os.getpid()}.log",
                          python=plain_python,
                          env={"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp / "hf-home")})
        srv.prepare_base({"checkpoints": [factory_files["sd15"]], "magicpose": [factory_files["magicpose"]]})
        t0 = time.perf_counter()
        srv.start()
        figures.record("plain install: ComfyUI server start (s)", round(time.perf_counter() - t0, 1))
        try:
            info = srv.get_json("/object_info/MagicPoseExtractPose")["MagicPoseExtractPose"]
            detector = info["input"]["required"]["detector"]
            assert detector[1]["default"] == "auto" and detector[1]["options"][0] == "auto", detector
            log = srv.log_path.read_text(errors="replace")
            assert "IMPORT FAILED" not in log, srv.log_tail()

            samples = load_script("make_sample_inputs").make_all(tmp / "samples", frames=2, fps=8.0, height=128,
                                                                 poses=2)
            wf = copy.deepcopy(load_api("image_pose_retarget"))
            wf[titled(wf, "Checkpoint")[0]]["inputs"]["ckpt_name"] = factory_files["sd15"].name
            wf[titled(wf, "MagicPose model")[0]]["inputs"]["ckpt_name"] = factory_files["magicpose"].name
            wf[titled(wf, "Reference")[0]]["inputs"]["image"] = srv.upload_image(samples["reference"])
            wf[titled(wf, "Driving poses")[0]]["inputs"]["image"] = srv.upload_image(samples["poses"])
            for nid in of_type(wf, "MagicPoseLoadReference") + of_type(wf, "MagicPoseExtractPose"):
                assert wf[nid]["inputs"]["detector"] == "auto", nid         # the shipped default
                wf[nid]["inputs"].update(width=64, height=64)
            wf[titled(wf, "Sampler")[0]]["inputs"].update(steps=2)

            t0 = time.perf_counter()
            result = srv.run(wf, timeout=900)
            figures.record("plain install: image_pose_retarget, 64 px, 2 steps, DWPose download included (s)",
                           round(time.perf_counter() - t0, 1))
            assert result.status == "success", f"{result.error_message()}\n{srv.log_tail()}"
            assert result.outputs, result.history
            for f in DWPOSE_FILES:                                     # fetched once for both nodes ...
                assert hub.downloads(f) == 1, hub.requests
                assert (base / "models" / "magicpose" / "dwpose" / f).read_bytes() == (src / f).read_bytes()
            texts = [e["text"] for e in result.events if e["type"] == "progress_text"]
            extract = of_type(wf, "MagicPoseExtractPose")[0]
            assert any(e["node"] == extract and "DWPose" in e["text"] for e in result.events
                       if e["type"] == "progress_text"), texts
            assert "pose detector: DWPose (downloaded from yzd-v/DWPose) [auto]" in srv.log_path.read_text()

            wf[extract]["inputs"]["fps"] = 25.0                           # Extract Pose runs (and detects) again
            result = srv.run(wf, timeout=900)
            assert result.status == "success", result.error_message()
            assert all(hub.downloads(f) == 1 for f in DWPOSE_FILES), hub.requests   # ... and found on disk after

            _frames_to_video_marks_and_labels(srv, plain_python, tmp)
        finally:
            srv.stop()
    figures.record("plain install: end-to-end test incl. server start/stop (s)", round(time.perf_counter() - t_test, 1))


def _frames_to_video_marks_and_labels(srv, plain_python: str, tmp: Path) -> None:
    """Frames to Video with its defaults (mp4, crf 19, watermark on) on a real photo (RivaGAN needs natural image
    content: the tiny random model's frames carry the mark too, but it cannot be read back from noise)."""
    import cv2
    from PIL import Image
    from support.pose_data import astronaut

    Image.fromarray(cv2.resize(astronaut(), (256, 256), interpolation=cv2.INTER_AREA)).save(tmp / "photo.png")
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": srv.upload_image(tmp / "photo.png")}},
              "2": {"class_type": "MagicPoseFramesToVideo",
                    "inputs": {"images": ["1", 0], "fps": 8.0, "format": "mp4", "crf": 19,
                               "filename_prefix": "plain/marked", "save_output": True}}}
    result = srv.run(prompt, timeout=300)
    assert result.status == "success", f"{result.error_message()}\n{srv.log_tail()}"
    video = srv.output_path(result.outputs["2"]["images"][0])
    r = subprocess.run([plain_python, "-m", "magicpose_core.provenance", "check", str(video)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr                        # 0: every file carries the mark
    assert "watermark: PRESENT" in r.stdout and "decoded payload: MagicPose" in r.stdout, r.stdout
    assert "label: AI-generated with MagicPose" in r.stdout, r.stdout
    assert "WITHOUT the invisible watermark" not in srv.log_path.read_text(errors="replace")
