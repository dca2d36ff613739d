"""MagicPose Select Frames in-process on real ComfyUI: a file-backed core VIDEO (decoded selectively), an in-memory
VIDEO (core VideoFromComponents), an IMAGE batch; frames, fps and audio follow the selection; bounds and errors."""
from __future__ import annotations

import importlib
from fractions import Fraction

import numpy as np
import pytest
import torch

from magicpose_core.media.video import encode_video

pytestmark = pytest.mark.comfy

FPS, N, RATE = 12, 24, 16000


@pytest.fixture(scope="module")
def mod(pack):
    return importlib.import_module("magicpose_pack.nodes.select_frames")


@pytest.fixture(scope="module")
def api(pack):
    return importlib.import_module("magicpose_pack.nodes._api")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> str:
    """24 frames at 12 fps, grey level 10 x index, with 2 s of stereo sound whose left channel is a ramp."""
    path = tmp_path_factory.mktemp("select") / "clip.mp4"
    t = np.arange(2 * RATE) / RATE
    wave = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)]).astype(np.float32) * 0.5
    encode_video((np.full((32, 48, 3), 10 * i, np.uint8) for i in range(N)), str(path), FPS, "mp4", 0,
                 audio=(wave, RATE))
    return str(path)


def levels(images: torch.Tensor) -> list[int]:
    return [int(round(float(f.mean()) * 255 / 10)) for f in images]


def test_file_video_selection_fps_and_audio(mod, api, clip):
    video = api.InputImpl.VideoFromFile(clip)
    out = mod.SelectFrames.execute(frame_load_cap=5, skip_first_frames=3, select_every_nth=2, force_rate=0.0,
                                   video=video)
    images, audio, fps, count = out.result
    assert levels(images) == [3, 5, 7, 9, 11] and count == 5
    assert images.shape == (5, 32, 48, 3) and images.dtype == torch.float32
    assert fps == 6.0                                               # 12 fps / every 2nd
    assert audio["sample_rate"] == RATE
    assert audio["waveform"].shape == (1, 2, round(5 * 2 / FPS * RATE))   # 10 source frames of sound
    whole = mod.SelectFrames.execute(0, 0, 1, 0.0, video=video).result
    assert levels(whole[0]) == list(range(N)) and whole[2] == FPS and whole[3] == N


def test_forced_rate(mod, api, clip):
    images, audio, fps, count = mod.SelectFrames.execute(0, 0, 1, 6.0, video=api.InputImpl.VideoFromFile(clip)).result
    assert levels(images) == list(range(0, N, 2)) and fps == 6.0 and count == 12
    assert abs(audio["waveform"].shape[-1] - 2 * RATE) <= 1


def test_in_memory_video_and_images(mod, api):
    frames = torch.arange(10, dtype=torch.float32)[:, None, None, None].expand(10, 4, 4, 3) / 255 * 10
    sound = {"waveform": torch.arange(1000, dtype=torch.float32)[None, None].repeat(1, 2, 1), "sample_rate": 100}
    video = api.InputImpl.VideoFromComponents(api.Types.VideoComponents(images=frames, frame_rate=Fraction(10),
                                                                        audio=sound))
    images, audio, fps, count = mod.SelectFrames.execute(3, 4, 2, 0.0, video=video).result
    assert levels(images) == [4, 6, 8] and fps == 5.0 and count == 3
    assert audio["waveform"][0, 0, 0] == 40 and audio["waveform"].shape[-1] == 60   # 0.4 s .. 1.0 s at 100 Hz
    images, audio, fps, count = mod.SelectFrames.execute(4, 2, 1, 0.0, images=frames, fps=10.0).result
    assert levels(images) == [2, 3, 4, 5] and audio is None and fps == 10.0
    assert images.data_ptr() == frames[2:].data_ptr()               # a contiguous pick is a view, not a copy


def test_errors(mod, api, clip):
    video = api.InputImpl.VideoFromFile(clip)
    with pytest.raises(ValueError, match="keeps no frame: the source has 24 frames at 12 fps"):
        mod.SelectFrames.execute(0, 24, 1, 0.0, video=video)
    with pytest.raises(ValueError, match="connect exactly one"):
        mod.SelectFrames.execute(0, 0, 1, 0.0)
    with pytest.raises(ValueError, match="select_every_nth must be between 1"):
        mod.SelectFrames.execute(0, 0, 0, 0.0, video=video)
