"""MagicPoseFramesToVideo: the generated frames as a playable file (mp4/webm/gif/webp) and a core VIDEO.

Encoding is ``magicpose_core.media.video.encode_video`` (PyAV, streaming); crop-back is
``magicpose_core.media.geometry.crop_back`` with the reference's fit, applied chunk by chunk. The VIDEO output is
``VideoFromFile`` of the written mp4/webm, so it chains with core Save Video / Get Video Components. FFmpeg
cannot read animated webp back and mp4 cannot hold a gif stream, so for gif and webp the VIDEO output is
built from the frames that were encoded (``VideoFromComponents``) instead.
"""
from __future__ import annotations

import json
import logging
import os
import random
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator

import comfy.model_management
import comfy.utils
import folder_paths
import numpy as np
import torch
from comfy.cli_args import args

from ..magicpose_core.media.geometry import FitGeometry, crop_back
from ..magicpose_core.media.images import from_uint8, iter_uint8
from ..magicpose_core.media.video import DEFAULT_CRF, VIDEO_FORMATS, EncodedVideo, encode_video, video_fps
from ..magicpose_core.provenance import label_metadata, pack_version
from ..magicpose_core.provenance.watermark import frame_marker
from ._api import InputImpl, Types, io, ui
from .types import MagicPoseReferenceType

log = logging.getLogger("MagicPose")

CROP_BACK_MODES = ("off", "remove padding", "source size")
CHUNK = 16  # frames per encoder hand-off, progress update and interruption check


@dataclass(frozen=True)
class WrittenVideo:
    info: EncodedVideo
    filename: str
    subfolder: str
    folder_type: io.FolderType
    frames: torch.Tensor | None  # kept only where the VIDEO output is built from frames (gif, webp)


def check_frames(images: torch.Tensor) -> None:
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"MagicPose Frames to Video got no frames (shape {tuple(images.shape)}); connect the images "
                         "of the sampler (one per pose).")
    if images.shape[-1] != 3:
        raise ValueError(f"MagicPose Frames to Video needs RGB frames (3 channels), got {images.shape[-1]}. For RGBA, "
                         "split off the alpha with core 'Split Image with Alpha' first (mp4 and gif have no alpha).")


def crop_geometry(crop: str, reference) -> FitGeometry | None:
    if crop == "off":
        return None
    geometry = getattr(reference, "geometry", None)
    if geometry is None:
        raise ValueError(f"crop_back '{crop}' needs the reference's fit: connect the reference output of MagicPose "
                         "Load Reference to Frames to Video, or set crop_back to 'off'.")
    return geometry


def _cropped_frames(images: torch.Tensor, g: FitGeometry, resize: bool) -> Iterator[np.ndarray]:
    """HWC uint8 frames of ``crop_back`` applied one frame at a time (the source size may be much larger)."""
    for i in range(images.shape[0]):
        yield from iter_uint8(crop_back(images[i:i + 1], g, resize=resize), chunk=1)


def _output_size(images: torch.Tensor, g: FitGeometry | None, resize: bool) -> tuple[int, int]:
    if g is None:
        return int(images.shape[2]), int(images.shape[1])
    return (g.crop_w, g.crop_h) if resize else (g.box_w, g.box_h)


def watermarked(frames: Iterator[np.ndarray], marker) -> Iterator[np.ndarray]:
    """Watermark frame by frame (about half a second each on 2 CPU threads: check interruption per frame)."""
    for frame in frames:
        comfy.model_management.throw_exception_if_processing_interrupted()
        yield marker(frame)


def output_location(filename_prefix: str, save_output: bool, w: int, h: int,
                    format: str) -> tuple[str, str, str, io.FolderType]:
    """(folder, file name, subfolder, folder type) of the next file for ``filename_prefix`` in ComfyUI's output
    folder (``save_output``) or its temp folder."""
    if save_output:
        base_dir, folder_type = folder_paths.get_output_directory(), io.FolderType.output
    else:
        base_dir, folder_type = folder_paths.get_temp_directory(), io.FolderType.temp
        filename_prefix += "_temp_" + "".join(random.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(5))
    folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, base_dir, w, h)
    return folder, f"{name}_{counter:05}_.{format}", subfolder, folder_type


def container_metadata(hidden) -> dict[str, str]:
    """The container tags core Save Video writes (prompt, workflow; not with --disable-metadata) and the
    provenance label (always)."""
    meta = {}
    if not args.disable_metadata and hidden is not None:
        if hidden.prompt is not None:
            meta["prompt"] = json.dumps(hidden.prompt)
        for key, value in (hidden.extra_pnginfo or {}).items():
            meta[key] = json.dumps(value)
    meta.update(label_metadata(pack_version()))  # the provenance label, even with --disable-metadata
    return meta


def write_video(images: torch.Tensor, fps: float, format: str, crf: int, audio: dict | None,
                geometry: FitGeometry | None, resize: bool, filename_prefix: str, save_output: bool,
                metadata: dict[str, str] | None, watermark: bool = True) -> WrittenVideo:
    """Encode to ComfyUI's output folder (or temp), with progress per chunk and interruption between chunks;
    every frame carries the invisible MagicPose watermark unless ``watermark`` is off or its package is missing."""
    if geometry is not None and (images.shape[2], images.shape[1]) != (geometry.dst_w, geometry.dst_h):
        raise ValueError(f"crop_back: the frames are {images.shape[2]}x{images.shape[1]} but the reference was fitted "
                         f"to {geometry.dst_w}x{geometry.dst_h}; use the same size or set crop_back to 'off'.")
    w, h = _output_size(images, geometry, resize)
    folder, filename, subfolder, folder_type = output_location(filename_prefix, save_output, w, h, format)

    keep = format in ("gif", "webp")  # their VIDEO output is built from the frames
    frames: torch.Tensor | Iterator[np.ndarray] = images
    kept = images if keep else None
    if geometry is not None:
        if keep:
            kept = frames = crop_back(images, geometry, resize=resize)
        else:
            frames = _cropped_frames(images, geometry, resize)
    marker = frame_marker(watermark)
    if marker is not None and keep:  # the VIDEO output is built from these frames: mark them too
        kept = frames = from_uint8(list(watermarked(iter_uint8(kept, chunk=1), marker)))
    elif marker is not None:
        frames = watermarked(iter_uint8(frames, chunk=1) if isinstance(frames, torch.Tensor) else frames, marker)
    total = int(images.shape[0])
    pbar = comfy.utils.ProgressBar(total)

    def progress(done: int, _total: int | None) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        pbar.update_absolute(done, total)

    info = encode_video(frames, os.path.join(folder, filename), fps, format, crf, audio, chunk=CHUNK,
                        metadata=metadata if format in ("mp4", "webm", "mkv") else None, on_progress=progress)
    log.info("MagicPose Frames to Video: %d frames %dx%d at %s fps -> %s%s", info.frames, info.width, info.height,
             info.fps, info.path, " (watermarked)" if marker is not None else "")
    return WrittenVideo(info, filename, subfolder, folder_type, kept)


class FramesToVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MagicPoseFramesToVideo",
            display_name="MagicPose Frames to Video",
            category="MagicPose",
            search_aliases=["images to video"],
            description=(
                "Writes the frames as a video file (mp4 h264, webm vp9, gif or animated webp) with the driving "
                "video's frame rate and sound, shows it in the node and outputs a core VIDEO for Save Video / Get "
                "Video Components. Streams frames to the encoder (no second copy of the batch). Odd sizes are "
                "padded by one pixel for mp4/webm (yuv420p); the file keeps the padded size. Optionally crops the "
                "frames back using the reference's fit (removes letterbox bars, or restores the source size). Every "
                "frame carries an invisible MagicPose watermark (switch: watermark) and mp4/webm/mkv files an "
                "'AI-generated with MagicPose' metadata label."),
            inputs=[
                io.Image.Input("images", tooltip="The frames, e.g. the decoded output of MagicPose Sampler (RGB)."),
                io.Float.Input("fps", default=24.0, min=0.01, max=1000.0, step=0.01,
                               tooltip="Frames per second; connect the fps of core Get Video Components to match "
                                       "the driving video."),
                io.Combo.Input("format", options=list(VIDEO_FORMATS), default="mp4",
                               tooltip="mp4: h264 + AAC. webm: vp9 + Opus. gif and webp: animated images, no sound. "
                                       "mkv: lossless FFV1 RGB + FLAC (large; for editing, and the multi-server "
                                       "client's parts)."),
                io.Int.Input("crf", default=DEFAULT_CRF, min=0, max=63, step=1,
                             tooltip="Quality, lower is better. h264: 0-51 (19 near lossless, 23 ComfyUI default); "
                                     "vp9: 0-63; webp: quality = 100 - crf (0 lossless); gif: ignored."),
                io.String.Input("filename_prefix", default="MagicPose/video",
                                tooltip="File name prefix inside the output folder; may contain a subfolder."),
                io.Boolean.Input("save_output", default=True,
                                 tooltip="On: write to ComfyUI's output folder. Off: temp folder (preview only)."),
                io.Audio.Input("audio", optional=True,
                               tooltip="Sound for mp4/webm, e.g. the audio of Get Video Components; trimmed or "
                                       "padded with silence to the video length."),
                MagicPoseReferenceType.Input("reference", optional=True,
                                             tooltip="MagicPose Load Reference output; its fit is used by crop_back."),
                io.Combo.Input("crop_back", options=list(CROP_BACK_MODES), default="off", optional=True,
                               tooltip="off: frames as they are. remove padding: drop the letterbox bars. source "
                                       "size: also resize to the fitted source region (needs reference)."),
                io.Boolean.Input("watermark", default=True, optional=True,
                                 tooltip="On (default): every frame carries an invisible MagicPose watermark "
                                         "(RivaGAN, 32 bits: pack name and version; its model files ship with the "
                                         "pack) that 'python -m magicpose_core.provenance check' and MagicPose "
                                         "Check Provenance read back. Off: frames are written unmarked. The "
                                         "'AI-generated with MagicPose' metadata label is written either way."),
            ],
            outputs=[io.Video.Output(display_name="video", tooltip="The written video as a core VIDEO.")],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, images: torch.Tensor, fps: float, format: str, crf: int, filename_prefix: str,
                save_output: bool, audio: dict | None = None, reference=None, crop_back: str = "off",
                watermark: bool = True) -> io.NodeOutput:
        check_frames(images)
        if crop_back not in CROP_BACK_MODES:
            raise ValueError(f"crop_back must be one of {', '.join(CROP_BACK_MODES)}, got {crop_back!r}")
        geometry = crop_geometry(crop_back, reference)
        written = write_video(images, fps, format, crf, audio, geometry, crop_back == "source size", filename_prefix,
                              save_output, cls._metadata(), watermark)
        if written.frames is None:
            video = InputImpl.VideoFromFile(written.info.path)
        else:
            components = Types.VideoComponents(images=written.frames, frame_rate=Fraction(video_fps(fps)))
            video = InputImpl.VideoFromComponents(components)
        result = ui.SavedResult(written.filename, written.subfolder, written.folder_type)
        return io.NodeOutput(video, ui=ui.PreviewVideo([result]))

    @classmethod
    def _metadata(cls) -> dict[str, str] | None:
        return container_metadata(getattr(cls, "hidden", None))
