"""MagicPoseCheckProvenance: is MagicPose's invisible watermark in a video or images, and is the label there?"""
from __future__ import annotations

import torch

from ..magicpose_core.media.images import iter_uint8
from ..magicpose_core.provenance.check import MAX_CHECK_FRAMES, ProvenanceReport, check_frames, check_video
from ..magicpose_core.provenance.label import find_label
from ._api import InputImpl, io, ui


def check_input(video=None, images: torch.Tensor | None = None) -> list[ProvenanceReport]:
    """Reports for a core VIDEO (the file it streams from when there is one) and/or an IMAGE batch."""
    if video is None and images is None:
        raise ValueError("MagicPose Check Provenance: connect a video (e.g. core Load Video) or images.")
    reports = []
    if video is not None:
        if isinstance(video, InputImpl.VideoFromFile):  # the file itself: its metadata holds the label
            source = video.get_stream_source()
            reports.append(check_video(source, source if isinstance(source, str) else "video"))
        else:  # frames in memory (another source would re-encode them first)
            comp = video.get_components()
            reports.append(_check_tensor(comp.images, "video", find_label(dict(comp.metadata or {}))))
    if images is not None:
        reports.append(_check_tensor(images, "images", None))
    return reports


def _check_tensor(images: torch.Tensor, source: str, label: str | None) -> ProvenanceReport:
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"MagicPose Check Provenance needs RGB images (B, H, W, 3), got {tuple(images.shape)}")
    step = max(1, images.shape[0] // MAX_CHECK_FRAMES)
    frames = list(iter_uint8(images[::step][:MAX_CHECK_FRAMES], chunk=1))
    return check_frames(frames, source, label, "frames")


class CheckProvenance(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MagicPoseCheckProvenance",
            display_name="MagicPose Check Provenance",
            category="MagicPose/provenance",
            search_aliases=["detect watermark", "ai generated"],
            description=(
                "Reads MagicPose's invisible watermark from a video or images and reports whether it is present, "
                "the decoded payload (pack and version), its bit accuracy, and the 'AI-generated with MagicPose' "
                "metadata label of a video file. Same check as 'python -m magicpose_core.provenance check FILE'."),
            inputs=[
                io.Video.Input("video", optional=True,
                               tooltip="A video, e.g. core Load Video or the output of MagicPose Frames to Video; "
                                       f"up to {MAX_CHECK_FRAMES} frames spread over it are decoded."),
                io.Image.Input("images", optional=True, tooltip="Images to check, e.g. core Load Image."),
            ],
            outputs=[
                io.Boolean.Output(display_name="present", tooltip="True when every input carries the watermark."),
                io.Float.Output(display_name="bit_accuracy",
                                tooltip="Lowest share of the 32 payload bits read correctly (0-1; 28/32 = 0.875 "
                                        "or more counts as present)."),
                io.String.Output(display_name="report", tooltip="The full report as text."),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, video=None, images: torch.Tensor | None = None) -> io.NodeOutput:
        reports = check_input(video, images)
        text = "\n".join(r.text() for r in reports)
        present = all(r.present for r in reports)
        accuracy = min(r.watermark.bit_accuracy if r.watermark is not None else 0.0 for r in reports)
        return io.NodeOutput(present, accuracy, text, ui=ui.PreviewText(text))
