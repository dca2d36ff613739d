"""Converting the official MagicPose checkpoint: the split into parts, the streaming safetensors writer, and the
convert-on-first-use cache.

`model_state-110000.th` (MagicPose, ICML 2024, arXiv 2311.12052; Boese0601/MagicDance@a515a1f) is split
(docs/method.md §11.3) into the appearance UNet (ldm keys, no `out.*`, no `input_hint_block`), the pose
ControlNet (`control_model.` keys, the ControlNet 1.1 layout ComfyUI loads) and optionally the bundled SD1.5 as an
ordinary checkpoint (`position_ids` dropped). Each part is written as safetensors tensor by tensor (header first,
then each tensor's bytes, cast one at a time; safetensors' `save_file` takes the whole part, so every cast copy
would be in memory at once), so converting the 9.15 GB file needs about the source size in (mostly file-backed)
memory.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import torch

from . import hub
from . import layout as L
from .describe import compare_layout, shapes_of
from .errors import CheckpointError
from .safe_load import safetensors_info
from .validate import load_official

log = logging.getLogger("MagicPose")

CONVERTER_VERSION = "1"
FORMAT = "magicpose"
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}

_ST_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
              torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
              torch.bool: "BOOL"}

Progress = Callable[[int, int], None]


@dataclass
class SplitParts:
    """The official state dict split for ComfyUI (tensors are shared with the source, not copied)."""

    appearance: dict[str, torch.Tensor]        # ldm UNet keys without out.*: 682 tensors for real SD1.5
    pose_controlnet: dict[str, torch.Tensor]   # `control_model.` + ldm ControlNet keys: 340 tensors
    sd15: dict[str, torch.Tensor]              # model.diffusion_model. + first_stage_model. + cond_stage_model...


# --------------------------------------------------------------------------------------------------
# splitting


def _strip(sd: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def split_official(sd: Mapping[str, torch.Tensor]) -> SplitParts:
    """Split an official state dict (docs/method.md §11.3), asserting each part's exact count."""
    cfg = L.infer_unet_config(shapes_of(sd), L.MAIN_PREFIX) or L.SD15_UNET
    appearance = {k: v for k, v in _strip(sd, L.ACM_PREFIX).items() if not k.startswith("input_hint_block.")}
    pose = {L.CONTROL_PREFIX + k: v for k, v in _strip(sd, L.POSE_PREFIX).items()}
    sd15 = {k: v for k, v in sd.items()
            if k.startswith((L.MAIN_PREFIX, L.VAE_PREFIX, L.CLIP_PREFIX)) and not L.is_integer_key(k)}
    dec = L.infer_vae_decoder_channels(shapes_of(sd), L.VAE_PREFIX) or L.VAE_ENCODER_WIDTH
    for name, part, expected in (
        ("appearance", appearance, L.appearance_layout(cfg, with_hint_block=False)),
        ("pose_controlnet", pose, L.prefixed(L.CONTROL_PREFIX, L.controlnet_layout(cfg))),
        ("sd15", sd15, L.sd15_checkpoint_layout(cfg, dec)),
    ):
        diff = compare_layout(shapes_of(part), expected)
        if diff:
            raise CheckpointError(f"split: the {name} part has {len(part)} tensors, expected {len(expected)}; "
                                  f"{diff.summary()}")
    return SplitParts(appearance, pose, sd15)


# --------------------------------------------------------------------------------------------------
# streaming safetensors writer


def _nbytes(t: torch.Tensor, dtype: torch.dtype | None) -> int:
    dt = dtype if dtype is not None and t.is_floating_point() else t.dtype
    return t.numel() * dt.itemsize


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str],
                      dtype: torch.dtype | None = None, on_bytes: Callable[[int], None] | None = None) -> int:
    """Write a safetensors file one tensor at a time (header, then each tensor's bytes), casting floating
    tensors to `dtype`; atomic (temporary name, then rename). Returns the file size."""
    path = Path(path)
    header: dict[str, object] = {"__metadata__": {str(k): str(v) for k, v in metadata.items()}}
    offset = 0
    for k, t in tensors.items():
        dt = dtype if dtype is not None and t.is_floating_point() else t.dtype
        n = _nbytes(t, dtype)
        header[k] = {"dtype": _ST_DTYPES[dt], "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the data section starts 8-byte aligned
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(len(blob).to_bytes(8, "little"))
            f.write(blob)
            for t in tensors.values():
                dt = dtype if dtype is not None and t.is_floating_point() else t.dtype
                data = t.detach().to(device="cpu", dtype=dt).contiguous()  # a copy only when casting
                f.write(data.reshape(-1).view(torch.uint8).numpy())        # (numel * itemsize,) raw bytes
                if on_bytes is not None:
                    on_bytes(data.numel() * dt.itemsize)
                del data
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return 8 + len(blob) + offset


# --------------------------------------------------------------------------------------------------
# conversion


def part_filename(stem: str, part: str, dtype: str) -> str:
    """`{stem}.{part}.{dtype}.safetensors`, e.g. model_state-110000.appearance.fp16.safetensors."""
    return f"{stem}.{part}.{dtype}.safetensors"


def _torch_dtype(dtype: str) -> torch.dtype:
    if dtype not in DTYPES:
        raise CheckpointError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


def _sha256(path: Path, on_bytes: Callable[[int], None] | None = None, chunk: int = 16 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
            if on_bytes is not None:
                on_bytes(len(block))
    return h.hexdigest()


def convert(src: str | os.PathLike, outdir: str | os.PathLike, dtype: str = "fp16", with_sd15: bool = False,
            progress: Progress | None = None, sd15_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """Convert the official checkpoint into safetensors parts in `outdir`.

    Args:
        src: the official `.th` (or .ckpt/.pth/.pt/.safetensors with the same layout).
        outdir: output folder (created).
        dtype: "fp16", "bf16" or "fp32" for the floating tensors.
        with_sd15: also write the bundled SD1.5 as an ordinary checkpoint.
        progress: optional callable(done_bytes, total_bytes): source bytes hashed + part bytes written.
        sd15_dir: where the SD1.5 checkpoint goes (default: `outdir`).
    Returns:
        {"appearance": path, "pose_controlnet": path[, "sd15": path]}.
    """
    src, outdir = Path(src), Path(outdir)
    tdtype = _torch_dtype(dtype)
    sd = load_official(src)
    stat = src.stat()
    split = split_official(sd)
    chosen = {"appearance": split.appearance, "pose_controlnet": split.pose_controlnet}
    if with_sd15:
        chosen["sd15"] = split.sd15
    out_bytes = sum(_nbytes(t, tdtype) for part in chosen.values() for t in part.values())
    outdir.mkdir(parents=True, exist_ok=True)
    sd15_dir = Path(sd15_dir) if sd15_dir is not None else outdir
    if with_sd15:
        sd15_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(outdir).free
    if free < out_bytes + (64 << 20):
        raise CheckpointError(f"not enough free disk space in {outdir}: {out_bytes / 1e9:.2f} GB needed, "
                              f"{free / 1e9:.2f} GB free")
    total, done = stat.st_size + out_bytes, 0

    def on_bytes(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    sha = _sha256(src, on_bytes)
    base = {"format": FORMAT, "source_name": src.name, "source_sha256": sha, "source_size": str(stat.st_size),
            "source_mtime_ns": str(stat.st_mtime_ns), "converter_version": CONVERTER_VERSION, "dtype": dtype}
    paths: dict[str, Path] = {}
    for part, tensors in chosen.items():
        path = (sd15_dir if part == "sd15" else outdir) / part_filename(src.stem, part, dtype)
        write_safetensors(path, tensors, {**base, "part": part, "tensors": str(len(tensors))}, tdtype, on_bytes)
        paths[part] = path
    log.debug("MagicPose: converted %s -> %s", src.name, ", ".join(p.name for p in paths.values()))
    return paths


# --------------------------------------------------------------------------------------------------
# convert on first use, reuse while the source is unchanged


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=folder, prefix=".magicpose-write-test-")
    except OSError:
        return False
    os.close(fd)
    os.unlink(name)
    return True


def _cache_valid(path: Path, part: str, src: Path, stat: os.stat_result, dtype: str) -> bool:
    if not path.is_file():
        return False
    try:
        meta = safetensors_info(path)[2]
    except (CheckpointError, OSError):
        return False
    want = {"format": FORMAT, "part": part, "source_name": src.name, "source_size": str(stat.st_size),
            "source_mtime_ns": str(stat.st_mtime_ns), "converter_version": CONVERTER_VERSION, "dtype": dtype}
    return all(meta.get(k) == v for k, v in want.items())


def convert_cached(path: Path, dtype: str, cache_dir: Path | None, progress: Progress | None) -> tuple[Path, Path]:
    """The (appearance, pose_controlnet) parts of the official file `path`: converted to `dtype` on first use
    (one log line) next to it, or in `cache_dir` when its folder is not writable, and reused while the source's
    name, size and mtime match the parts' metadata."""
    _torch_dtype(dtype)
    stat = path.stat()
    folders = [path.parent] + ([Path(cache_dir)] if cache_dir is not None else [])
    for d in folders:
        cached = {p: d / part_filename(path.stem, p, dtype) for p in ("appearance", "pose_controlnet")}
        if all(_cache_valid(f, p, path, stat, dtype) for p, f in cached.items()):
            log.debug("MagicPose: using the converted parts of %s in %s", path.name, d)
            return cached["appearance"], cached["pose_controlnet"]
    if _writable(path.parent):
        target = path.parent
    elif cache_dir is not None and _writable(Path(cache_dir)):
        target = Path(cache_dir)
    else:
        raise CheckpointError(f"the folder of {path.name} is not writable, so it cannot be converted next to it, and "
                              f"no writable cache folder was given. Convert it once with {hub.convert_instructions()} "
                              f"(as a user who may write there) and load the .appearance file.")
    load_official(path)  # fail on a wrong file before announcing a conversion (memory-mapped: cheap)
    log.info("MagicPose: converting %s to %s safetensors in %s (one time; later loads reuse it)", path.name, dtype,
             target)
    paths = convert(path, target, dtype=dtype, progress=progress)
    return paths["appearance"], paths["pose_controlnet"]
