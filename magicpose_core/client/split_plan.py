"""The plan of a split render (pure): which workflows can be split over servers exactly, the frame ranges, and the
workflow that renders one range.

Why a range split is exact. MagicPose renders each frame from the reference, its own pose map and the start noise;
with ``shared_noise`` (the official setting) every frame starts from the same noise, so frame i does not depend on
which other frames are rendered with it. The range is cut on the sampler's ``poses`` input, not at the video
loader: every server loads the same frame selection and extracts the poses of all of it (pose smoothing and
tracking look at neighbouring frames, so poses of a cut video would differ at the cut), and ComfyUI's cache keeps
those upstream results for that server's next range. The cut is a MagicPose Select Frames node on the pose maps
(``skip_first_frames`` = range start, ``frame_load_cap`` = range length). Range starts are multiples of the
sampler's ``frame_batch`` so that every sampler batch holds the same frames as in the single render. Parts come
back as lossless mkv (FFV1) and the final encoder (same format, crf, fps, sound as the workflow's Output) sees the
same frames as a single render's encoder, so the merged file has the same frames.

Temporal sources (``temporal_mode``). ``first``: every frame also reads frame 0's states, so a range gets the
video's first ``frame_batch`` pose maps as the sampler's ``anchor_pose`` (a second Select Frames node on the same pose
maps), rendered as hidden leading frames and dropped: its "first" anchor is the video's frame 0 and every chunk of
frames the networks see holds the same frames as in the single render, so the frames are bit-identical (one anchor
map alone would be equal only within the fp32 batch-size floor). The first range needs none. Each later range renders
``frame_batch`` extra frames. ``previous`` and ``both`` are refused: each frame's anchor is the previous rendered
frame, a chain through the whole video that a range cannot start in the middle of.

Refused with a clear message: ``shared_noise`` off (one noise generator runs over the whole batch), an Output that
is not MagicPose Frames to Video, a workflow without MagicPose Sampler, ``temporal_mode`` previous/both, and sampler
inputs named ``temporal*`` without a ``temporal_mode`` switch that are switched on (``TEMPORAL_PREFIX``).
"""
from __future__ import annotations

import copy
import itertools
import logging
import math
from dataclasses import dataclass
from typing import Any, Mapping

from ..media.frame_selection import FrameSelection
from .errors import UsageError
from .workflow import DRIVING_VIDEO_TITLE, OUTPUT_TITLE, node_label, resolve_node

log = logging.getLogger("MagicPose")

SAMPLER_CLASS = "MagicPoseSample"
FRAMES_CLASS = "MagicPoseSelectFrames"
OUTPUT_CLASS = "MagicPoseFramesToVideo"
COMPONENTS_CLASS = "GetVideoComponents"
TEMPORAL_PREFIX = "temporal"          # sampler inputs of temporal options (issue 13): refused while switched on
EXACT_TEMPORAL_MODES = ("off", "first")   # temporal_mode values a split renders exactly (first: with anchor_pose)
CUT_ID_BASE = 990000                  # ids of the inserted range-cut nodes
PART_FORMAT = "mkv"                   # lossless parts (FFV1)
RANGES_PER_SERVER = 4                 # at most this many ranges per server (balance vs per-range overhead)
MIN_RANGE_FRAMES = 16                 # ... and ranges of at least this many frames


@dataclass(frozen=True)
class FrameRange:
    """Kept frames [start, stop) of the selection."""

    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start

    @property
    def name(self) -> str:
        return f"{self.start:06d}-{self.stop - 1:06d}"

    @property
    def label(self) -> str:
        return f"frames {self.start}-{self.stop - 1}"


def plan_ranges(total: int, servers: int, align: int = 1, range_frames: int | None = None) -> list[FrameRange]:
    """Contiguous ranges covering `total` frames: about RANGES_PER_SERVER per server but at least MIN_RANGE_FRAMES
    frames each (or `range_frames` each), starts on multiples of `align` (the sampler's frame_batch)."""
    if total <= 0:
        return []
    if range_frames is not None and range_frames < 1:
        raise UsageError(f"--range-frames must be at least 1, got {range_frames}")
    if range_frames:
        size = range_frames
    else:
        count = min(max(1, servers) * RANGES_PER_SERVER, max(servers, math.ceil(total / MIN_RANGE_FRAMES)))
        size = math.ceil(total / max(1, count))
    size = max(align, math.ceil(size / align) * align)
    return [FrameRange(a, min(a + size, total)) for a in range(0, total, size)]


@dataclass(frozen=True)
class SplitPlan:
    """What the client needs to know of a workflow to split it (from `analyse`)."""

    output_id: str
    sampler_ids: tuple[str, ...]
    driving_id: str
    frames_id: str | None                 # the MagicPose Select Frames node reading the driving video
    selection: FrameSelection
    align: int                            # frame_batch (lcm over samplers)
    fps: str | float                      # "selection", "source" or a number
    audio: str | None                     # "selection", "source" or None
    format: str
    crf: int
    filename_prefix: str
    anchors: tuple[tuple[str, int], ...] = ()   # (sampler id, frame_batch) of samplers with temporal_mode first


def _link(value: Any) -> tuple[str, int] | None:
    return (str(value[0]), int(value[1])) if isinstance(value, list) and len(value) == 2 else None


def _off(value: Any) -> bool:
    return value in (False, 0, 0.0, None, "", "off", "none", "disabled")


def check_temporal(wf: Mapping, sampler_id: str) -> bool:
    """Whether the sampler's temporal sources need an anchor per range (temporal_mode first, switched on); UsageError
    for the modes a frame-range split cannot render exactly (previous, both: a chain of frames)."""
    inputs = wf[sampler_id]["inputs"]
    if "temporal_mode" not in inputs:                      # unknown temporal* options: refused while switched on
        for name, value in inputs.items():
            if name.startswith(TEMPORAL_PREFIX) and not _off(value):
                raise UsageError(f"{node_label(wf, sampler_id)}: '{name}' = {value!r} is a temporal option (frames "
                                 "depend on other frames), so a frame-range split would not equal a single render; "
                                 "switch it off or render on one server (one --server)")
        return False
    mode, strength = inputs["temporal_mode"], inputs.get("temporal_strength", 1.0)
    if _off(mode):
        return False
    if mode not in EXACT_TEMPORAL_MODES:
        why = ("each frame's anchor is the previous rendered frame" if isinstance(mode, str) else
               "it is not a value the split can read")
        raise UsageError(f"{node_label(wf, sampler_id)}: temporal_mode {mode!r} cannot be split over servers: {why}, "
                         "a chain through the whole video that a frame range cannot start in the middle of. Render "
                         "on one server (one --server), or use temporal_mode first (exact over servers)")
    if _link(inputs.get("anchor_pose")) is not None:
        raise UsageError(f"{node_label(wf, sampler_id)}: 'anchor_pose' is connected; the split render gives each "
                         "range the video's first pose maps there itself. Disconnect it to split over servers")
    return not (isinstance(strength, (int, float)) and strength == 0)


def analyse(wf: Mapping) -> SplitPlan:
    """Check that a filled workflow can be split exactly and read what the merge needs (UsageError otherwise)."""
    output_id = resolve_node(wf, OUTPUT_TITLE, "splitting over servers")
    out = wf[output_id]
    if out.get("class_type") != OUTPUT_CLASS:
        raise UsageError(f"splitting over servers needs the node titled '{OUTPUT_TITLE}' to be MagicPose Frames to "
                         f"Video ({OUTPUT_CLASS}); {node_label(wf, output_id)} is not. Use one --server for this "
                         "workflow")
    samplers = tuple(n for n, node in wf.items() if node.get("class_type") == SAMPLER_CLASS)
    if not samplers:
        raise UsageError(f"splitting over servers needs MagicPose Sampler ({SAMPLER_CLASS}) in the workflow: its "
                         "frames are independent given the shared noise. Use one --server for this workflow")
    align, anchors = 1, []
    for sid in samplers:
        inputs = wf[sid]["inputs"]
        if _link(inputs.get("poses")) is None:
            raise UsageError(f"{node_label(wf, sid)}: 'poses' must be connected to split the frames over servers")
        if inputs.get("shared_noise", True) is not True:
            raise UsageError(f"{node_label(wf, sid)}: shared_noise is off, so each frame's noise depends on its place "
                             "in the whole batch and a frame-range split would not equal a single render; set "
                             "shared_noise true (official) or render on one server")
        anchored = check_temporal(wf, sid)
        batch = inputs.get("frame_batch", 4)
        if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
            raise UsageError(f"{node_label(wf, sid)}: frame_batch must be a number (not a link) to split over servers")
        align = math.lcm(align, batch)
        if anchored:
            anchors.append((sid, batch))
    driving_id = resolve_node(wf, DRIVING_VIDEO_TITLE, "splitting over servers")
    frames_id = next((n for n, node in wf.items() if node.get("class_type") == FRAMES_CLASS
                      and _link(node["inputs"].get("video")) == (driving_id, 0)), None)
    selection = FrameSelection()
    if frames_id is not None:
        i = wf[frames_id]["inputs"]
        try:
            selection = FrameSelection(i.get("frame_load_cap", 0), i.get("skip_first_frames", 0),
                                       i.get("select_every_nth", 1), float(i.get("force_rate", 0.0))).check()
        except (TypeError, ValueError) as e:
            raise UsageError(f"{node_label(wf, frames_id)}: {e} (its controls must be numbers to split)") from None
    sources = {(frames_id, 2): "selection", (frames_id, 1): "selection"}
    for n, node in wf.items():
        if node.get("class_type") == COMPONENTS_CLASS and _link(node["inputs"].get("video")) == (driving_id, 0):
            sources[(n, 2)] = sources[(n, 1)] = "source"
    fps_in = out["inputs"].get("fps", 24.0)
    if _link(fps_in) is not None:
        fps = sources.get(_link(fps_in))
        if fps is None:
            raise UsageError(f"{node_label(wf, output_id)}: its fps comes from {node_label(wf, _link(fps_in)[0])}; "
                             "to split over servers connect it to MagicPose Select Frames' fps or type a number")
    else:
        fps = float(fps_in)
    audio_in = out["inputs"].get("audio")
    audio = sources.get(_link(audio_in)) if _link(audio_in) is not None else None
    if _link(audio_in) is not None and audio is None:
        log.warning("%s: its audio comes from %s, which a split render cannot carry over; the merged video has no "
                    "sound", node_label(wf, output_id), node_label(wf, _link(audio_in)[0]))
    return SplitPlan(output_id, samplers, driving_id, frames_id, selection, align, fps, audio,
                     str(out["inputs"].get("format", "mp4")), int(out["inputs"].get("crf", 19)),
                     str(out["inputs"].get("filename_prefix", "MagicPose/video")), tuple(anchors))


def range_workflow(wf: Mapping, plan: SplitPlan, rng: FrameRange, prefix: str) -> dict:
    """The workflow rendering only `rng`: a Select Frames cut before each sampler's poses (and, for temporal_mode
    first after the first range, the video's first frame_batch pose maps as anchor_pose), the Output writing a
    lossless mkv part to the temp folder without sound."""
    w = copy.deepcopy(dict(wf))
    anchors = dict(plan.anchors)
    ids = (str(i) for i in itertools.count(CUT_ID_BASE) if str(i) not in wf)

    def select(title: str, images: Any, start: int, count: int) -> list:
        nid = next(ids)
        w[nid] = {"class_type": FRAMES_CLASS, "_meta": {"title": title},
                  "inputs": {"frame_load_cap": count, "skip_first_frames": start, "select_every_nth": 1,
                             "force_rate": 0.0, "images": images}}
        return [nid, 0]

    for sid in plan.sampler_ids:
        poses = w[sid]["inputs"]["poses"]
        w[sid]["inputs"]["poses"] = select(f"Range {rng.label}", poses, rng.start, len(rng))
        if sid in anchors and rng.start > 0:
            w[sid]["inputs"]["anchor_pose"] = select("Anchor frames (the video's first)", poses, 0, anchors[sid])
    out = w[plan.output_id]["inputs"]
    out.update(format=PART_FORMAT, save_output=False, filename_prefix=f"MagicPose/parts/{prefix}_{rng.name}")
    out.pop("audio", None)
    return w

