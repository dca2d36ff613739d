"""Streaming video encoder on PyAV: frames -> mp4 (h264), webm (vp9), gif, animated webp or lossless mkv (FFV1),
with optional audio; and the reading side: a frame selection of a driving video, its sound, merging parts.

Over 400 lines: reading, writing and merging share one set of PyAV stream conventions (time bases, pts,
audio resampling and trimming); merging lossless parts must use exactly the encoder's settings.

MagicPose generates one image per driving frame (docs/method.md §9: the official script writes
per-frame JPGs and leaves its ``gif`` folder empty), so the pack turns the frames into a playable file
itself, with the driving video's frame rate and sound.

Design:
- Streaming: frames are converted to uint8 one at a time through the one IMAGE adapter
  (``magicpose_core.media.images.iter_uint8``) and handed to the encoder; the batch is never copied whole.
  Every ``chunk`` frames, audio is interleaved up to the video time written so far and ``on_progress``
  runs (the glue checks for interruption there).
- Exact frame count: every input frame is one output frame with ``pts = i`` in a ``1/fps`` time base
  (gif: centiseconds, webp: milliseconds, rounded per frame so the mean rate stays exact).
- Odd sizes: yuv420p (h264, vp9) stores chroma at half resolution, so those encoders need an even
  width and height. Odd frames are padded by one edge-replicated row/column at the bottom/right,
  and **the file keeps the padded size** (h264/vp9 in PyAV offer no display-crop). gif and webp
  keep the exact size.
- Audio: a waveform (C, S) or (1, C, S) with its sample rate (ComfyUI AUDIO layout), trimmed or
  zero-padded to the video duration. mp4 gets AAC, webm Opus (resampled to 48 kHz); gif and webp
  cannot carry audio, which is logged. More than two channels are downmixed to stereo by FFmpeg.
- Quality: ``crf`` is the x264 (0-51) / libvpx-vp9 (0-63) constant rate factor; for webp,
  ``quality = 100 - crf`` (0 = lossless); gif ignores it (one adaptive palette per frame,
  FFmpeg ``palettegen stats_mode=single`` + ``paletteuse``).

- Lossless: mkv stores the RGB frames exactly (FFV1, bgr0) with FLAC sound. The multi-server client
  (magicpose_core.client) renders ranges to mkv and merges them with ``merge_videos``: the final encoder then
  sees the same frames as a single render's, so the merged file equals it.
- Reading (``read_frames``, ``read_audio``, ``probe_video``) needs numpy and PyAV only, no torch: the headless
  client uses it. Only kept frames are converted to RGB (magicpose_core.media.frame_selection decides which).

Codec facts follow the FFmpeg documentation (libx264, libvpx-vp9, libwebp, gif muxer time base 1/100).
"""
from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np

from .frame_selection import FrameSelection

log = logging.getLogger("MagicPose")

VIDEO_FORMATS = ("mp4", "webm", "gif", "webp", "mkv")
DEFAULT_CRF = 19
CONVERT_CHUNK = 1  # frames converted to uint8 at once (measured at 512²: 4 leaves ~80 MB more RSS, ~15% faster)
WEBP_MAX_SIZE = 16383  # libwebp WEBP_MAX_DIMENSION
GIF_MAX_FPS = 50  # 2/100 s: the shortest delay browsers honour (shorter ones are played as 1/10 s)


@dataclass(frozen=True)
class VideoFormat:
    """How one output format is written."""

    container: str
    codec: str
    pix_fmt: str
    audio_codec: str | None
    time_base: Fraction | None  # fixed container time base (gif, webp) or None for 1/fps
    even_size: bool             # chroma subsampling needs even width and height
    max_crf: int


FORMATS: dict[str, VideoFormat] = {
    "mp4": VideoFormat("mp4", "libx264", "yuv420p", "aac", None, True, 51),
    "webm": VideoFormat("webm", "libvpx-vp9", "yuv420p", "libopus", None, True, 63),
    "gif": VideoFormat("gif", "gif", "pal8", None, Fraction(1, 100), False, 63),
    "webp": VideoFormat("webp", "libwebp_anim", "yuv420p", None, Fraction(1, 1000), False, 100),
    # lossless: FFV1 stores the RGB frames exactly (bgr0 is rgb24 reordered), FLAC the sound; crf is ignored
    "mkv": VideoFormat("matroska", "ffv1", "bgr0", "flac", None, False, 63),
}
_OPUS_RATE = 48000  # libopus accepts 8/12/16/24/48 kHz; 48 kHz always works


@dataclass(frozen=True)
class EncodedVideo:
    """What was written: the file, its frame size (after padding), frame count, rate and audio."""

    path: str
    format: str
    width: int
    height: int
    frames: int
    fps: Fraction
    padded: bool
    audio_seconds: float | None  # duration of the written audio track, None without audio

    @property
    def duration(self) -> float:
        return float(self.frames / self.fps)


def video_fps(fps: float | Fraction | int) -> Fraction:
    """A frame rate as an exact fraction: 24 -> 24/1, 29.97 -> 2997/100, 30000/1001 stays."""
    if isinstance(fps, Fraction):
        rate = fps
    else:
        if not np.isfinite(fps):
            raise ValueError(f"fps must be a finite number, got {fps!r}")
        rate = Fraction(float(fps)).limit_denominator(1001)
    if rate <= 0 or rate > 1000:
        raise ValueError(f"fps must be in (0, 1000], got {float(rate)}")
    return rate


def audio_to_numpy(audio: Any) -> tuple[np.ndarray, int]:
    """ComfyUI AUDIO ({"waveform": (B, C, S) or (C, S), "sample_rate": int}) or a (waveform, rate) pair
    -> (float32 (C, S), sample_rate). A batch of several clips uses the first."""
    if isinstance(audio, Mapping):
        wave, rate = audio.get("waveform"), audio.get("sample_rate")
    elif isinstance(audio, (tuple, list)) and len(audio) == 2:
        wave, rate = audio
    else:
        raise ValueError("audio must be a ComfyUI AUDIO dict {'waveform': (B, C, S), 'sample_rate': int}")
    if wave is None or rate is None or int(rate) <= 0:
        raise ValueError("audio needs a 'waveform' and a positive 'sample_rate'")
    arr = wave.detach().to("cpu").float().numpy() if _is_tensor(wave) else np.asarray(wave)
    if arr.ndim == 3:
        if arr.shape[0] > 1:
            log.warning("audio batch of %d clips: using the first", arr.shape[0])
        arr = arr[0]  # (B, C, S) -> (C, S)
    if arr.ndim != 2 or arr.shape[0] < 1:
        raise ValueError(f"audio waveform must be (C, S) or (B, C, S), got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float32), int(rate)


def _is_tensor(x: Any) -> bool:
    """A torch tensor, without importing torch (the headless client merges videos without it)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _layout(channels: int) -> str:
    layouts = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}
    if channels not in layouts:
        raise ValueError(f"audio with {channels} channels is not supported (1 to 8)")
    return layouts[channels]


class _AudioWriter:
    """Feeds a waveform to an audio stream up to a given time, zero-padding past its end."""

    def __init__(self, container, fmt: VideoFormat, wave: np.ndarray, rate: int) -> None:
        import av

        self.wave, self.rate, self.pos = wave, rate, 0
        self.layout = _layout(wave.shape[0])
        out_layout = "mono" if wave.shape[0] == 1 else "stereo"
        if wave.shape[0] > 2:
            log.info("audio has %d channels: downmixed to stereo", wave.shape[0])
        out_rate = _OPUS_RATE if fmt.audio_codec == "libopus" else rate
        self.stream = container.add_stream(fmt.audio_codec, rate=out_rate, layout=out_layout)
        if fmt.audio_codec == "aac":
            self.stream.bit_rate = 192_000
        out_format = self.stream.codec_context.codec.audio_formats[0].name
        self.resampler = av.AudioResampler(format=out_format, layout=out_layout, rate=out_rate)
        self.container = container

    def write_until(self, seconds: float) -> None:
        import av

        end = round(seconds * self.rate)
        while self.pos < end:
            n = min(end - self.pos, 4096)
            part = self.wave[:, self.pos:self.pos + n]  # (C, <=n), shorter past the end of the clip
            if part.shape[1] < n:
                part = np.pad(part, ((0, 0), (0, n - part.shape[1])))  # silence after the clip ends
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(part), format="fltp", layout=self.layout)
            frame.sample_rate = self.rate
            frame.pts = self.pos
            frame.time_base = Fraction(1, self.rate)
            self._encode(self.resampler.resample(frame))
            self.pos += n

    def close(self) -> None:
        self._encode(self.resampler.resample(None))
        for packet in self.stream.encode(None):
            self.container.mux(packet)

    def _encode(self, frames) -> None:
        for frame in frames:
            for packet in self.stream.encode(frame):
                self.container.mux(packet)


def _gif_palette_graph(width: int, height: int, time_base: Fraction):
    """FFmpeg graph rgb24 -> pal8 with one optimised palette per frame (streaming, no second pass)."""
    import av

    graph = av.filter.Graph()
    src = graph.add_buffer(width=width, height=height, format="rgb24", time_base=time_base)
    split = graph.add("split")
    gen = graph.add("palettegen", "stats_mode=single")
    use = graph.add("paletteuse", "new=1")
    sink = graph.add("buffersink")
    src.link_to(split)
    split.link_to(gen, 0, 0)
    split.link_to(use, 1, 0)
    gen.link_to(use, 0, 1)
    use.link_to(sink)
    graph.configure()
    return graph


def _frames_of(frames: Any, chunk: int) -> tuple[Iterator[np.ndarray], int | None]:
    if _is_tensor(frames):
        from .images import iter_uint8

        if frames.ndim != 4:
            raise ValueError(f"expected an IMAGE batch (B, H, W, C), got shape {tuple(frames.shape)}")
        return iter_uint8(frames, chunk=min(chunk, CONVERT_CHUNK)), int(frames.shape[0])
    return iter(frames), None


def _check_frame(frame: np.ndarray, size: tuple[int, int] | None, index: int) -> None:
    if frame.ndim != 3 or frame.shape[2] != 3:
        channels = frame.shape[2] if frame.ndim == 3 else "no"
        raise ValueError(f"frame {index} has {channels} channels; video frames must be RGB (H, W, 3). "
                         "Drop an alpha channel first (e.g. core 'Split Image with Alpha') or convert grey to RGB.")
    if frame.dtype != np.uint8:
        raise ValueError(f"frame {index} is {frame.dtype}; the encoder takes uint8 HWC frames")
    if size is not None and (frame.shape[1], frame.shape[0]) != size:
        raise ValueError(f"frame {index} is {frame.shape[1]}x{frame.shape[0]} but frame 0 is {size[0]}x{size[1]}; "
                         "all frames of a video must have the same size")


def encode_video(
    frames: Any,
    path: str,
    fps: float | Fraction,
    format: str = "mp4",
    crf: int = DEFAULT_CRF,
    audio: Any = None,
    *,
    chunk: int = 16,
    metadata: Mapping[str, str] | None = None,
    on_progress: Callable[[int, int | None], None] | None = None,
) -> EncodedVideo:
    """Encode frames to ``path``: an IMAGE tensor (B, H, W, 3) in [0, 1] or an iterable of HWC uint8 RGB frames
    (numpy only: the headless client merges parts without torch).

    ``on_progress(frames_done, total)`` runs after every ``chunk`` frames (total is None for an iterator);
    it may raise to stop (interruption), in which case the partial file is removed.
    """
    import av

    if format not in FORMATS:
        raise ValueError(f"video format {format!r} is not one of {', '.join(VIDEO_FORMATS)}")
    fmt = FORMATS[format]
    rate = video_fps(fps)
    if format == "gif" and rate > GIF_MAX_FPS:
        raise ValueError(f"gif stores frame delays in 1/100 s and players slow down delays under 2/100 s: use at most "
                         f"{GIF_MAX_FPS} fps for gif (got {float(rate):g}), or mp4/webm")
    if not 0 <= int(crf) <= fmt.max_crf:
        raise ValueError(f"crf {crf} is out of range for {format} (0 to {fmt.max_crf})")
    if _is_tensor(frames) and frames.shape[0] == 0:
        raise ValueError("no frames to encode: the image batch is empty")
    source, total = _frames_of(frames, chunk)
    wave = audio_to_numpy(audio) if audio is not None else None
    if wave is not None and fmt.audio_codec is None:
        log.warning("%s cannot carry audio: the audio input is not written (use mp4 or webm for sound)", format)
        wave = None

    first = next(source, None)
    if first is None:
        raise ValueError("no frames to encode: the frame sequence is empty")
    _check_frame(first, None, 0)
    h, w = first.shape[:2]
    if format == "webp" and max(w, h) > WEBP_MAX_SIZE:
        raise ValueError(f"webp frames are at most {WEBP_MAX_SIZE} px a side, got {w}x{h}; use mp4 or webm")
    pad_w, pad_h = (w % 2, h % 2) if fmt.even_size else (0, 0)
    if pad_w or pad_h:
        log.info("%dx%d frames padded to %dx%d: %s yuv420p needs an even size", w, h, w + pad_w, h + pad_h, format)

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    container = av.open(path, mode="w", format=fmt.container, options=_muxer_options(format))
    done, audio_writer, ok = 0, None, False
    try:
        for key, value in (metadata or {}).items():
            container.metadata[key] = value
        stream = container.add_stream(fmt.codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = w + pad_w, h + pad_h, fmt.pix_fmt
        stream.options = _codec_options(format, int(crf))
        time_base = fmt.time_base or 1 / rate
        stream.codec_context.time_base = time_base
        graph = _gif_palette_graph(w, h, time_base) if format == "gif" else None
        if wave is not None:
            audio_writer = _AudioWriter(container, fmt, *wave)

        def emit(frame) -> None:
            for packet in stream.encode(frame):
                container.mux(packet)

        def push(rgb: np.ndarray | None) -> None:
            if graph is None:
                if rgb is not None:
                    emit(_video_frame(rgb, done, rate, time_base, pad_w, pad_h))
                return
            graph.push(_video_frame(rgb, done, rate, time_base, 0, 0) if rgb is not None else None)
            while True:
                try:
                    emit(graph.pull())
                except (av.BlockingIOError, av.EOFError):
                    break

        frame = first
        while frame is not None:
            push(frame)
            done += 1
            frame = next(source, None)
            if frame is not None:
                _check_frame(frame, (w, h), done)
            if done % chunk == 0 or frame is None:
                if audio_writer is not None:
                    audio_writer.write_until(float(done / rate))
                if on_progress is not None:
                    on_progress(done, total)
        push(None)
        emit(None)
        if audio_writer is not None:
            audio_writer.close()
        ok = True
    finally:
        container.close()
        if not ok and os.path.exists(path):
            os.remove(path)
    audio_seconds = audio_writer.pos / audio_writer.rate if audio_writer is not None else None
    return EncodedVideo(path, format, w + pad_w, h + pad_h, done, rate, bool(pad_w or pad_h), audio_seconds)


def _video_frame(rgb: np.ndarray, index: int, rate: Fraction, time_base: Fraction, pad_w: int, pad_h: int):
    import av

    if pad_w or pad_h:
        rgb = np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")  # (H, W, 3) -> (H+ph, W+pw, 3)
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    frame.time_base = time_base
    frame.pts = round(index / rate / time_base)  # 1/fps units, or rounded ms/cs for webp/gif
    return frame


def _codec_options(format: str, crf: int) -> dict[str, str]:
    if format == "mp4":
        return {"crf": str(crf), "preset": "medium"}
    if format == "webm":
        return {"crf": str(crf), "b": "0", "row-mt": "1", "deadline": "good", "cpu-used": "4"}
    if format == "webp":
        return {"lossless": "1"} if crf == 0 else {"quality": str(100 - crf)}
    return {}


def _muxer_options(format: str) -> dict[str, str]:
    if format == "mp4":
        return {"movflags": "use_metadata_tags+faststart"}  # custom metadata keys; index at the front
    if format in ("gif", "webp"):
        return {"loop": "0"}  # loop forever
    return {}


# --- reading: a selection of a driving video, its sound, merging parts ---------------------------------------

@dataclass(frozen=True)
class VideoProbe:
    """A video file's first video stream: frame count (from the packets, nothing decoded), rate, size."""

    frames: int
    fps: Fraction
    width: int
    height: int
    has_audio: bool


def _open(source: Any):
    """av.open for reading a path or file object; a clear ValueError (without the path) when it is no video."""
    import av

    if hasattr(source, "seek"):
        source.seek(0)
    try:
        return av.open(source, mode="r")
    except (av.FFmpegError, OSError) as e:
        reason = getattr(e, "strerror", None) or type(e).__name__
        raise ValueError(f"cannot read the video ({reason}); is it a video file?") from None


def _video_stream(container):
    if not container.streams.video:
        raise ValueError("the file has no video stream")
    return container.streams.video[0]


def _stream_rate(stream) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate:
        raise ValueError("the video does not state its frame rate; re-encode it with a fixed frame rate")
    return video_fps(Fraction(rate))


def probe_video(source: Any) -> VideoProbe:
    """Frame count and rate of a file (path or file object) without decoding: the packets are counted."""
    with _open(source) as container:
        stream = _video_stream(container)
        n = sum(1 for packet in container.demux(stream) if packet.size and packet.pts is not None)
        return VideoProbe(n, _stream_rate(stream), stream.codec_context.width, stream.codec_context.height,
                          bool(container.streams.audio))


@dataclass(frozen=True)
class SelectedVideo:
    """The kept frames of a selection (uint8 (N, H, W, 3)), their frame rate and the source's rate."""

    frames: np.ndarray
    fps: Fraction
    source_fps: Fraction


def read_frames(source: Any, selection: FrameSelection, max_bytes: int | None = None,
                on_frame: Callable[[int], None] | None = None) -> SelectedVideo:
    """Decode only what `selection` keeps of a video file (path or file object) as RGB uint8 frames.

    Frames that are not kept are decoded (codecs need their references) but never converted to RGB; decoding
    stops at the cap. `max_bytes` bounds the frames kept in memory (ValueError naming frame_load_cap past it);
    `on_frame(kept)` runs after each kept frame (the glue checks for interruption there).
    """
    selection.check()
    with _open(source) as container:
        stream = _video_stream(container)
        stream.thread_type = "AUTO"
        src = _stream_rate(stream)
        kept: list[np.ndarray] = []
        size = 0

        def decoded():
            for frame in container.decode(stream):
                yield frame

        for frame in selection.select(decoded(), src):
            rgb = frame.to_ndarray(format="rgb24")                         # (H, W, 3) uint8
            rotation = getattr(frame, "rotation", 0) or 0
            if rotation:
                rgb = np.ascontiguousarray(np.rot90(rgb, k=int(round(rotation / 90)), axes=(0, 1)))
            size += rgb.nbytes * 5                                        # uint8 now + float32 IMAGE later
            if max_bytes is not None and size > max_bytes:
                raise ValueError(f"the selected frames need more than {max_bytes / 2 ** 30:.1f} GiB as images "
                                 f"(stopped at frame {len(kept) + 1}); set frame_load_cap (or select_every_nth, "
                                 "or a lower force_rate) to load fewer frames")
            kept.append(rgb)
            if on_frame is not None:
                on_frame(len(kept))
    if not kept:
        raise ValueError(f"the selection keeps no frame of this video (skip_first_frames "
                         f"{selection.skip_first_frames} is past its end?); lower skip_first_frames")
    return SelectedVideo(np.stack(kept), selection.output_fps(src), src)


def read_audio(source: Any, start: float | Fraction = 0, duration: float | Fraction | None = None,
               max_seconds: float = 4 * 3600) -> tuple[np.ndarray, int] | None:
    """The sound of a video file from `start` for `duration` seconds (None: to the end) as float32 (C, S) and its
    sample rate; None when the file has no audio stream. Sample positions come from the audio timestamps."""
    import av

    with _open(source) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        rate = int(stream.codec_context.sample_rate or stream.rate or 0)
        if rate <= 0:
            return None
        begin = round(Fraction(start) * rate)
        end = None if duration is None else begin + round(Fraction(duration) * rate)
        if (end if end is not None else begin) - begin > max_seconds * rate:
            raise ValueError(f"audio longer than {max_seconds:g} s requested")
        resampler = av.AudioResampler(format="fltp")
        parts, pos = [], None
        for packet in container.demux(stream):
            for frame in (f for raw in packet.decode() for f in resampler.resample(raw)):
                if pos is None:
                    pos = round(frame.pts * frame.time_base * rate) if frame.pts is not None else 0
                data = frame.to_ndarray()                                 # (C, n) float32
                lo, hi = max(begin - pos, 0), data.shape[1] if end is None else min(end - pos, data.shape[1])
                if hi > lo:
                    parts.append(data[:, lo:hi])
                pos += data.shape[1]
                if end is not None and pos >= end:
                    break
            if end is not None and pos is not None and pos >= end:
                break
        channels = stream.codec_context.channels or 1
        wave = np.concatenate(parts, axis=1) if parts else np.zeros((channels, 0), np.float32)
        return np.ascontiguousarray(wave, dtype=np.float32), rate


def read_metadata(path: str) -> dict[str, str]:
    """The container's metadata tags."""
    with _open(path) as container:
        return dict(container.metadata)


def iter_video_frames(path: str) -> Iterator[np.ndarray]:
    """Every frame of a video file as RGB uint8 (H, W, 3), streamed."""
    with _open(path) as container:
        for frame in container.decode(_video_stream(container)):
            yield frame.to_ndarray(format="rgb24")


def merge_videos(parts: Iterable[str], path: str, fps: float | Fraction, format: str = "mp4", crf: int = DEFAULT_CRF,
                 audio: Any = None, metadata: Mapping[str, str] | None = None,
                 on_progress: Callable[[int, int | None], None] | None = None) -> EncodedVideo:
    """Concatenate the frames of `parts` (lossless files, e.g. mkv) into one video encoded like a single render:
    the same encoder and settings see the same frames, so the result equals an unsplit encode."""

    def frames() -> Iterator[np.ndarray]:
        for part in parts:
            yield from iter_video_frames(part)

    return encode_video(frames(), path, fps, format, crf, audio, metadata=metadata, on_progress=on_progress)
