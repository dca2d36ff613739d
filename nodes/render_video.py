"""MagicPoseRenderVideo: a whole driving video -> a rendered video file, window by window, at a memory that does
not grow with the clip (docs/comfyui-integration.md §10).

Pose pass (nodes/render/pose_pass.py): every kept frame is decoded (scaled down at decode time above
``short_side_limit``), its keypoints detected and kept; the whole track is smoothed and retargeted at once. Then
per window of ``window`` frames: pose maps drawn (pipeline.render_sequence) -> MagicPose Sampler's own code
(magicpose_sample) -> VAE decode -> a lossless mkv part on disk (magicpose_core.media.windows). Finally the parts
are concatenated into one encode with the driver's fps and sound, watermark and label, as Frames to Video writes
them. Cancel stops between frames / steps; finished parts stay and a run with the same settings reuses them.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from fractions import Fraction

import comfy.model_management
import comfy.samplers
import comfy.utils
import folder_paths
import torch

from ..magicpose_core.media.frame_selection import FrameSelection
from ..magicpose_core.media.geometry import FIT_MODES
from ..magicpose_core.media.video import DEFAULT_CRF, encode_video, iter_video_frames, probe_video, read_audio
from ..magicpose_core.media.video_stream import DEFAULT_SHORT_SIDE_LIMIT, rate_variation
from ..magicpose_core.media.windows import (
    DEFAULT_WINDOW,
    MAX_WINDOW,
    WindowStore,
    check_window,
    file_digest,
    plan_windows,
    render_key,
)
from ..magicpose_core.pose.pipeline import ON_MISSING, ExtractSettings, render_sequence
from ..magicpose_core.pose.render import RENDER_CANVASES
from ..magicpose_core.pose.retarget import RETARGET_MODES
from ..magicpose_core.pose.smoothing import PERSON_MODES, SMOOTHING_PRESETS
from ..magicpose_core.provenance.watermark import frame_marker
from ._api import InputImpl, io, ui
from .frames_to_video import container_metadata, output_location, watermarked
from .patch.model_patch import AUTOCAST_CHOICES, MagicPoseOptions
from .patch.official_schedule import scheduler_names
from .patch.run_sampling import SamplingSettings, as_reference, magicpose_sample
from .pose_detectors import DETECTOR_CHOICES, describe
from .render.clip_progress import inner_progress
from .render.identity import fingerprint
from .render.pose_pass import clip_poses
from .select_frames import audio_input, selection_inputs
from .types import MagicPoseModelType, MagicPoseReferenceType

log = logging.getLogger("MagicPose")

FORMATS = ("mp4", "webm", "mkv")   # gif / webp would hold every frame for the core VIDEO output
PARTS_FOLDER = "magicpose_render_parts"  # under ComfyUI's output folder (temp/ is emptied at every start)
KEY_VERSION = 1
_S = SamplingSettings()
_O = MagicPoseOptions()


def _file_source(video) -> str:
    """The driving video's file path (core Load Video), or a ValueError naming the fix."""
    if not isinstance(video, InputImpl.VideoFromFile):
        raise ValueError("MagicPose Render Video reads the driving video from its file: connect core Load Video "
                         "(for frames already in memory, use Select Frames -> Extract Pose -> MagicPose Sampler)")
    if video.get_active_trim_window() != (0.0, 0.0):
        raise ValueError("MagicPose Render Video: the VIDEO is trimmed; use skip_first_frames / frame_load_cap "
                         "instead of a trimmed VIDEO")
    source = video.get_stream_source()
    if not isinstance(source, str):
        raise ValueError("MagicPose Render Video needs a video file on disk (core Load Video), not an in-memory "
                         "stream")
    return source


def _decode(vae, latent: dict) -> torch.Tensor:
    """Core VAE Decode: (N, 4, h, w) latents -> IMAGE (N, H, W, 3)."""
    images = vae.decode(latent["samples"])
    if images.ndim == 5:
        images = images.reshape(-1, *images.shape[-3:])    # (B, T, H, W, C) -> (B*T, H, W, C)
    return images


class RenderVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MagicPoseRenderVideo",
            display_name="MagicPose Render Video",
            category="MagicPose",
            search_aliases=["long video", "streaming render", "render video", "dance video"],
            description=(
                "A whole driving video to a rendered video file, window by window: memory does not grow with the "
                "clip's length. Runs Select Frames, Extract Pose, MagicPose Sampler, VAE Decode and Frames to "
                "Video in one node and gives the same frames as those nodes in a row. Cancel keeps the finished "
                "windows; queue it again with the same settings to resume."),
            inputs=[
                io.Model.Input("model", tooltip="SD1.5 MODEL to sample (official: the SD1.5 bundled with MagicPose)."),
                MagicPoseModelType.Input("magicpose", tooltip="MagicPose weights from MagicPose Load Model."),
                io.MultiType.Input("reference", [MagicPoseReferenceType, io.Latent],
                                   tooltip="The identity: MagicPose Load Reference output (its size is the output "
                                           "size; its keypoints serve retargeting), or a LATENT."),
                io.Conditioning.Input("positive", tooltip="Conditional-pass text (official: empty prompt)."),
                io.Conditioning.Input("negative", tooltip="Unconditional-pass text (official: empty prompt)."),
                io.Vae.Input("vae", tooltip="VAE that decodes the frames (the checkpoint's)."),
                io.Video.Input("video", tooltip="The driving video, from core Load Video (read from its file, one "
                                                "frame at a time; audio and frame rate are kept)."),
                *selection_inputs(),
                io.Combo.Input("detector", options=DETECTOR_CHOICES, default="auto",
                               tooltip="Pose detector, as Extract Pose (auto: DWPose, else MediaPipe)."),
                io.Boolean.Input("body", default=True, tooltip="Draw the 18-point body. Official: on."),
                io.Boolean.Input("hands", default=True, tooltip="Draw both hands. Official: on."),
                io.Boolean.Input("face", default=True, tooltip="Draw the 70 face points. Official: on."),
                io.Combo.Input("person", options=[p for p in PERSON_MODES if p != "all"], default="largest",
                               tooltip="Which person to follow: the largest, or the person_index-th from the left."),
                io.Combo.Input("smoothing", options=list(SMOOTHING_PRESETS), default="medium",
                               tooltip="Temporal stabilisation over the whole clip, as Extract Pose (One Euro, "
                                       "hysteresis, gap filling across window borders)."),
                io.Combo.Input("retarget", options=list(RETARGET_MODES), default="per_bone",
                               tooltip="Fit the driving skeleton to the reference person, as Extract Pose "
                                       "(calibrated on the whole clip)."),
                io.Float.Input("strength", default=1.0, min=0.0, max=1.0, step=0.05,
                               tooltip="Retargeting blend: 0 = driving proportions, 1 = fully retargeted."),
                io.Boolean.Input("face_transfer", default=True,
                                 tooltip="With retargeting: keep the reference's face shape, take the expression."),
                io.Combo.Input("fit", options=list(FIT_MODES), default="center_crop",
                               tooltip="How frames become the reference's size; use the reference's fit."),
                io.Int.Input("seed", default=_S.seed, min=0, max=0xffffffffffffffff, control_after_generate=True,
                             tooltip=f"Seed of the initial noise. Official: {_S.seed}."),
                io.Int.Input("steps", default=_S.steps, min=1, max=1000,
                             tooltip=f"Denoising steps. Official: {_S.steps}."),
                io.Float.Input("cfg", default=_S.cfg, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip=f"Image-CFG scale. Official: {_S.cfg:g}."),
                io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS, default=_S.sampler_name,
                               tooltip=f"Sampler. Official: {_S.sampler_name}."),
                io.Combo.Input("scheduler", options=scheduler_names(), default=_S.scheduler,
                               tooltip=f"Schedule. Official: {_S.scheduler}."),
                io.Float.Input("denoise", default=_S.denoise, min=0.0, max=1.0, step=0.01,
                               tooltip="Fraction of the schedule to run (1 = from pure noise)."),
                io.Int.Input("frame_batch", default=_S.frame_batch, min=1, max=256,
                             tooltip="Frames the networks process at once, as MagicPose Sampler. Keep window a "
                                     "multiple of it for bit-identical frames to the node-by-node workflow."),
                io.Boolean.Input("shared_noise", default=_S.shared_noise,
                                 tooltip="The same initial noise for every frame (official), in every window."),
                io.Int.Input("window", default=DEFAULT_WINDOW, min=1, max=MAX_WINDOW,
                             tooltip="Frames rendered and held at once (pose maps, latents, frames); memory "
                                     "follows this, not the clip. A finished window is kept on disk for resume."),
                io.Combo.Input("format", options=list(FORMATS), default="mp4",
                               tooltip="mp4: h264 + AAC; webm: vp9 + Opus; mkv: lossless FFV1 + FLAC."),
                io.Int.Input("crf", default=DEFAULT_CRF, min=0, max=63,
                             tooltip="Quality, lower is better (h264 0-51, vp9 0-63; mkv ignores it)."),
                io.String.Input("filename_prefix", default="MagicPose/video_long",
                                tooltip="File name prefix inside the output folder; may contain a subfolder."),
                io.Boolean.Input("save_output", default=True,
                                 tooltip="On: write to ComfyUI's output folder. Off: temp folder (preview only)."),
                io.Boolean.Input("watermark", default=True, optional=True,
                                 tooltip="Invisible MagicPose watermark on every frame, as Frames to Video; the "
                                         "'AI-generated with MagicPose' label is written either way."),
                io.Int.Input("person_index", default=0, min=0, max=64, optional=True, advanced=True,
                             tooltip="With person = index: 0 = leftmost person in the first frame."),
                io.Combo.Input("render_canvas", options=list(RENDER_CANVASES), default="source", optional=True,
                               advanced=True, tooltip="Where pose lines are drawn, as Extract Pose."),
                io.Combo.Input("on_missing", options=list(ON_MISSING), default="warn", optional=True, advanced=True,
                               tooltip="A frame with no person: warn (empty pose map; short gaps bridged) or "
                                       "error. No person in any frame is always an error."),
                io.Boolean.Input("allow_download", default=False, optional=True, advanced=True,
                                 tooltip="Download missing detector weights, as Extract Pose."),
                io.Float.Input("reference_strength", default=_O.reference_strength, min=0.0, max=2.0, step=0.05,
                               optional=True, advanced=True, tooltip="Softmax weight of the reference tokens."),
                io.Float.Input("pose_strength", default=_S.pose_strength, min=0.0, max=2.0, step=0.05,
                               optional=True, advanced=True, tooltip="Pose ControlNet strength. Official: 1."),
                io.Combo.Input("autocast", options=list(AUTOCAST_CHOICES), default=_O.autocast, optional=True,
                               advanced=True, tooltip="Run the networks under torch autocast, as MagicPose Sampler."),
                io.Int.Input("short_side_limit", default=DEFAULT_SHORT_SIDE_LIMIT, min=64, max=8192, optional=True,
                             advanced=True,
                             tooltip="Driving frames with a larger short side are scaled down to it while they "
                                     "are decoded (a 4K video is read at 1080p, never held at 4K)."),
            ],
            outputs=[io.String.Output(display_name="path", tooltip="The written video file."),
                     io.Video.Output(display_name="video", tooltip="The written video as a core VIDEO.")],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, model, magicpose, reference, positive, negative, vae, video, frame_load_cap: int,
                skip_first_frames: int, select_every_nth: int, force_rate: float, detector: str, body: bool,
                hands: bool, face: bool, person: str, smoothing: str, retarget: str, strength: float,
                face_transfer: bool, fit: str, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str,
                denoise: float, frame_batch: int, shared_noise: bool, window: int, format: str, crf: int,
                filename_prefix: str, save_output: bool, watermark: bool = True, person_index: int = 0,
                render_canvas: str = "source", on_missing: str = "warn", allow_download: bool = False,
                reference_strength: float = 1.0, pose_strength: float = 1.0, autocast: str = "off",
                short_side_limit: int = DEFAULT_SHORT_SIDE_LIMIT) -> io.NodeOutput:
        if format not in FORMATS:
            raise ValueError(f"MagicPose Render Video writes {', '.join(FORMATS)}; got {format!r} (for gif/webp use "
                             "Frames to Video on a short clip)")
        check_window(window, frame_batch)
        selection = FrameSelection(frame_load_cap, skip_first_frames, select_every_nth, float(force_rate)).check()
        source = _file_source(video)
        info = probe_video(source)
        expected = selection.kept_count(info.frames, info.fps)
        if expected == 0:
            raise ValueError(f"MagicPose Render Video keeps no frame: the video has {info.frames} frames and "
                             f"skip_first_frames is {skip_first_frames}; lower skip_first_frames")
        rate = rate_variation(source)
        if rate.variable:
            log.warning("MagicPose Render Video: the driving video has a variable frame rate (frame durations differ "
                        "by up to %.0f %%); its frames are used in order at the average rate %s fps, as Select Frames "
                        "does, so the sound may drift. For exact timing re-encode it at a constant rate (ffmpeg "
                        "-i in.mp4 -fps_mode cfr -r 30 out.mp4) or set force_rate.", 100 * rate.variation,
                        f"{float(info.fps):g}")
        out_fps = selection.output_fps(info.fps)
        ref = as_reference(reference)
        pose_settings = ExtractSettings(width=ref.width, height=ref.height, fit=fit, body=body, hands=hands,
                                        face=face, person=person, person_index=person_index, smoothing=smoothing,
                                        fps=float(out_fps), retarget=retarget, strength=strength,
                                        face_transfer=face_transfer, render_canvas=render_canvas,
                                        on_missing=on_missing)
        sampling = SamplingSettings(seed=seed, steps=steps, cfg=cfg, sampler_name=sampler_name, scheduler=scheduler,
                                    denoise=denoise, frame_batch=frame_batch, shared_noise=shared_noise,
                                    pose_strength=pose_strength)
        options = MagicPoseOptions(reference_strength=reference_strength, autocast=autocast)
        key = render_key({
            "version": KEY_VERSION, "video": file_digest(source), "selection": dataclasses.asdict(selection),
            "short_side_limit": short_side_limit, "detector": describe(detector),
            "pose": dataclasses.asdict(pose_settings), "sampling": dataclasses.asdict(sampling),
            "options": [reference_strength, autocast], "window": window,
            "model": fingerprint(model), "magicpose": fingerprint(magicpose), "vae": fingerprint(vae),
            "reference": fingerprint(reference, whole=True), "positive": fingerprint(positive, whole=True),
            "negative": fingerprint(negative, whole=True)})

        units = expected * (steps + 2)                          # pose pass + frames x steps + final encode
        bar = comfy.utils.ProgressBar(units)
        poses = clip_poses(source, selection, expected, detector, allow_download, pose_settings, reference,
                           short_side_limit, on_frame=lambda i: bar.update_absolute(min(i, expected), units))
        n = len(poses.sequence.source)
        if n != expected:
            units = n * (steps + 2)
            log.info("MagicPose Render Video: %d frames decoded (%d counted from the packets)", n, expected)
        windows = plan_windows(n, window)
        store = WindowStore.open(os.path.join(folder_paths.get_output_directory(), PARTS_FOLDER), key, windows)
        reused = store.finished()
        if reused:
            log.info("MagicPose Render Video: resuming: reused %d of %d windows (frames %s) from %s", len(reused),
                     len(windows), ", ".join(f"{windows[i][0]}-{windows[i][1] - 1}" for i in reused), store.folder)
        rendered = 0
        try:
            for i, (a, b) in enumerate(windows):
                done_units = n + a * steps
                if i in reused:
                    bar.update_absolute(n + b * steps, units)
                    continue
                comfy.model_management.throw_exception_if_processing_interrupted()
                maps = render_sequence(poses.sequence.window(a, b), poses.settings)   # (b - a, H, W, 3)
                with inner_progress(bar, done_units, (b - a) * steps):
                    latent = magicpose_sample(model, magicpose, reference, maps, positive, negative, sampling,
                                              options=options)
                del maps
                images = _decode(vae, latent)                                         # (b - a, H, W, 3)
                encode_video(images, str(store.pending_part(i)), out_fps, "mkv", on_progress=_check_interrupt)
                del images, latent
                store.finish(i)
                rendered += 1
                log.info("MagicPose Render Video: window %d of %d (frames %d-%d) done", i + 1, len(windows), a, b - 1)
        finally:
            store.discard_pending()
        log.info("MagicPose Render Video: %d windows rendered, %d reused", rendered, len(reused))

        audio = read_audio(source, *selection.audio_span(n, info.fps))
        written = cls._write(store, n, units, bar, out_fps, format, crf, audio_input(audio) if audio else None,
                             filename_prefix, save_output, watermark, (ref.width, ref.height))
        store.clear()
        path, filename, subfolder, folder_type = written
        result = ui.SavedResult(filename, subfolder, folder_type)
        return io.NodeOutput(path, InputImpl.VideoFromFile(path), ui=ui.PreviewVideo([result]))

    @classmethod
    def _write(cls, store: WindowStore, n: int, units: int, bar, fps: Fraction, format: str, crf: int, audio,
               filename_prefix: str, save_output: bool, watermark: bool, size: tuple[int, int]):
        folder, filename, subfolder, folder_type = output_location(filename_prefix, save_output, *size, format)
        path = os.path.join(folder, filename)
        parts = store.parts()

        def frames():
            for part in parts:
                yield from iter_video_frames(str(part))                                  # (H, W, 3) uint8 each

        marker = frame_marker(watermark)
        source = frames() if marker is None else watermarked(frames(), marker)

        def progress(done: int, _total) -> None:
            _check_interrupt()
            bar.update_absolute(units - n + done, units)

        info = encode_video(source, path, fps, format, crf, audio,
                            metadata=container_metadata(getattr(cls, "hidden", None)), on_progress=progress)
        log.info("MagicPose Render Video: %d frames %dx%d at %s fps from %d windows -> %s%s", info.frames, info.width,
                 info.height, info.fps, len(parts), path, " (watermarked)" if marker is not None else "")
        return path, filename, subfolder, folder_type


def _check_interrupt(*_args) -> None:
    comfy.model_management.throw_exception_if_processing_interrupted()
