"""MagicPoseLoadModel: the MagicPose weights (appearance model + pose ControlNet) as a MAGICPOSE_MODEL."""
from __future__ import annotations

import logging
import os

import comfy.utils
import folder_paths

from ..magicpose_core.weights import hub
from ..magicpose_core.weights.parts import load_parts
from ._api import io
from .models import DTYPE_NAMES, DTYPES, FOLDER, build_magicpose_model, resolve_dtype, writable_cache_dir
from .types import MagicPoseModelType

log = logging.getLogger("MagicPose")


def _choices() -> list[str]:
    """The files in models/magicpose, plus an explicit download entry while the official file is missing (the
    frontend's missing-models check sees a workflow's file name as missing because it is not listed)."""
    files = folder_paths.get_filename_list(FOLDER)
    if hub.FILENAME in files or hub.LOCAL_FILENAME in files:
        return files
    return files + [hub.download_choice()]


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
    if ckpt_name == hub.download_choice() and download:
        log.info("MagicPose: downloading %s from Hugging Face (%s) into %s", hub.FILENAME, hub.REPO_ID, folder)
        return str(hub.download_official(folder, progress=_progress_bar()))
    if ckpt_name == hub.download_choice():
        raise FileNotFoundError(f"'{ckpt_name}' downloads the official weights only with the download option on. "
                                + hub.missing_weights_message())
    if ckpt_name in (hub.FILENAME, hub.LOCAL_FILENAME):
        raise FileNotFoundError(hub.missing_weights_message())
    raise FileNotFoundError(f"{ckpt_name} is not in models/magicpose: pick another file or put it there")


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
                "from your own Load Checkpoint (official: the SD1.5 bundled in the same file, exported by "
                f"{hub.convert_instructions()})."),
            inputs=[
                io.Combo.Input("ckpt_name", options=_choices(),
                               tooltip=f"File in models/magicpose: {hub.LOCAL_FILENAME} (the official "
                               f"{hub.FILENAME}, 9.15 GB, Hugging Face {hub.REPO_ID}; either name) or its converted "
                               f"safetensors. '{hub.download_choice()}' is listed while it is missing."),
                io.Combo.Input("weight_dtype", options=list(DTYPES), default="default",
                               tooltip="Weight precision. default: fp32 on the CPU, the device's usual half type on "
                               "a GPU (what ComfyUI picks for an SD1.5 UNet there: fp16, or bf16 where fp16 is not "
                               "usable). The official code runs fp32 weights under autocast."),
                io.Boolean.Input("download", default=False,
                                 tooltip=f"With ckpt_name '{hub.download_choice()}': download the official "
                                 f"{hub.FILENAME} (9.15 GB) from Hugging Face into models/magicpose as "
                                 f"{hub.LOCAL_FILENAME}. Off: never touches the network."),
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
        parts = load_parts(path, dtype=_conversion_dtype(weight_dtype), progress=_progress_bar(),
                                      cache_dir=None if os.access(folder, os.W_OK) else writable_cache_dir())
        return io.NodeOutput(build_magicpose_model(parts, weight_dtype, name=os.path.basename(path)))


def _conversion_dtype(weight_dtype: str) -> str:
    """Precision of the cached safetensors written when an official file is converted on first use: the precision
    the weights are used in (fp32 for `default` on the CPU, so nothing is rounded there)."""
    return DTYPE_NAMES[resolve_dtype(weight_dtype)]
