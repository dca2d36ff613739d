"""The two trained MagicPose networks for the ComfyUI loader (`load_parts`), from whichever form the user has:

- the official checkpoint (`model_state-110000.th`, HF `Boese0601/MagicDance`; MagicPose, ICML 2024,
  arXiv 2311.12052), converted once and cached next to it (convert.py);
- a converted part, its sibling found by name;
- a folder of diffusers-layout weights (renamed through keymap.py).

Every form is validated exactly (validate.py) before it is returned.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from . import hub
from . import layout as L
from .convert import Progress, convert_cached, part_filename
from .describe import describe, has_prefix
from .errors import HINT, CheckpointError
from .safe_load import read_safetensors, safetensors_info
from .validate import check_pair, normalize_appearance, normalize_pose_controlnet

log = logging.getLogger("MagicPose")

OFFICIAL_SUFFIXES = (".th", ".ckpt", ".pth", ".pt")
PART_RE = re.compile(r"^(?P<stem>.+)\.(?P<part>appearance|pose_controlnet|sd15)(?:\.(?P<dtype>fp16|bf16|fp32))?"
                     r"\.safetensors$")
APPEARANCE_DIRS = ("appearance_control_model", "appearance")          # diffusers-layout folders
POSE_DIRS = ("pose_control_model", "pose_controlnet", "controlnet")


@dataclass
class MagicPoseParts:
    """What the ComfyUI loader needs: the two trained networks, and where they came from."""

    appearance: dict[str, torch.Tensor]        # ldm UNet keys, no out.* (682 for real SD1.5)
    pose_controlnet: dict[str, torch.Tensor]   # `control_model.` ControlNet 1.1 keys (340)
    source: Path
    metadata: dict[str, str] = field(default_factory=dict)


def _parts(app_path: Path, pose_path: Path, source: Path) -> MagicPoseParts:
    app, app_meta = read_safetensors(app_path)
    pose, pose_meta = read_safetensors(pose_path)
    appearance = normalize_appearance(app, app_path)
    pose_cn = normalize_pose_controlnet(pose, pose_path)
    check_pair(appearance, pose_cn, app_path, pose_path)
    sa, sp = app_meta.get("source_sha256"), pose_meta.get("source_sha256")
    if sa and sp and sa != sp:
        log.warning("MagicPose: %s and %s were converted from different files", app_path.name, pose_path.name)
    return MagicPoseParts(appearance, pose_cn, source=source, metadata=dict(app_meta))


def _find_sibling(path: Path, stem: str, part: str, dtype: str | None, search_dirs: Sequence[Path]) -> Path | None:
    names = ([part_filename(stem, part, dtype)] if dtype else []) + [f"{stem}.{part}.safetensors"]
    for d in (path.parent, *search_dirs):
        for n in names:
            if (Path(d) / n).is_file():
                return Path(d) / n
        others = sorted(Path(d).glob(f"{_glob_escape(stem)}.{part}.*.safetensors"))
        others = [o for o in others if PART_RE.match(o.name) and PART_RE.match(o.name)["stem"] == stem]
        if others:
            return others[0]
    return None


def _glob_escape(s: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", s)


def _load_part_pair(path: Path, m: re.Match, search_dirs: Sequence[Path]) -> MagicPoseParts:
    stem, part, dtype = m["stem"], m["part"], m["dtype"]
    if part == "sd15":
        raise CheckpointError(f"{path.name} is the SD1.5 checkpoint bundled in the MagicPose file: load it with "
                              f"Load Checkpoint (models/checkpoints). Give MagicPose the "
                              f"{part_filename(stem, 'appearance', dtype or 'fp16')} file instead.")
    other = "pose_controlnet" if part == "appearance" else "appearance"
    sibling = _find_sibling(path, stem, other, dtype, search_dirs)
    if sibling is None:
        want = part_filename(stem, other, dtype) if dtype else f"{stem}.{other}.safetensors"
        where = ", ".join(str(d) for d in (path.parent, *search_dirs))
        raise CheckpointError(f"{path.name} is the {part} part of a converted MagicPose checkpoint, but its "
                              f"sibling {want} was not found (looked in {where}). Put both parts in the same "
                              f"folder, or convert {hub.FILENAME} again.")
    app_path, pose_path = (path, sibling) if part == "appearance" else (sibling, path)
    return _parts(app_path, pose_path, source=path)


def _diffusers_file(folder: Path) -> Path | None:
    for n in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors"):
        if (folder / n).is_file():
            return folder / n
    found = sorted(folder.glob("*.safetensors"))
    return found[0] if len(found) == 1 else None


def _load_diffusers_dir(path: Path) -> MagicPoseParts:
    """A folder with diffusers-layout `appearance_control_model/` and `pose_control_model/` subfolders."""
    def pick(names: Sequence[str]) -> Path | None:
        for n in names:
            if (path / n).is_dir() and (f := _diffusers_file(path / n)) is not None:
                return f
        return None

    app, pose = pick(APPEARANCE_DIRS), pick(POSE_DIRS)
    if app is None or pose is None:
        raise CheckpointError(f"{path.name}: a MagicPose weights folder needs an appearance subfolder "
                              f"({' or '.join(APPEARANCE_DIRS)}) and a pose subfolder ({' or '.join(POSE_DIRS)}), "
                              f"each with diffusion_pytorch_model.safetensors. {HINT}")
    parts = _parts(app, pose, source=path)
    parts.metadata.setdefault("layout", "diffusers")
    return parts


def _load_official(path: Path, dtype: str, cache_dir: str | os.PathLike | None,
                   progress: Progress | None) -> MagicPoseParts:
    app_path, pose_path = convert_cached(path, dtype, Path(cache_dir) if cache_dir else None, progress)
    return _parts(app_path, pose_path, source=path)


def load_parts(path: str | os.PathLike, dtype: str = "fp16", cache_dir: str | os.PathLike | None = None,
               progress: Progress | None = None, search_dirs: Sequence[str | os.PathLike] = ()) -> MagicPoseParts:
    """The appearance UNet and pose ControlNet for the ComfyUI loader.

    Args:
        path: one of
            - the official checkpoint (.th/.ckpt/.pth/.pt, or .safetensors with the same keys): converted to
              `dtype` parts on first use (one log line), cached next to it (or in `cache_dir` when that folder
              is not writable) and reused while the source's name, size and mtime match the parts' metadata;
            - a converted part `STEM.appearance[.DTYPE].safetensors` or `STEM.pose_controlnet[.DTYPE].safetensors`
              (ldm or diffusers naming); the sibling part is looked up by name next to it, then in `search_dirs`;
            - a folder of diffusers-layout weights (`appearance_control_model/`, `pose_control_model/`).
        dtype: dtype of parts converted from an official file; other inputs keep their stored dtype.
        cache_dir: where to cache converted parts when the official file's folder is read-only.
        progress: optional callable(done_bytes, total_bytes) for a conversion.
        search_dirs: more folders to look for a converted part's sibling in (e.g. models/controlnet).
    """
    path = Path(path)
    if path.is_dir():
        return _load_diffusers_dir(path)
    if not path.is_file():
        raise CheckpointError(f"{path.name}: no such file. " + hub.missing_weights_message(path.parent))
    if m := PART_RE.match(path.name):
        return _load_part_pair(path, m, [Path(d) for d in search_dirs])
    if path.suffix.lower() in OFFICIAL_SUFFIXES:
        return _load_official(path, dtype, cache_dir, progress)
    shapes = safetensors_info(path)[0]
    if has_prefix(shapes, L.ACM_PREFIX) and has_prefix(shapes, L.POSE_PREFIX):
        return _load_official(path, dtype, cache_dir, progress)
    raise CheckpointError(
        f"{path.name}: not the official MagicPose checkpoint and not named like a converted part; it looks like "
        f"{describe(shapes)}. Converted parts are named STEM.appearance.DTYPE.safetensors and "
        f"STEM.pose_controlnet.DTYPE.safetensors and sit side by side. {HINT}")
