"""MagicPoseSelectFrames: frame cap, skip, every n-th and forced rate for a driving video (or an IMAGE batch), with
the frame rate and sound following the selection. Selection rules: magicpose_core.media.frame_selection (the
VideoHelperSuite Load Video controls); decoding: magicpose_core.media.video.read_frames (only kept frames become
images).
"""
from __future__ import annotations

import logging

import comfy.model_management
import comfy.utils
import psutil
import torch

from ..magicpose_core.media.frame_selection import (
    MAX_FORCE_RATE,
    MAX_FRAME_CAP,
    MAX_NTH,
    MAX_SKIP,
    FrameSelection,
    as_rate,
)
from ..magicpose_core.media.images import from_uint8
from ..magicpose_core.media.video import probe_video, read_audio, read_frames
from ._api import InputImpl, io

log = logging.getLogger("MagicPose")
MEMORY_SHARE = 0.8  # of the available RAM the selected frames may fill


def audio_input(wave_rate) -> dict | None:
    if wave_rate is None or wave_rate[0].shape[1] == 0:
        return None
    wave, rate = wave_rate
    return {"waveform": torch.from_numpy(wave)[None], "sample_rate": rate}   # (C, S) -> (1, C, S)


def _trim_audio(audio: dict | None, start, duration) -> dict | None:
    if not audio or audio.get("waveform") is None:
        return None
    rate = int(audio["sample_rate"])
    lo = round(start * rate)
    wave = audio["waveform"][..., lo:lo + round(duration * rate)]      # (B, C, S) -> (B, C, S')
    return {"waveform": wave, "sample_rate": rate} if wave.shape[-1] else None


def _no_frames(selection: FrameSelection, frames: int, fps) -> ValueError:
    return ValueError(f"MagicPose Select Frames keeps no frame: the source has {frames} frames at {float(fps):g} fps "
                      f"and skip_first_frames is {selection.skip_first_frames}; lower skip_first_frames")


def select_from_images(images: torch.Tensor, selection: FrameSelection, fps: float):
    """(images (N', H, W, C), None, fps) of an IMAGE batch; a contiguous pick stays a view (no copy)."""
    n = int(images.shape[0])
    idx = selection.source_indices(n, fps)
    if not idx:
        raise _no_frames(selection, n, fps)
    if idx == list(range(idx[0], idx[0] + len(idx))):
        picked = images[idx[0]:idx[0] + len(idx)]
    else:
        picked = images[torch.tensor(idx, dtype=torch.long)]
    return picked, None, selection.output_fps(fps)


def select_from_video(video, selection: FrameSelection):
    """(images, audio, fps) of a core VIDEO: file-backed videos are decoded frame by frame, keeping only the
    selection; others (e.g. Create Video) are selected in memory."""
    from_file = isinstance(video, InputImpl.VideoFromFile)      # others would be encoded just to be read back
    if not from_file or video.get_active_trim_window() != (0.0, 0.0):
        comps = video.get_components()
        images, _, fps = select_from_images(comps.images, selection, comps.frame_rate)
        kept = int(images.shape[0])
        return images, _trim_audio(comps.audio, *selection.audio_span(kept, comps.frame_rate)), fps
    info = probe_video(video.get_stream_source())
    total = selection.kept_count(info.frames, info.fps)
    if total == 0:
        raise _no_frames(selection, info.frames, info.fps)
    pbar = comfy.utils.ProgressBar(total)

    def tick(done: int) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        pbar.update_absolute(min(done, total), total)

    budget = int(psutil.virtual_memory().available * MEMORY_SHARE)
    got = read_frames(video.get_stream_source(), selection, max_bytes=budget, on_frame=tick)
    kept = int(got.frames.shape[0])
    audio = read_audio(video.get_stream_source(), *selection.audio_span(kept, got.source_fps))
    log.info("MagicPose Select Frames: %d of %d frames at %s fps (output %s fps)", kept, info.frames,
             got.source_fps, got.fps)
    return from_uint8(got.frames), audio_input(audio), got.fps



def selection_inputs() -> list:
    """The frame-selection inputs (VideoHelperSuite's Load Video controls), shared with MagicPose Render Video."""
    return [
        io.Int.Input("frame_load_cap", default=0, min=0, max=MAX_FRAME_CAP,
                     tooltip="At most this many frames (0 = all). With skip_first_frames it renders a range."),
        io.Int.Input("skip_first_frames", default=0, min=0, max=MAX_SKIP,
                     tooltip="Frames dropped at the start (counted after force_rate)."),
        io.Int.Input("select_every_nth", default=1, min=1, max=MAX_NTH,
                     tooltip="Keep every n-th frame (1 = all); the output fps is divided by n."),
        io.Float.Input("force_rate", default=0.0, min=0.0, max=MAX_FORCE_RATE, step=0.01,
                       tooltip="Resample to this frame rate first, dropping or repeating frames (0 = the "
                               "video's own rate)."),
    ]


class SelectFrames(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MagicPoseSelectFrames",
            display_name="MagicPose Select Frames",
            category="MagicPose",
            search_aliases=["frame cap", "skip frames", "select every nth", "force rate", "video frames"],
            description=(
                "The frames of a driving video to use, with VideoHelperSuite's Load Video controls: force_rate "
                "resamples by time, then skip_first_frames, select_every_nth and frame_load_cap. Only the kept "
                "frames are decoded into images; fps and audio follow the selection (fps = rate / nth, the audio "
                "trimmed to the kept span). Also selects from an IMAGE batch. All zeros / 1 = the whole video."),
            inputs=[
                *selection_inputs(),
                io.Video.Input("video", optional=True,
                               tooltip="The driving video (core Load Video). Connect this or images."),
                io.Image.Input("images", optional=True,
                               tooltip="An IMAGE batch to select from instead of a video (no audio output)."),
                io.Float.Input("fps", default=30.0, min=0.01, max=1000.0, step=0.01, optional=True, advanced=True,
                               tooltip="Frame rate of `images` (ignored with `video`, whose own rate is used)."),
            ],
            outputs=[
                io.Image.Output(display_name="images", tooltip="The kept frames (N, H, W, 3)."),
                io.Audio.Output(display_name="audio",
                                tooltip="The video's sound over the kept span (None without sound or with images)."),
                io.Float.Output(display_name="fps", tooltip="Frame rate of the kept frames: rate / select_every_nth."),
                io.Int.Output(display_name="frame_count", tooltip="Number of kept frames."),
            ],
        )

    @classmethod
    def execute(cls, frame_load_cap: int, skip_first_frames: int, select_every_nth: int, force_rate: float,
                video=None, images: torch.Tensor | None = None, fps: float = 30.0) -> io.NodeOutput:
        selection = FrameSelection(frame_load_cap, skip_first_frames, select_every_nth, float(force_rate)).check()
        if (video is None) == (images is None):
            raise ValueError("MagicPose Select Frames: connect exactly one of `video` (core Load Video) or `images`")
        if images is not None:
            frames, audio, rate = select_from_images(images, selection, as_rate(fps))
        else:
            frames, audio, rate = select_from_video(video, selection)
        return io.NodeOutput(frames, audio, float(rate), int(frames.shape[0]))
