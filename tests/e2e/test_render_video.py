"""MagicPose Render Video (the streaming node, shipped as video_dance_long) on a real ComfyUI server with the
factory checkpoints, against the node-by-node workflow video_dance_retarget on the same clip.

Checked: on a 10-frame clip rendered in windows of 4 (uneven: 4 + 4 + 2), the streaming node's frames are
bit-identical to the node-by-node workflow's (both written lossless, mkv, and decoded), with the same frame rate
and the same sound; a run cancelled with /interrupt after its first window, queued again with the same settings,
renders only the missing windows (counted from the sampler's log lines) and still gives the node-by-node frames
(window 2, a multiple of frame_batch); the progress events of a run cover the whole clip in one bar (pose pass +
frames x steps + encode), rising; an mp4 of a selected range keeps the driver's fps, the range's sound and the
provenance label.
"""
from __future__ import annotations

import copy
import re
import threading
from pathlib import Path

import numpy as np
import pytest
from support.workflows import load_api, load_script, of_type, titled

from magicpose_core.media.video import iter_video_frames, probe_video, read_audio, read_metadata

pytestmark = [pytest.mark.comfy, pytest.mark.server]

FRAMES, FPS, SIZE, STEPS = 10, 8.0, 64, 2
WINDOW, BATCH = 4, 2
SAMPLED = re.compile(r"MagicPose: (\d+) frames \(\d+ at a time\)")   # magicpose_sample's line, one per window


@pytest.fixture(scope="module")
def uploaded(server, tmp_path_factory) -> dict[str, str]:
    mk = load_script("make_sample_inputs")
    files = mk.make_all(tmp_path_factory.mktemp("render_samples"), frames=FRAMES, fps=FPS, height=128, poses=1)
    # own names: the shared server's input folder must not gain a driving.mp4 before test_workflows, whose frontend
    # export would then carry Load Video's preview widget
    out = {}
    for k in ("reference", "driving"):
        own = files[k].with_name(f"render_{files[k].name}")
        files[k].rename(own)
        out[k] = server.upload_image(own)
    return out


def _common(wf: dict, factory_files, uploaded) -> dict:
    wf[titled(wf, "Checkpoint")[0]]["inputs"]["ckpt_name"] = factory_files["sd15"].name
    wf[titled(wf, "MagicPose model")[0]]["inputs"]["ckpt_name"] = factory_files["magicpose"].name
    wf[titled(wf, "Reference")[0]]["inputs"]["image"] = uploaded["reference"]
    wf[titled(wf, "Driving video")[0]]["inputs"]["file"] = uploaded["driving"]
    for nid in of_type(wf, "MagicPoseLoadReference") + of_type(wf, "MagicPoseExtractPose"):
        wf[nid]["inputs"].update(width=SIZE, height=SIZE)
    return wf


def step_by_step(factory_files, uploaded, seed: int) -> dict:
    wf = _common(copy.deepcopy(load_api("video_dance_retarget")), factory_files, uploaded)
    wf[titled(wf, "Sampler")[0]]["inputs"].update(steps=STEPS, seed=seed, frame_batch=BATCH)
    wf[titled(wf, "Output")[0]]["inputs"].update(format="mkv", watermark=False)
    return wf


def streaming(factory_files, uploaded, seed: int, prefix: str = "MagicPose/long", steps: int = STEPS,
              window: int = WINDOW, **extra) -> dict:
    wf = _common(copy.deepcopy(load_api("video_dance_long")), factory_files, uploaded)
    wf[titled(wf, "Output")[0]]["inputs"].update(steps=steps, seed=seed, frame_batch=BATCH, window=window,
                                                 format="mkv", watermark=False, filename_prefix=prefix, **extra)
    return wf


def output_file(server, result) -> Path:
    out = [i for v in result.outputs.values() for i in v.get("images", [])
           if i["filename"].endswith((".mkv", ".mp4"))]                      # the video of the Output node
    assert len(out) == 1, result.outputs
    return server.output_path(out[0])


def decoded(path: Path):
    return np.stack(list(iter_video_frames(str(path)))), read_audio(str(path)), probe_video(str(path)).fps


def log_text(server) -> str:
    return server.log_path.read_text(errors="replace")


def run_ok(server, wf, **kw):
    result = server.run(wf, timeout=600, **kw)
    assert result.status == "success", result.error_message() + server.log_tail()
    return result


@pytest.fixture(scope="module")
def node_by_node(server, factory_files, uploaded):
    """The frames, sound and rate of video_dance_retarget on the clip (seed 42, written lossless)."""
    return decoded(output_file(server, run_ok(server, step_by_step(factory_files, uploaded, seed=42))))


def test_streaming_equals_the_node_by_node_workflow(server, factory_files, uploaded, node_by_node):
    whole = node_by_node
    api = streaming(factory_files, uploaded, seed=42)
    before = len(SAMPLED.findall(log_text(server)))
    result = run_ok(server, api)
    got = decoded(output_file(server, result))
    assert [int(n) for n in SAMPLED.findall(log_text(server))[before:]] == [4, 4, 2]   # three windows, uneven
    assert got[0].shape == whole[0].shape == (FRAMES, SIZE, SIZE, 3)
    diff = np.abs(got[0].astype(int) - whole[0].astype(int)).max()
    assert np.array_equal(got[0], whole[0]), f"max pixel difference {diff}"
    assert got[2] == whole[2] == FPS                                                    # the driver's rate
    assert got[1] is not None and whole[1] is not None and got[1][1] == whole[1][1]
    assert np.array_equal(got[1][0], whole[1][0])                                       # the same sound
    node = titled(api, "Output")[0]
    ticks = [(v, m) for nid, v, m in result.progress() if nid == node]
    units = FRAMES * (STEPS + 2)
    assert ticks and all(m == units for _, m in ticks) and ticks[-1][0] == units, ticks
    assert [v for v, _ in ticks] == sorted(v for v, _ in ticks)


def test_cancel_then_resume_renders_only_the_missing_windows(server, factory_files, uploaded, node_by_node):
    api = streaming(factory_files, uploaded, seed=42, window=2, prefix="MagicPose/resumed")
    node = titled(api, "Output")[0]
    first_window = FRAMES + 2 * STEPS           # pose pass + one window of 2 frames x steps
    sent = threading.Event()

    def on_event(srv, ev):
        if ev["type"] == "progress" and ev["data"].get("node") == node and ev["data"]["value"] > first_window \
                and not sent.is_set():
            sent.set()
            srv.post_json("/interrupt", {"prompt_id": ev["data"]["prompt_id"]})

    before = len(SAMPLED.findall(log_text(server)))
    cut = server.run(api, timeout=600, on_event=on_event)
    assert sent.is_set() and cut.status == "interrupted", cut.error_message()
    sampled_first = len(SAMPLED.findall(log_text(server))) - before
    assert 1 <= sampled_first < FRAMES // 2, sampled_first
    parts = list((server.base_dir / "output" / "magicpose_render_parts").glob("*/part_*.mkv"))
    assert not [p for p in parts if ".partial" in p.name]             # only finished windows stay
    finished = len(parts)
    assert finished >= 1

    before = len(SAMPLED.findall(log_text(server)))
    resumed = run_ok(server, api)
    text = log_text(server)
    assert f"reused {finished} of {FRAMES // 2} windows" in text
    assert len(SAMPLED.findall(text)) - before == FRAMES // 2 - finished   # only the missing windows sampled
    assert not list((server.base_dir / "output" / "magicpose_render_parts").glob("*/part_*.mkv"))  # cleaned up

    got = decoded(output_file(server, resumed))                       # = an uninterrupted run = node by node
    assert np.array_equal(got[0], node_by_node[0]) and got[2] == node_by_node[2]
    assert np.array_equal(got[1][0], node_by_node[1][0])


def test_mp4_output_keeps_fps_sound_and_label(server, factory_files, uploaded):
    api = streaming(factory_files, uploaded, seed=3, steps=1, window=8, prefix="MagicPose/label")
    api[titled(api, "Output")[0]]["inputs"].update(format="mp4", watermark=True, frame_load_cap=6,
                                                   select_every_nth=1, skip_first_frames=2)
    path = output_file(server, run_ok(server, api))
    info = probe_video(str(path))
    assert path.suffix == ".mp4" and info.frames == 6 and float(info.fps) == FPS and info.has_audio
    wave, rate = read_audio(str(path))
    assert abs(wave.shape[1] / rate - 6 / FPS) < 0.05                  # the sound of the 6 kept frames
    assert "MagicPose" in read_metadata(str(path)).get("comment", "")
