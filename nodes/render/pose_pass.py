"""The pose pass of a streaming render: every kept frame of the driving video is decoded (scaled at decode time
above the short-side limit), the detector runs on it and only its keypoints are kept; then the whole track is
smoothed, gap-filled and retargeted at once (magicpose_core.pose.pipeline.process_sequence), exactly as MagicPose
Extract Pose does for a batch. Keypoints are a few kB per frame against ~3 MB for an IMAGE frame at 512², and
processing the whole track at once is what makes windows join exactly: smoothing, gap filling across window
borders and the retargeting calibration (which measures the driver over the whole clip) see every frame.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable

import comfy.model_management

from ...magicpose_core.media.frame_selection import FrameSelection
from ...magicpose_core.media.video_stream import stream_frames
from ...magicpose_core.pose.keypoints import PoseFrame
from ...magicpose_core.pose.pipeline import ExtractSettings, PoseSequence, process_sequence, report_missing
from ..extract_pose import reference_for_retarget
from ..pose_detectors import announce, describe, get_detector

log = logging.getLogger("MagicPose")


@dataclasses.dataclass
class ClipPoses:
    sequence: PoseSequence
    settings: ExtractSettings       # with the detector's threshold
    frame_size: tuple[int, int]     # (width, height) the frames were decoded at


def clip_poses(source: Any, selection: FrameSelection, expected: int, detector: str, allow_download: bool,
               settings: ExtractSettings, reference, short_side_limit: int,
               on_frame: Callable[[int], None] | None = None) -> ClipPoses:
    """Detect, then process the whole track; ``expected`` (the probed frame count) decides tracking mode as
    Extract Pose's batch size does."""
    det = get_detector(detector, allow_download, expected > 1 and settings.smoothing != "off")
    announce(describe(detector))
    det.reset()
    raw: list[PoseFrame] = []
    size = (0, 0)
    for rgb in stream_frames(source, selection, short_side_limit):                # (H, W, 3) uint8, one at a time
        comfy.model_management.throw_exception_if_processing_interrupted()
        size = (int(rgb.shape[1]), int(rgb.shape[0]))
        raw.append(det.detect_raw(rgb))
        if on_frame is not None:
            on_frame(len(raw))
    if not raw:
        raise ValueError("MagicPose Render Video: the frame selection keeps no frame of this video; lower "
                         "skip_first_frames")
    settings = dataclasses.replace(settings, threshold=det.threshold)
    ref_person, _ = reference_for_retarget(reference, settings, detector, allow_download)
    seq = process_sequence(raw, settings, ref_person)
    report_missing(seq, settings.on_missing, "frames")
    return ClipPoses(seq, settings, size)
