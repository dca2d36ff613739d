"""MagicPoseExtractPose: frames or POSE_KEYPOINT -> openpose_full pose maps (IMAGE) + POSE_KEYPOINT, with
smoothing and retargeting onto the reference person. Logic: magicpose_core.pose.pipeline; detectors:
nodes.pose_detectors."""
from __future__ import annotations

import dataclasses
import logging

import comfy.model_management
import comfy.utils
import torch

from ..magicpose_core.media.geometry import FIT_MODES, fit_geometry, fit_images, model_size_problem
from ..magicpose_core.model.constants import OFFICIAL_SIZE
from ..magicpose_core.pose.keypoints import (
    COORDINATE_MODES,
    READ_THRESHOLD,
    PoseFrame,
    frames_to_pose_keypoint,
    pose_keypoint_to_frames,
    unknown_keys,
)
from ..magicpose_core.pose.pipeline import (
    ON_MISSING,
    OUTPUT_COORDINATES,
    ExtractSettings,
    carry_extras,
    process_sequence,
    reference_person,
    render_sequence,
    report_missing,
)
from ..magicpose_core.pose.render import RENDER_CANVASES, overlay_pose
from ..magicpose_core.pose.retarget import RETARGET_MODES
from ..magicpose_core.pose.smoothing import PERSON_MODES, SMOOTHING_PRESETS
from ._api import io, ui
from .pose_detectors import DETECTOR_CHOICES, detect_frames, get_detector
from .types import MagicPoseReferenceType, PoseKeypointType

log = logging.getLogger("MagicPose")
PREVIEW_FRAMES = 8


def reference_for_retarget(reference, settings: ExtractSettings, detector: str, allow_download: bool):
    """(reference Person in output pixels or None, reference image (H, W, 3) for the preview or None)."""
    if reference is None:
        return None, None
    if isinstance(reference, torch.Tensor):
        image = reference[:1]
        frame = detect_frames(image, detector, allow_download)[0]
    else:
        image = getattr(reference, "image", None)
        frame = getattr(reference, "keypoints", None)
        if frame is None and image is not None:
            frame = detect_frames(image[:1], detector, allow_download)[0]
    if frame is not None and not isinstance(frame, PoseFrame) and hasattr(frame, "people"):
        frame = PoseFrame(frame.width, frame.height, list(frame.people))
    person = reference_person(frame, settings.width, settings.height, settings.fit)
    preview = None
    if isinstance(image, torch.Tensor) and image.ndim == 4 and image.shape[-1] >= 3:
        g = fit_geometry(image.shape[2], image.shape[1], settings.width, settings.height, settings.fit)
        preview = fit_images(image[:1, :, :, :3].float().cpu(), g)[0]  # the reference as the maps are framed
    return person, preview


def extract_pose(images, pose_keypoint, detector: str, settings: ExtractSettings, reference=None,
                 allow_download: bool = False, coordinates: str = "auto"):
    """The node's work: (pose maps (B, H, W, 3), POSE_KEYPOINT list, preview images).

    ``coordinates`` is how ``pose_keypoint`` is read (keypoints.pose_keypoint_to_frames); its points count from
    confidence 0.3 (keypoints.READ_THRESHOLD). Unknown top-level keys of its frames are written back.
    """
    if (images is None) == (pose_keypoint is None):
        raise ValueError("MagicPose Extract Pose: connect exactly one of `images` (frames to detect poses in) or "
                         "`pose_keypoint` (keypoints from a POSE_KEYPOINT node)")
    threshold, extras = 0.0, None
    if images is not None:
        n = int(images.shape[0]) if isinstance(images, torch.Tensor) and images.ndim == 4 else 0
        if n == 0:
            raise ValueError("MagicPose Extract Pose: `images` is empty or not an IMAGE batch (B, H, W, 3)")
        pbar = comfy.utils.ProgressBar(2 * n)
        video = n > 1 and settings.smoothing != "off"
        threshold = get_detector(detector, allow_download, video).threshold
        raw = detect_frames(images, detector, allow_download, raw=True, video=video,
                            on_frame=lambda i: pbar.update_absolute(i + 1))
    else:
        raw = pose_keypoint_to_frames(pose_keypoint, coordinates)
        n = len(raw)
        if n == 0:
            raise ValueError("MagicPose Extract Pose: `pose_keypoint` holds no frames")
        threshold, extras = READ_THRESHOLD, unknown_keys(pose_keypoint)
        pbar = comfy.utils.ProgressBar(2 * n)
    settings = dataclasses.replace(settings, threshold=threshold)
    ref_person, ref_image = reference_for_retarget(reference, settings, detector, allow_download)
    seq = process_sequence(raw, settings, ref_person)
    report_missing(seq, settings.on_missing, "frames" if images is not None else "pose_keypoint")

    def step(i: int) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        pbar.update_absolute(n + i + 1)

    maps = render_sequence(seq, settings, on_frame=step)
    keypoints = frames_to_pose_keypoint(seq.output, normalized=settings.output_coordinates == "normalized",
                                        binary_confidence=True,
                                        extras=None if extras is None else carry_extras(extras, seq, settings))
    idx = torch.linspace(0, max(n - 1, 0), min(n, PREVIEW_FRAMES)).round().long().unique()
    preview = maps[idx]
    if ref_image is not None and settings.retarget != "none" and n:
        preview = torch.cat([overlay_pose(ref_image, maps[0])[None], preview])  # retargeted pose on the reference
    return maps, keypoints, preview


class ExtractPose(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MagicPoseExtractPose",
            display_name="MagicPose Extract Pose",
            category="MagicPose",
            search_aliases=["openpose", "dwpose", "skeleton"],
            description=(
                "Detects the dancer in each frame (or reads POSE_KEYPOINT) and draws ControlNet 1.1 openpose_full "
                "pose maps, the exact style MagicPose's pose ControlNet was trained on: drawn at the frame's own "
                "resolution, then cropped/letterboxed like the reference. Optional One Euro smoothing against "
                "jitter and retargeting of the body proportions and facial expression onto the reference person."),
            inputs=[
                io.Image.Input("images", optional=True,
                               tooltip="Driving frames (IMAGE batch), e.g. Load Video -> Get Video Components. "
                                       "Connect this or pose_keypoint."),
                PoseKeypointType.Input("pose_keypoint", optional=True,
                                       tooltip="Keypoints instead of frames (POSE_KEYPOINT from comfyui_controlnet_aux "
                                               "DWPose/OpenPose, core SDPose or pose editors; 0-1 or pixel "
                                               "coordinates). Points count from confidence 0.3; hand and face "
                                               "points at pixel x or y < 1 (OpenPose's -1/W marker) are missing."),
                io.Combo.Input("detector", options=DETECTOR_CHOICES, default="auto",
                               tooltip="auto: DWPose when its ONNX files are found (models/magicpose/dwpose, "
                                       "comfyui_controlnet_aux's ckpts) or can be downloaded once (~350 MB), else "
                                       "MediaPipe if installed; the node shows which one ran. dwpose: best quality, "
                                       "ONNX weights in models/magicpose/dwpose. mediapipe: offline, needs the "
                                       "optional mediapipe 0.10.21 package. openpose: MagicPose's training detector, "
                                       "weights in models/magicpose/openpose (CMU licence, non-commercial)."),
                io.Boolean.Input("body", default=True, tooltip="Draw the 18-point body. Official: on."),
                io.Boolean.Input("hands", default=True, tooltip="Draw both hands. Official: on."),
                io.Boolean.Input("face", default=True, tooltip="Draw the 70 face points (expression). Official: on."),
                io.Combo.Input("person", options=list(PERSON_MODES), default="largest",
                               tooltip="Which person to follow: the largest, the person_index-th from the left, or "
                                       "all (no smoothing or retargeting). MagicPose was trained on one person."),
                io.Int.Input("person_index", default=0, min=0, max=64, optional=True, advanced=True,
                             tooltip="With person = index: 0 = leftmost person in the first frame."),
                io.Combo.Input("smoothing", options=list(SMOOTHING_PRESETS), default="medium",
                               tooltip="Temporal stabilisation for videos: One Euro filter, confidence hysteresis "
                                       "(no blinking limbs) and short-gap filling. off = raw per-frame detections."),
                io.Float.Input("fps", default=30.0, min=1.0, max=240.0, step=0.01,
                               tooltip="Frame rate of the frames (the smoothing time base), e.g. from Get Video "
                                       "Components."),
                io.Combo.Input("retarget", options=list(RETARGET_MODES), default="none",
                               tooltip="Fit the driving skeleton to the reference person: global (scale + offset), "
                                       "per_bone (the reference's bone lengths) or none. Needs a reference."),
                io.Float.Input("strength", default=1.0, min=0.0, max=1.0, step=0.05,
                               tooltip="Retargeting blend: 0 = driving proportions, 1 = fully retargeted."),
                io.Boolean.Input("face_transfer", default=True,
                                 tooltip="With retargeting: keep the reference's face shape (box, eye distance, "
                                         "jaw) and take only the expression (eyes, brows, mouth) from the driver."),
                io.MultiType.Input("reference", [MagicPoseReferenceType, io.Image], optional=True,
                                   tooltip="Reference person for retargeting: MagicPose Load Reference output (its "
                                           "keypoints are used) or an IMAGE (detected with the detector above)."),
                io.Int.Input("width", default=OFFICIAL_SIZE, min=64, max=4096, step=8,
                             tooltip=f"Pose map width in pixels. Official: {OFFICIAL_SIZE}."),
                io.Int.Input("height", default=OFFICIAL_SIZE, min=64, max=4096, step=8,
                             tooltip=f"Pose map height in pixels. Official: {OFFICIAL_SIZE}."),
                io.Combo.Input("fit", options=list(FIT_MODES), default="center_crop",
                               tooltip="How frames become width x height; use the same as the reference. "
                                       "center_crop = official; letterbox pads black; stretch ignores aspect."),
                io.Combo.Input("render_canvas", options=list(RENDER_CANVASES), default="source", optional=True,
                               advanced=True,
                               tooltip="Where lines are drawn: source = at the frame's resolution, then fitted "
                                       "(official); training = scaled to the training maps' 604 px stroke size; "
                                       "output = at the output size (thicker lines)."),
                io.Boolean.Input("allow_download", default=False, optional=True, advanced=True,
                                 tooltip="Download missing dwpose/openpose weights from Hugging Face into "
                                         "models/magicpose/<detector>/ when that detector is picked by name "
                                         "(honours HF_HUB_OFFLINE). auto downloads DWPose regardless; "
                                         "HF_HUB_OFFLINE=1 stops that."),
                io.Combo.Input("on_missing", options=list(ON_MISSING), default="warn", optional=True, advanced=True,
                               tooltip="A frame with no person: warn (one log line, empty pose map; short gaps "
                                       "are bridged by smoothing) or error. No person in any frame is always an "
                                       "error."),
                io.Combo.Input("coordinates", options=list(COORDINATE_MODES), default="auto", optional=True,
                               tooltip="How pose_keypoint coordinates are read: auto decides per part as "
                                       "comfyui_controlnet_aux does (0-1 when all its points lie within [-1, 1]), "
                                       "else per frame (0-1 when most points lie within 25 % of the 0-1 square, "
                                       "so points just past the edge do not flip it); normalized = 0-1 of the "
                                       "canvas, pixels = canvas pixels."),
                io.Combo.Input("output_coordinates", options=list(OUTPUT_COORDINATES), default="pixels",
                               optional=True, advanced=True,
                               tooltip="pose_keypoint output: pixels of the width x height canvas (as "
                                       "comfyui_controlnet_aux DWPose and core SDPose write; both draw it) or "
                                       "normalized 0-1 (as controlnet_aux OpenPose; off-canvas points dropped)."),
            ],
            outputs=[
                io.Image.Output(display_name="pose_maps",
                                tooltip="openpose_full pose maps (B, height, width, 3), black background."),
                PoseKeypointType.Output(display_name="pose_keypoint",
                                        tooltip="The drawn keypoints as POSE_KEYPOINT on the width x height canvas "
                                                "(see output_coordinates), every part as a full list."),
            ],
        )

    @classmethod
    def validate_inputs(cls, width: int | None = None, height: int | None = None) -> bool | str:
        if width is None or height is None:  # linked: checked in execute
            return True
        problem = model_size_problem(width, height)
        return True if problem is None else f"MagicPose Extract Pose: {problem}"

    @classmethod
    def execute(cls, detector: str, body: bool, hands: bool, face: bool, person: str, smoothing: str, fps: float,
                retarget: str, strength: float, face_transfer: bool, width: int, height: int, fit: str,
                images: torch.Tensor | None = None, pose_keypoint: list | None = None, reference=None,
                person_index: int = 0, render_canvas: str = "source", allow_download: bool = False,
                on_missing: str = "warn", coordinates: str = "auto",
                output_coordinates: str = "pixels") -> io.NodeOutput:
        settings = ExtractSettings(width=width, height=height, fit=fit, body=body, hands=hands, face=face,
                                   person=person, person_index=person_index, smoothing=smoothing, fps=fps,
                                   retarget=retarget, strength=strength, face_transfer=face_transfer,
                                   render_canvas=render_canvas, on_missing=on_missing,
                                   output_coordinates=output_coordinates)
        maps, keypoints, preview = extract_pose(images, pose_keypoint, detector, settings, reference, allow_download,
                                                coordinates)
        return io.NodeOutput(maps, keypoints, ui=ui.PreviewImage(preview, cls=cls))
