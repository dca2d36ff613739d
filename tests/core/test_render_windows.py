"""The framework-free parts of MagicPose Render Video: the window plan and its bounds, the store of finished
windows (resume), the resume key, decoding scaled at decode time (a 4K driver is never held at 4K), the
variable-frame-rate check, and pose processing over the whole track so that a gap crossing a window border is
bridged as in one batch."""
from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
from support.pose_data import standing_person

from magicpose_core.media.frame_selection import FrameSelection
from magicpose_core.media.video import encode_video, read_frames
from magicpose_core.media.video_stream import decode_size, rate_variation, stream_frames
from magicpose_core.media.windows import MAX_WINDOW, WindowStore, check_window, plan_windows, render_key
from magicpose_core.pose.keypoints import PoseFrame
from magicpose_core.pose.pipeline import ExtractSettings, process_sequence


def test_windows_cover_the_clip_unevenly_and_short_clips_are_one_window():
    assert plan_windows(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert plan_windows(3, 16) == [(0, 3)]                 # clip shorter than a window / window larger than the clip
    assert plan_windows(16, 16) == [(0, 16)]
    assert plan_windows(1, 1) == [(0, 1)]


@pytest.mark.parametrize("bad", [0, -3, MAX_WINDOW + 1, 10 ** 9, True, 2.5])
def test_window_out_of_bounds_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="window must be"):
        check_window(bad)


def test_a_clip_with_no_frames_names_the_selection():
    with pytest.raises(ValueError, match="skip_first_frames"):
        plan_windows(0, 16)


def test_store_keeps_finished_windows_for_the_same_key_only(tmp_path):
    windows = plan_windows(10, 4)
    store = WindowStore.open(tmp_path, "a" * 64, windows)
    store.pending_part(0).write_bytes(b"window 0")
    store.finish(0)
    store.pending_part(1).write_bytes(b"half")           # interrupted while writing window 1
    store.discard_pending()
    again = WindowStore.open(tmp_path, "a" * 64, windows)
    assert again.finished() == [0] and again.part(0).read_bytes() == b"window 0"
    assert not list(again.folder.glob("*.partial.mkv"))
    with pytest.raises(RuntimeError, match=r"\[1, 2\]"):
        again.parts()
    other = WindowStore.open(tmp_path, "b" * 64, windows)  # other settings: another folder, nothing reused
    assert other.folder != again.folder and other.finished() == []
    # a manifest of another plan in the same folder is not trusted
    moved = WindowStore.open(tmp_path, "a" * 64, plan_windows(10, 5))
    assert moved.finished() == [] and not moved.part(0).exists()


def test_render_key_is_stable_and_sees_every_setting():
    base = {"seed": 42, "steps": 50, "window": 16, "video": "f00d"}
    assert render_key(base) == render_key(dict(reversed(list(base.items()))))
    for k in base:
        assert render_key({**base, k: "other"}) != render_key(base), k


def test_decode_size_scales_only_above_the_limit():
    assert decode_size(1280, 720, 1080) == (1280, 720)
    assert decode_size(1920, 1080, 1080) == (1920, 1080)
    assert decode_size(3840, 2160, 1080) == (1920, 1080)
    assert decode_size(2160, 3840, 1080) == (1080, 1920)    # portrait 4K
    with pytest.raises(ValueError, match="short_side_limit"):
        decode_size(640, 480, 8)


def _frames(n: int, w: int, h: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def test_frames_below_the_limit_are_the_pixels_select_frames_reads(tmp_path):
    path = str(tmp_path / "clip.mp4")
    encode_video(_frames(7, 96, 64), path, 8, "mp4")
    sel = FrameSelection(frame_load_cap=3, skip_first_frames=1, select_every_nth=2)
    streamed = np.stack(list(stream_frames(path, sel)))
    assert np.array_equal(streamed, read_frames(path, sel).frames)


def test_a_4k_driver_is_decoded_scaled_never_held_at_4k(tmp_path):
    path = str(tmp_path / "uhd.mkv")
    base = np.zeros((2160, 3840, 3), np.uint8)
    base[:, 1920:] = 200                                   # right half bright: survives the scaling
    encode_video([base, base], path, 30, "mkv")
    sizes = [f.shape for f in stream_frames(path, FrameSelection())]
    assert sizes == [(1080, 1920, 3)] * 2
    frame = next(stream_frames(path, FrameSelection()))
    assert frame[:, :900].max() < 10 and frame[:, 1020:].min() > 190


def _vfr_clip(path: str, pts: list[int]) -> None:
    with av.open(path, "w", format="matroska") as out:
        stream = out.add_stream("ffv1", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "bgr0"
        stream.codec_context.time_base = Fraction(1, 1000)
        for i, t in enumerate(pts):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 20, np.uint8), format="rgb24")
            frame.pts, frame.time_base = t, Fraction(1, 1000)
            for p in stream.encode(frame):
                out.mux(p)
        for p in stream.encode(None):
            out.mux(p)


def test_variable_frame_rate_is_detected_and_frames_are_used_in_order(tmp_path):
    vfr = str(tmp_path / "vfr.mkv")
    _vfr_clip(vfr, [0, 33, 67, 200, 233, 400, 433])          # irregular timestamps (ms)
    check = rate_variation(vfr)
    assert check.variable and check.variation > 1
    frames = list(stream_frames(vfr, FrameSelection()))
    assert [int(f[0, 0, 0]) for f in frames] == [0, 20, 40, 60, 80, 100, 120]    # every frame, in order
    cfr = str(tmp_path / "cfr.mkv")
    _vfr_clip(cfr, [round(i * 1000 / 30) for i in range(7)])
    assert not rate_variation(cfr).variable


def test_a_gap_across_a_window_border_is_bridged_as_in_one_batch():
    """No person in frames 3-5 of a 10-frame clip with windows of 4: the whole-track processing (what Render Video
    does) fills the gap across the border at frame 4, and each window's slice is that result."""
    raw = [PoseFrame(512, 512, [] if 3 <= i <= 5 else [standing_person(offset=(4.0 * i, 0.0))]) for i in range(10)]
    settings = ExtractSettings(width=64, height=64, smoothing="medium", fps=8.0)
    seq = process_sequence(raw, settings)
    assert seq.missing == []                                  # max_gap 8 bridges the 3-frame gap
    assert all(not f.is_empty for f in seq.source[3:6])
    for a, b in plan_windows(10, 4):
        part = seq.window(a, b)
        assert part.source == seq.source[a:b] and part.output == seq.output[a:b] and part.missing == []
    lone = process_sequence(raw[4:8], settings)              # a window processed on its own only holds frame 6
    moved = np.abs(lone.source[0].people[0].body[:, :2] - seq.source[4].people[0].body[:, :2]).max()
    assert moved > 3.0, moved                                  # interpolated 3 of 4 steps of 4 px vs held
    late = process_sequence([PoseFrame(512, 512, [])] * 5 + raw[6:], settings)   # nobody in the first window
    assert late.window(0, 4).missing == [0, 1] and late.window(4, 9).missing == []   # the start held for 3 frames
