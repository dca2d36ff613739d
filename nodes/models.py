"""Model folders and model objects: the `magicpose` folder, the MAGICPOSE_MODEL bundle and its loading."""
from __future__ import annotations

import logging
import os

import folder_paths

log = logging.getLogger("MagicPose")

FOLDER = "magicpose"
EXTENSIONS = {".safetensors", ".sft", ".th", ".ckpt", ".pth", ".pt"}


def register_model_folder() -> None:
    """Register models/magicpose (extra_model_paths.yaml entries named `magicpose` are kept) with the
    converted safetensors and the official .th/.ckpt/.pth extensions."""
    default = os.path.join(folder_paths.models_dir, FOLDER)
    folder_paths.add_model_folder_path(FOLDER, default)
    paths, _ = folder_paths.folder_names_and_paths[FOLDER]
    folder_paths.folder_names_and_paths[FOLDER] = (paths, set(EXTENSIONS))
