"""magicpose_core.media.video: encode -> decode round trips for every format (exact frame count, size, fps within 1%,
content), audio length and pitch, odd sizes, errors, interruption, and the peak memory of a 240-frame encode."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from support import figures
from support.video_probe import fraction_close, probe

from magicpose_core.media.video import FORMATS, VIDEO_FORMATS, encode_video, video_fps

ROOT = Path(__file__).resolve().parents[2]


def moving_frames(n: int, w: int, h: int) -> torch.Tensor:
    """(n, h, w, 3) smooth frames whose brightness ramps with the frame index (so order is checkable)."""
    xx = torch.linspace(0, 1, w)[None, :].expand(h, w)
    yy = torch.linspace(0, 1, h)[:, None].expand(h, w)
    t = torch.linspace(0.1, 0.9, n)[:, None, None]
    return torch.stack([0.5 * xx + 0.5 * t, yy * 0.6 + 0.2 + 0 * t, t.expand(n, h, w)], dim=-1).clamp(0, 1)


def sine(seconds: float, rate: int, channels: int = 2, freq: float = 440.0) -> dict:
    s = torch.arange(int(round(seconds * rate))) / rate
    wave = (0.4 * torch.sin(2 * torch.pi * freq * s))[None, None].repeat(1, channels, 1)  # (1, C, S)
    return {"waveform": wave, "sample_rate": rate}


def dominant_frequency(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[spec.argmax()])


@pytest.mark.parametrize("fmt", VIDEO_FORMATS)
@pytest.mark.parametrize("fps", [24, 12.5, Fraction(30000, 1001)], ids=["24", "12.5", "29.97"])
def test_round_trip(tmp_path, fmt, fps):
    frames = moving_frames(30, 96, 64)
    info = encode_video(frames, str(tmp_path / f"v.{fmt}"), fps, fmt, crf=10)
    p = probe(info.path)
    assert p.frames == 30 == info.frames
    assert (p.width, p.height) == (96, 64) == (info.width, info.height)
    assert fraction_close(p.fps, video_fps(fps)), (p.fps, float(fps))
    # content and order: mean brightness of the blue channel follows the ramp
    blue = p.images[..., 2].reshape(30, -1).mean(axis=1) / 255
    np.testing.assert_allclose(blue, np.linspace(0.1, 0.9, 30), atol=0.03)
    err = np.abs(p.images / 255.0 - frames.numpy()).mean()
    assert err < 0.03, err


@pytest.mark.parametrize("fmt", ["mp4", "webm"])
@pytest.mark.parametrize("seconds,channels,rate", [(0.4, 2, 44100), (3.0, 1, 22050), (1.25, 2, 48000)],
                         ids=["shorter-padded", "longer-trimmed-mono", "equal"])
def test_audio_duration_and_pitch(tmp_path, fmt, seconds, channels, rate):
    frames = moving_frames(30, 64, 64)  # 1.25 s at 24 fps
    info = encode_video(frames, str(tmp_path / f"a.{fmt}"), 24, fmt, audio=sine(seconds, rate, channels))
    p = probe(info.path)
    assert p.audio is not None and p.audio_codec == ("aac" if fmt == "mp4" else "opus")
    assert abs(p.audio_seconds - 30 / 24) < 1 / 24, p.audio_seconds
    assert p.audio.shape[0] == channels
    sr = p.sample_rate
    head = p.audio[0, int(0.05 * sr):int(min(seconds, 1.2) * sr) - int(0.05 * sr)]
    assert abs(dominant_frequency(head, sr) - 440) < 5
    if seconds < 1.0:  # padded with silence after the clip
        tail = p.audio[:, int((seconds + 0.1) * sr):]
        assert np.sqrt((tail ** 2).mean()) < 0.01


def test_surround_audio_is_downmixed_to_stereo(tmp_path):
    g = torch.Generator().manual_seed(0)
    wave = torch.randn((1, 6, 44100), generator=g) * 0.1  # (1, 6, S): 5.1
    info = encode_video(moving_frames(24, 32, 32), str(tmp_path / "s.mp4"), 24, audio={"waveform": wave,
                                                                                       "sample_rate": 44100})
    p = probe(info.path)
    assert p.audio.shape[0] == 2 and abs(p.audio_seconds - 1.0) < 1 / 24


def test_audio_batch_and_tuple_forms(tmp_path, caplog):
    wave = sine(1.0, 16000)["waveform"].repeat(2, 1, 1)  # (2, C, S): a batch of two clips
    with caplog.at_level(logging.WARNING, logger="MagicPose"):
        info = encode_video(moving_frames(12, 32, 32), str(tmp_path / "b.mp4"), 12, audio=(wave, 16000))
    assert "using the first" in caplog.text
    assert abs(probe(info.path).audio_seconds - 1.0) < 1 / 12


@pytest.mark.parametrize("fmt", ["gif", "webp"])
def test_audio_on_image_formats_is_logged_not_written(tmp_path, caplog, fmt):
    with caplog.at_level(logging.WARNING, logger="MagicPose"):
        info = encode_video(moving_frames(6, 32, 32), str(tmp_path / f"s.{fmt}"), 8, fmt, audio=sine(1, 8000))
    assert f"{fmt} cannot carry audio" in caplog.text
    assert info.audio_seconds is None and probe(info.path).audio is None


@pytest.mark.parametrize("fmt", VIDEO_FORMATS)
@pytest.mark.parametrize("size", [(65, 33), (1, 1), (2, 7)], ids=["65x33", "1x1", "2x7"])
def test_odd_sizes(tmp_path, fmt, size):
    w, h = size
    frames = torch.rand(5, h, w, 3)
    info = encode_video(frames, str(tmp_path / f"o.{fmt}"), 10, fmt, crf=0)
    p = probe(info.path)
    even = FORMATS[fmt].even_size
    expected = (w + w % 2, h + h % 2) if even else (w, h)
    assert (p.width, p.height) == expected == (info.width, info.height)
    assert info.padded == (even and expected != (w, h))
    assert p.frames == 5
    if even and w > 1 and h > 1 and expected != (w, h):  # the padding repeats the last row/column
        img = p.images[0].astype(int)
        if w % 2:
            assert np.abs(img[:, -1] - img[:, -2]).mean() < 12
        if h % 2:
            assert np.abs(img[-1] - img[-2]).mean() < 12


def test_iterator_input_and_metadata(tmp_path):
    frames = [np.full((16, 24, 3), 10 * i, np.uint8) for i in range(9)]
    info = encode_video(iter(frames), str(tmp_path / "it.mp4"), 9, metadata={"prompt": json.dumps({"1": {}})})
    p = probe(info.path)
    assert p.frames == 9 and (p.width, p.height) == (24, 16)
    assert json.loads(p.metadata["prompt"]) == {"1": {}}
    np.testing.assert_allclose(p.images.reshape(9, -1).mean(axis=1), [10 * i for i in range(9)], atol=3)


def test_progress_is_reported_per_chunk(tmp_path):
    seen = []
    encode_video(moving_frames(40, 16, 16), str(tmp_path / "p.webm"), 10, "webm", chunk=16,
                 on_progress=lambda done, total: seen.append((done, total)))
    assert seen == [(16, 40), (32, 40), (40, 40)]


def test_interruption_removes_the_partial_file(tmp_path):
    class Stop(BaseException):
        pass

    def stop(done, total):
        raise Stop

    path = tmp_path / "x.mp4"
    with pytest.raises(Stop):
        encode_video(moving_frames(40, 16, 16), str(path), 10, on_progress=stop, chunk=8)
    assert not path.exists()


@pytest.mark.parametrize("bad,match", [
    (torch.zeros(0, 16, 16, 3), "no frames"),
    (iter([]), "no frames"),
    (torch.rand(2, 16, 16, 4), "4 channels.*alpha"),
    (torch.rand(2, 16, 16, 1), "1 channels"),
    (iter([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 10, 3), np.uint8)]), "same size"),
    (iter([np.zeros((8, 8, 3), np.float32)]), "uint8"),
])
def test_bad_frames_raise_clear_errors(tmp_path, bad, match):
    with pytest.raises(ValueError, match=match):
        encode_video(bad, str(tmp_path / "e.mp4"), 10)
    assert not (tmp_path / "e.mp4").exists()


def test_bad_parameters_raise_clear_errors(tmp_path):
    frames = torch.rand(2, 8, 8, 3)
    with pytest.raises(ValueError, match="not one of"):
        encode_video(frames, str(tmp_path / "e.avi"), 10, "avi")
    with pytest.raises(ValueError, match="crf 52 is out of range for mp4"):
        encode_video(frames, str(tmp_path / "e.mp4"), 10, "mp4", crf=52)
    with pytest.raises(ValueError, match="fps"):
        encode_video(frames, str(tmp_path / "e.mp4"), 0)
    with pytest.raises(ValueError, match="at most 50 fps for gif"):
        encode_video(frames, str(tmp_path / "e.gif"), 60, "gif")
    with pytest.raises(ValueError, match="waveform"):
        encode_video(frames, str(tmp_path / "e.mp4"), 10, audio={"waveform": torch.zeros(2), "sample_rate": 8000})


def test_video_fps_fractions():
    assert video_fps(24) == Fraction(24)
    assert video_fps(29.97) == Fraction(2997, 100)
    assert video_fps(30000 / 1001) == Fraction(30000, 1001)
    assert video_fps(Fraction(24000, 1001)) == Fraction(24000, 1001)


def test_encoding_240_frames_peak_memory_within_1_3x_of_the_batch(tmp_path):
    """Benchmark (memory, measured in a fresh process by scripts/bench_video.py; time is printed, not asserted)."""
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_video.py"), "--frames", "240", "--size", "512",
                        "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    print("\n" + r.stdout)
    result = json.loads(out.read_text())
    figures.record("encode 240 frames 512x512 mp4: extra RSS MiB (batch 720 MiB)",
                   round(result["extra_rss_sampled_mib"], 1))
    figures.record("encode 240 frames 512x512 mp4: peak / batch", round(result["ratio_sampled"], 3))
    figures.record("encode 240 frames 512x512 mp4: tracemalloc peak MiB", round(result["tracemalloc_peak_mib"], 1))
    assert result["frames_written"] == 240
    assert result["ratio_sampled"] <= 1.3, result
    if result["ratio_maxrss"] is not None:
        assert result["ratio_maxrss"] <= 1.3, result
