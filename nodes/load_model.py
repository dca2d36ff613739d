"""MagicPoseLoadModel: the MagicPose weights (appearance model + pose ControlNet) as a MAGICPOSE_MODEL."""
from __future__ import annotations

import logging
import os

import comfy.utils
import folder_paths

from ..magicpose_core import checkpoint, hub
from ._api import io
from .models import DTYPES, FOLDER, build_magicpose_model, writable_cache_dir
from .types import MagicPoseModelType

log = logging.getLogger("MagicPose")


def _choices() -> list[str]:
    files = folder_paths.get_filename_list(FOLDER)
    if hub.FILENAME not in files:
        files = files + [hub.FILENAME]  # selectable before it exists: download or an exact how-to
    return files


def _progress_bar():
    pbar = comfy.utils.ProgressBar(1000)

    def progress(done: int, total: int) -> None:
        pbar.update_absolute(int(1000 * done / max(total, 1)), 1000)
    return progress


def _resolve(ckpt_name: str, download: bool) -> str:
    path = folder_paths.get_full_path(FOLDER, ckpt_name)
    if path is not None:
        return path
    folder = folder_paths.get_folder_paths(FOLDER)[0]
    if ckpt_name == hub.FILENAME and download:
        log.info("MagicPose: downloading %s from Hugging Face (%s) into %s", ckpt_name, hub.REPO_ID, folder)
        return str(hub.download_official(folder, progress=_progress_bar()))
    if ckpt_name == hub.FILENAME:
        raise FileNotFoundError(hub.missing_weights_message(folder))
    raise FileNotFoundError(f"{ckpt_name} is not in {', '.join(folder_paths.get_folder_paths(FOLDER))}: "
                            f"pick another file or put it there")


class LoadModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MagicPoseLoadModel",
            display_name="MagicPose Load Model",
            category="MagicPose",
            search_aliases=["magicdance weights"],
            description=(
                "Loads the MagicPose appearance model and pose ControlNet from models/magicpose: the official "
                "model_state-110000.th (converted once to safetensors next to it, without running pickled code) "
                "or the converted .appearance / .pose_controlnet safetensors. The SD1.5 UNet, VAE and CLIP come "
                "from your own Load Checkpoint (official: the SD1.5 bundled in the same file, exported with "
                "`python -m magicpose_core.checkpoint convert ... --with-sd15`)."),
            inputs=[
                io.Combo.Input("ckpt_name", options=_choices(),
                               tooltip="File in models/magicpose: model_state-110000.th (official, 9.15 GB, "
                               "Hugging Face Boese0601/MagicDance) or its converted safetensors."),
                io.Combo.Input("weight_dtype", options=list(DTYPES), default="default",
                               tooltip="Weight precision. default: what ComfyUI picks for the device (fp16/bf16 on "
                               "GPUs, fp32 on CPU). The official code runs fp32 weights under autocast."),
                io.Boolean.Input("download", default=False,
                                 tooltip="Download the official model_state-110000.th (9.15 GB) from Hugging Face "
                                 "into models/magicpose when it is missing. Off: never touches the network."),
            ],
            outputs=[MagicPoseModelType.Output(
                display_name="MAGICPOSE_MODEL",
                tooltip="Appearance model + pose ControlNet, for MagicPose Apply / Sampler.")],
        )

    @classmethod
    def fingerprint_inputs(cls, ckpt_name: str, weight_dtype: str, download: bool):
        path = folder_paths.get_full_path(FOLDER, ckpt_name)
        return (ckpt_name, weight_dtype, os.path.getmtime(path) if path else None)

    @classmethod
    def execute(cls, ckpt_name: str, weight_dtype: str = "default", download: bool = False) -> io.NodeOutput:
        path = _resolve(ckpt_name, download)
        folder = os.path.dirname(path)
        parts = checkpoint.load_parts(path, dtype=_conversion_dtype(weight_dtype), progress=_progress_bar(),
                                      cache_dir=None if os.access(folder, os.W_OK) else writable_cache_dir())
        return io.NodeOutput(build_magicpose_model(parts, weight_dtype, name=os.path.basename(path)))


def _conversion_dtype(weight_dtype: str) -> str:
    """Precision of the cached safetensors written when an official file is converted on first use."""
    return "fp32" if weight_dtype == "fp32" else ("bf16" if weight_dtype == "bf16" else "fp16")
