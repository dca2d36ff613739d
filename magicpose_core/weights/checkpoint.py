"""The official MagicPose checkpoint: safe loading, exact validation, splitting, streaming conversion, CLI.

`model_state-110000.th` (HF `Boese0601/MagicDance`) is a raw `torch.save(state_dict)` of MagicPose
(ICML 2024, arXiv 2311.12052; official code Boese0601/MagicDance@a515a1f, `ControlLDMReferenceOnlyPose` in
model_lib/ControlNet/cldm/cldm.py): 2182 fp32 tensors, 9.15 GB (magicpose-method.md §11). This module

- loads it without running pickled code (`torch.load(weights_only=True, mmap=True)`) and validates the exact
  key set and shapes (layout.py), with widths read from the file's own main UNet and VAE decoder, so tiny test
  files with the real block layout validate too; errors name the file, the first offending keys and what
  the file looks like instead (nanoGPT-style asserted loading);
- splits it (magicpose-method.md §11.4) into the appearance UNet (ldm keys, no `out.*`, no
  `input_hint_block`), the pose ControlNet (`control_model.` keys, the ControlNet 1.1 layout ComfyUI loads)
  and optionally the bundled SD1.5 as an ordinary checkpoint (`position_ids` dropped);
- writes each part as safetensors tensor by tensor (header first, then each tensor's bytes), so converting
  the 9.15 GB file needs about the source size in (mostly file-backed) memory;
- loads parts for the ComfyUI glue (`load_parts`): an official file (converted once and cached next to it),
  a converted part (its sibling found by name), or diffusers-layout weights (renamed through keymap.py).

CLI: `python -m magicpose_core.checkpoint {convert,download,inspect} ...`.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import pickle
import pickletools
import re
import shutil
import struct
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import torch

from . import hub, keymap
from . import layout as L

log = logging.getLogger("MagicPose")

CONVERTER_VERSION = "1"
FORMAT = "magicpose"
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
OFFICIAL_SUFFIXES = (".th", ".ckpt", ".pth", ".pt")
PARTS = ("appearance", "pose_controlnet", "sd15")
PART_RE = re.compile(r"^(?P<stem>.+)\.(?P<part>appearance|pose_controlnet|sd15)(?:\.(?P<dtype>fp16|bf16|fp32))?"
                     r"\.safetensors$")
APPEARANCE_DIRS = ("appearance_control_model", "appearance")          # diffusers-layout folders
POSE_DIRS = ("pose_control_model", "pose_controlnet", "controlnet")
SHOW = 5  # offending keys quoted in error messages
HINT = (f"MagicPose needs the official {hub.FILENAME} ({hub.URL}; saved as {hub.LOCAL_FILENAME} or under its own "
        f"name) or the parts converted from it (`{hub.CONVERT_COMMAND}`).")

_ST_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
              torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
              torch.bool: "BOOL"}

Progress = Callable[[int, int], None]
Shapes = Mapping[str, Sequence[int]]


class CheckpointError(ValueError):
    """A file that is not (a readable, complete, code-free copy of) the weights MagicPose needs."""

    __module__ = "magicpose_core.weights.checkpoint"  # ComfyUI shows module + name; else a machine path


@dataclass
class SplitParts:
    """The official state dict split for ComfyUI (tensors are shared with the source, not copied)."""

    appearance: dict[str, torch.Tensor]        # ldm UNet keys without out.*: 682 tensors for real SD1.5
    pose_controlnet: dict[str, torch.Tensor]   # `control_model.` + ldm ControlNet keys: 340 tensors
    sd15: dict[str, torch.Tensor]              # model.diffusion_model. + first_stage_model. + cond_stage_model...


@dataclass
class MagicPoseParts:
    """What the ComfyUI loader needs: the two trained networks, and where they came from."""

    appearance: dict[str, torch.Tensor]        # ldm UNet keys, no out.* (682 for real SD1.5)
    pose_controlnet: dict[str, torch.Tensor]   # `control_model.` ControlNet 1.1 keys (340)
    source: Path
    metadata: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------
# reading files without executing code


def _first_line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return s[0][:300] if s else type(e).__name__


def _scan_globals(f, limit: int) -> list[str]:
    names: list[str] = []
    strings: list[str] = []
    while f.tell() < limit:
        try:
            for op, arg, _ in pickletools.genops(f):
                if op.name == "GLOBAL":
                    names.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    names.append(f"{strings[-2]}.{strings[-1]}")
                elif isinstance(arg, str):
                    strings.append(arg)
        except Exception:
            break
    return names


def _pickle_globals(path: Path, limit: int = 64 << 20) -> list[str]:
    """The globals a checkpoint's pickle would import (zip `data.pkl` or a legacy/bare pickle), found by
    scanning opcodes, never executing them; only the unusual ones when there are any."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                member = next((n for n in z.namelist() if n.endswith("data.pkl")), None)
                if member is None:
                    return []
                with z.open(member) as f:
                    names = _scan_globals(f, limit)
        else:
            with open(path, "rb") as f:
                names = _scan_globals(f, limit)
    except (OSError, zipfile.BadZipFile):
        return []
    unique = sorted(set(names))
    odd = [n for n in unique if not n.startswith("torch.") and n not in _PLAIN_GLOBALS]
    return odd or unique


_PLAIN_GLOBALS = {"collections.OrderedDict", "_codecs.encode", "builtins.set", "builtins.bytearray"}


def _refused(path: Path, what: str) -> CheckpointError:
    return CheckpointError(f"{path.name}: refused: this file needs code execution to load ({what}); MagicPose only "
                           f"loads plain tensors. Use the official {hub.FILENAME} or a .safetensors file.")


def _torch_load(path: Path, mmap: bool) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        m = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        names = _pickle_globals(path) or ([m.group(1)] if m else [])
        if m or names:
            raise _refused(path, f"it references {', '.join(names[:SHOW])}") from None
        raise CheckpointError(f"{path.name}: not a readable PyTorch checkpoint ({_first_line(e)})") from None
    except Exception as e:  # torch raises RuntimeError, EOFError, KeyError, ... for damaged archives and pickles
        raise CheckpointError(f"{path.name}: could not be read as a PyTorch checkpoint; it may be truncated or "
                              f"corrupted (re-download or re-copy it): {_first_line(e)}") from None


def _safetensors_header(path: Path) -> dict | None:
    """The JSON header of a safetensors file, or None when the file is not one."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return None
        n = struct.unpack("<Q", head)[0]
        if n == 0 or n > min(size - 8, 256 << 20):
            return None
        blob = f.read(n)
    if not blob.startswith(b"{"):
        return None
    try:
        header = json.loads(blob)
    except ValueError:
        return None
    return header if isinstance(header, dict) else None


def not_safetensors_advice(path: Path) -> str:
    """Why `path` has no safetensors header, guessed from its first bytes, and what to do about it."""
    with open(path, "rb") as f:
        head = f.read(512)
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype", b"<html", b"<?xml", b"{\"error")):
        what = "a web page or an error message saved under a .safetensors name, not weights (a failed download)"
    elif text.startswith(b"version https://git-lfs"):
        what = "a Git LFS pointer, not the weights (the repository was cloned without `git lfs pull`)"
    elif head.startswith((b"PK\x03\x04", b"\x80")):
        what = "a PyTorch pickle checkpoint renamed to .safetensors (give it its .th/.pth/.ckpt name back)"
    else:
        what = ("damaged or not a safetensors file at all: its first 8 bytes do not give a valid header length "
                "(an interrupted download or copy, or another format renamed to .safetensors)")
    return (f"{path.name} is {what}. Re-download it, or put the official {hub.FILENAME} ({hub.URL}) in "
            f"models/magicpose as {hub.LOCAL_FILENAME} and convert it with {hub.convert_instructions()}.")


def _safetensors_shapes(path: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """Keys -> shapes and the metadata of a safetensors file, from its header only."""
    header = _safetensors_header(path)
    if header is None:
        raise CheckpointError(not_safetensors_advice(path))
    meta = header.pop("__metadata__", None) or {}
    return {k: tuple(v["shape"]) for k, v in header.items()}, meta


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors and the metadata of a safetensors file (no pickle)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
        return load_file(str(path)), meta
    except Exception as e:  # safetensors raises its own error type for truncated / malformed files
        if _safetensors_header(path) is None:
            raise CheckpointError(not_safetensors_advice(path)) from None
        raise CheckpointError(f"{path.name}: not a readable safetensors file; it may be truncated or corrupted "
                              f"(re-download or re-convert it): {_first_line(e)}") from None


def _as_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        log.info("MagicPose: %s wraps its weights in a 'state_dict' entry; using it", path.name)
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path.name}: not a state dict (it holds a {type(obj).__name__}). {HINT}")
    bad = [f"{k} ({type(v).__name__})" for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path.name}: not a plain state dict of tensors: {len(bad)} entries are not tensors, "
                              f"e.g. {', '.join(bad[:SHOW])}. {HINT}")
    return {str(k): v for k, v in obj.items()}


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Any .th/.ckpt/.pth/.pt (zip or legacy torch.save) or .safetensors file as {key: tensor}, without
    running pickled code. Zip checkpoints are memory-mapped (tensors are read on first use)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path.name}: no such file. " + hub.missing_weights_message(path.parent))
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path.name}: the file is empty (an interrupted download or copy?)")
    with open(path, "rb") as f:
        head = f.read(16)
    if path.suffix.lower() == ".safetensors" or _safetensors_header(path) is not None:
        return read_safetensors(path)[0]
    if head.startswith(b"PK\x03\x04"):
        if not zipfile.is_zipfile(path):
            raise CheckpointError(f"{path.name}: the checkpoint archive is incomplete (no zip central directory, "
                                  f"{size / 1e9:.2f} GB on disk): the file is truncated; re-download or re-copy it")
        return _as_state_dict(_torch_load(path, mmap=True), path)
    if head[:1] == b"\x80":  # a pickle: legacy (pre-1.6) torch.save or a bare pickle.dump
        return _as_state_dict(_torch_load(path, mmap=False), path)
    raise CheckpointError(f"{path.name}: not a PyTorch checkpoint or safetensors file (unrecognised format, "
                          f"first bytes {head[:8]!r}). {HINT}")


# --------------------------------------------------------------------------------------------------
# what a state dict is


def _shapes(sd: Mapping[str, object]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) if hasattr(v, "shape") else tuple(v) for k, v in sd.items()}


def _has(keys: Iterable[str], prefix: str) -> bool:
    return any(k.startswith(prefix) for k in keys)


def key_group(key: str) -> str:
    """The group a key belongs to, for summaries: a known checkpoint prefix, else its first component."""
    if key in L.DDPM_BUFFERS:
        return "DDPM buffers"
    for p in (L.MAIN_PREFIX, L.ACM_PREFIX, L.POSE_PREFIX, L.VAE_PREFIX, L.CLIP_PREFIX, L.CONTROL_PREFIX):
        if key.startswith(p):
            return p + "*"
    head = key.split(".", 1)[0]
    return head + ".*" if "." in key else head


def group_counts(keys: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for k in keys:
        g = key_group(k)
        out[g] = out.get(g, 0) + 1
    return out


def _examples(keys: Sequence[str], n: int = SHOW) -> str:
    """Up to n keys, the first of each group before any second one, so every group is represented."""
    firsts: dict[str, str] = {}
    for k in keys:
        firsts.setdefault(key_group(k), k)
    shown = list(firsts.values())[:n]
    shown += [k for k in keys if k not in shown][: n - len(shown)]
    return ", ".join(shown) + (f" (+{len(keys) - len(shown)} more)" if len(keys) > len(shown) else "")


def _fmt_groups(keys: Iterable[str]) -> str:
    return ", ".join(f"{g} {n}" for g, n in group_counts(keys).items())


def describe(shapes: Shapes) -> str:
    """A short guess at what a state dict is ("a plain SD1.5 checkpoint", "a ControlNet", ...)."""
    keys = list(shapes)
    if not keys:
        return "an empty state dict"
    ks = set(keys)

    def ctx(prefix: str) -> int | None:
        s = shapes.get(prefix + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight")
        return int(s[1]) if s is not None and len(s) == 2 else None

    if _has(keys, L.ACM_PREFIX) or _has(keys, L.POSE_PREFIX):
        return f"a MagicPose-style checkpoint with a different layout (groups: {_fmt_groups(keys)})"
    if _has(keys, "conditioner.embedders.") or L.MAIN_PREFIX + "label_emb.0.0.weight" in ks:
        return "an SDXL checkpoint"
    if "label_emb.0.0.weight" in ks or "add_embedding.linear_1.weight" in ks:
        return "an SDXL UNet"
    if _has(keys, L.MAIN_PREFIX):
        c = ctx(L.MAIN_PREFIX)
        if c == 1024:
            return "a plain SD2.x checkpoint"
        if _has(keys, L.CONTROL_PREFIX):
            return "an SD1.5 + ControlNet training checkpoint (the control_sd15_ini.ckpt layout)"
        if _has(keys, L.VAE_PREFIX) or _has(keys, "cond_stage_model."):
            return "a plain SD1.5 checkpoint (UNet + VAE + text encoder, no appearance or pose networks)"
        return "an SD1.5 UNet with a model.diffusion_model. prefix"
    if "control_model.zero_convs.0.0.weight" in ks or "zero_convs.0.0.weight" in ks:
        return "a ControlNet (ldm layout, like control_v11p_sd15_openpose.pth)"
    if "controlnet_cond_embedding.conv_in.weight" in ks:
        return "a ControlNet in diffusers layout"
    if keymap.is_diffusers_unet(ks):
        return "a UNet in diffusers layout"
    if "input_blocks.0.0.weight" in ks:
        if "out.2.weight" not in ks:
            return "a bare ldm UNet without out.* (like a converted MagicPose appearance part)"
        return "a bare ldm UNet (SD1.5-style, no prefix)"
    if _has(keys, "encoder.down.") and _has(keys, "decoder.up."):
        return "a VAE"
    if _has(keys, "text_model.") or _has(keys, "transformer.text_model."):
        return "a CLIP text encoder"
    if any("lora" in k.lower() for k in keys[:100]):
        return "a LoRA"
    return f"an unrecognised state dict ({len(keys)} tensors, e.g. {', '.join(keys[:3])})"


@dataclass
class LayoutDiff:
    """How a state dict's {key: shape} differs from an expected layout."""

    missing: list[str]
    unexpected: list[str]
    wrong_shape: list[tuple[str, tuple[int, ...], tuple[int, ...]]]  # (key, expected, found)

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.wrong_shape)

    def summary(self) -> str:
        parts = []
        if self.missing:
            parts.append(f"missing {len(self.missing)} ({_fmt_groups(self.missing)}): "
                         f"{_examples(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected {len(self.unexpected)} ({_fmt_groups(self.unexpected)}): "
                         f"{_examples(self.unexpected)}")
        if self.wrong_shape:
            shown = ", ".join(f"{k} expected {tuple(e)} found {tuple(f)}" for k, e, f in self.wrong_shape[:SHOW])
            parts.append(f"wrong shape {len(self.wrong_shape)}: {shown}")
        return "; ".join(parts)


def compare_layout(shapes: Shapes, expected: Shapes) -> LayoutDiff:
    missing = [k for k in expected if k not in shapes]
    unexpected = [k for k in shapes if k not in expected]
    wrong = [(k, tuple(expected[k]), tuple(shapes[k])) for k in expected
             if k in shapes and tuple(shapes[k]) != tuple(expected[k])]
    return LayoutDiff(missing, unexpected, wrong)


def expected_official_layout(shapes: Shapes) -> tuple[L.Layout, L.UNetConfig, int]:
    """The official layout with the widths of this file's own main UNet and VAE decoder (SD1.5 defaults when
    those cannot be read)."""
    cfg = L.infer_unet_config(shapes, L.MAIN_PREFIX) or L.SD15_UNET
    dec = L.infer_vae_decoder_channels(shapes, L.VAE_PREFIX) or L.VAE_ENCODER_WIDTH
    return L.official_layout(cfg, dec), cfg, dec


def validate_official(sd: Mapping[str, object], name: str = "state dict") -> L.UNetConfig:
    """Assert the exact key set and shapes of `model_state-110000.th`; returns the UNet widths found."""
    shapes = _shapes(sd)
    expected, cfg, _ = expected_official_layout(shapes)
    diff = compare_layout(shapes, expected)
    if diff:
        raise CheckpointError(
            f"{name} is not the official MagicPose checkpoint ({hub.FILENAME} layout): expected {len(expected)} "
            f"tensors, found {len(shapes)}; {diff.summary()}. This looks like {describe(shapes)}. {HINT}")
    return cfg


def load_official(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The official checkpoint as a validated {key: tensor} (memory-mapped for zip `.th` files)."""
    path = Path(path)
    sd = read_state_dict(path)
    validate_official(sd, str(path))
    return sd


# --------------------------------------------------------------------------------------------------
# splitting


def _strip(sd: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def split_official(sd: Mapping[str, torch.Tensor]) -> SplitParts:
    """Split an official state dict (magicpose-method.md §11.4), asserting each part's exact count."""
    cfg = L.infer_unet_config(_shapes(sd), L.MAIN_PREFIX) or L.SD15_UNET
    appearance = {k: v for k, v in _strip(sd, L.ACM_PREFIX).items() if not k.startswith("input_hint_block.")}
    pose = {L.CONTROL_PREFIX + k: v for k, v in _strip(sd, L.POSE_PREFIX).items()}
    sd15 = {k: v for k, v in sd.items()
            if k.startswith((L.MAIN_PREFIX, L.VAE_PREFIX, L.CLIP_PREFIX)) and not L.is_integer_key(k)}
    dec = L.infer_vae_decoder_channels(_shapes(sd), L.VAE_PREFIX) or L.VAE_ENCODER_WIDTH
    for name, part, expected in (
        ("appearance", appearance, L.appearance_layout(cfg, with_hint_block=False)),
        ("pose_controlnet", pose, L.prefixed(L.CONTROL_PREFIX, L.controlnet_layout(cfg))),
        ("sd15", sd15, L.sd15_checkpoint_layout(cfg, dec)),
    ):
        diff = compare_layout(_shapes(part), expected)
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
            f.write(struct.pack("<Q", len(blob)))
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
# loading parts for ComfyUI


def _keymap_error(path: Path, e: keymap.KeyMapError) -> CheckpointError:
    return CheckpointError(f"{path.name}: diffusers-layout weights that are not an SD1.5 UNet/ControlNet: {e}")


def normalize_appearance(sd: Mapping[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """Appearance weights in any accepted naming -> ldm UNet keys without out.* (validated exactly)."""
    sd = dict(sd)
    if _has(sd, L.ACM_PREFIX):
        sd = {k[len(L.ACM_PREFIX):] if k.startswith(L.ACM_PREFIX) else k: v for k, v in sd.items()}
    if keymap.is_diffusers_unet(sd):
        try:
            sd = keymap.diffusers_to_ldm(sd)
        except keymap.KeyMapError as e:
            raise _keymap_error(path, e) from None
    unused = [k for k in sd if k.startswith(("out.", "input_hint_block."))]  # the ACM never uses them (§3.4)
    for k in unused:
        del sd[k]
    if unused:
        log.debug("MagicPose: %s: ignoring %d unused appearance tensors (out.*, input_hint_block.*)", path.name,
                  len(unused))
    cfg = L.infer_unet_config(_shapes(sd)) or L.SD15_UNET
    expected = L.appearance_layout(cfg, with_hint_block=False)
    diff = compare_layout(_shapes(sd), expected)
    if diff:
        raise CheckpointError(f"{path.name}: not a MagicPose appearance UNet: expected {len(expected)} tensors, found "
                              f"{len(sd)}; {diff.summary()}. This looks like {describe(_shapes(sd))}. {HINT}")
    return sd


def normalize_pose_controlnet(sd: Mapping[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """Pose ControlNet weights in any accepted naming -> `control_model.` ldm keys (validated exactly)."""
    sd = dict(sd)
    if _has(sd, L.POSE_PREFIX):
        sd = {L.CONTROL_PREFIX + k[len(L.POSE_PREFIX):] if k.startswith(L.POSE_PREFIX) else k: v
              for k, v in sd.items()}
    elif "controlnet_cond_embedding.conv_in.weight" in sd:
        try:
            sd = {L.CONTROL_PREFIX + k: v for k, v in keymap.diffusers_to_ldm(sd).items()}
        except keymap.KeyMapError as e:
            raise _keymap_error(path, e) from None
    elif "zero_convs.0.0.weight" in sd:
        sd = {L.CONTROL_PREFIX + k: v for k, v in sd.items()}
    cfg = L.infer_unet_config(_shapes(sd), L.CONTROL_PREFIX) or L.SD15_UNET
    expected = L.prefixed(L.CONTROL_PREFIX, L.controlnet_layout(cfg))
    diff = compare_layout(_shapes(sd), expected)
    if diff:
        raise CheckpointError(f"{path.name}: not a MagicPose pose ControlNet: expected {len(expected)} tensors, found "
                              f"{len(sd)}; {diff.summary()}. This looks like {describe(_shapes(sd))}. {HINT}")
    return sd


def _check_pair(appearance: Mapping[str, torch.Tensor], pose: Mapping[str, torch.Tensor], a: Path, p: Path) -> None:
    ca = L.infer_unet_config(_shapes(appearance))
    cp = L.infer_unet_config(_shapes(pose), L.CONTROL_PREFIX)
    if ca != cp:
        raise CheckpointError(f"{a.name} and {p.name} do not belong together: appearance UNet widths "
                              f"{ca.model_channels if ca else '?'} x {ca.channel_mult if ca else '?'}, pose ControlNet "
                              f"{cp.model_channels if cp else '?'} x {cp.channel_mult if cp else '?'}")


def _parts(app_path: Path, pose_path: Path, source: Path) -> MagicPoseParts:
    app, app_meta = read_safetensors(app_path)
    pose, pose_meta = read_safetensors(pose_path)
    appearance = normalize_appearance(app, app_path)
    pose_cn = normalize_pose_controlnet(pose, pose_path)
    _check_pair(appearance, pose_cn, app_path, pose_path)
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
        meta = _safetensors_shapes(path)[1]
    except (CheckpointError, OSError):
        return False
    want = {"format": FORMAT, "part": part, "source_name": src.name, "source_size": str(stat.st_size),
            "source_mtime_ns": str(stat.st_mtime_ns), "converter_version": CONVERTER_VERSION, "dtype": dtype}
    return all(meta.get(k) == v for k, v in want.items())


def _load_official_cached(path: Path, dtype: str, cache_dir: Path | None, progress: Progress | None) -> MagicPoseParts:
    _torch_dtype(dtype)
    stat = path.stat()
    folders = [path.parent] + ([Path(cache_dir)] if cache_dir is not None else [])
    for d in folders:
        cached = {p: d / part_filename(path.stem, p, dtype) for p in ("appearance", "pose_controlnet")}
        if all(_cache_valid(f, p, path, stat, dtype) for p, f in cached.items()):
            log.debug("MagicPose: using the converted parts of %s in %s", path.name, d)
            return _parts(cached["appearance"], cached["pose_controlnet"], source=path)
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
    return _parts(paths["appearance"], paths["pose_controlnet"], source=path)


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
        return _load_official_cached(path, dtype, Path(cache_dir) if cache_dir else None, progress)
    shapes, _ = _safetensors_shapes(path)
    if _has(shapes, L.ACM_PREFIX) and _has(shapes, L.POSE_PREFIX):
        return _load_official_cached(path, dtype, Path(cache_dir) if cache_dir else None, progress)
    raise CheckpointError(
        f"{path.name}: not the official MagicPose checkpoint and not named like a converted part; it looks like "
        f"{describe(shapes)}. Converted parts are named STEM.appearance.DTYPE.safetensors and "
        f"STEM.pose_controlnet.DTYPE.safetensors and sit side by side. {HINT}")


# --------------------------------------------------------------------------------------------------
# inspect


def inspect(path: str | os.PathLike) -> str:
    """A human-readable report: what the file is, its key groups, dtypes, parameter count, metadata."""
    path = Path(path)
    meta: dict[str, str] = {}
    if path.is_file() and _safetensors_header(path) is not None:
        header = _safetensors_header(path) or {}
        meta = header.pop("__metadata__", None) or {}
        shapes = {k: tuple(v["shape"]) for k, v in header.items()}
        dtypes = {k: v["dtype"] for k, v in header.items()}
    else:
        sd = read_state_dict(path)
        shapes = _shapes(sd)
        dtypes = {k: str(v.dtype).replace("torch.", "") for k, v in sd.items()}
    kind = describe(shapes)
    expected, cfg, dec = expected_official_layout(shapes)
    if not compare_layout(shapes, expected):
        kind = (f"the official MagicPose checkpoint ({hub.FILENAME} layout, valid; UNet model_channels "
                f"{cfg.model_channels}, channel_mult {cfg.channel_mult}; VAE decoder width {dec})")
    else:
        for label, fn in (("MagicPose appearance part", normalize_appearance),
                          ("MagicPose pose ControlNet part", normalize_pose_controlnet)):
            try:
                fn(shapes, path)  # shapes stand in for tensors: only names and shapes are checked
            except CheckpointError:
                continue
            kind = f"a {label} (valid), " + kind
            break
    dcount: dict[str, int] = {}
    for v in dtypes.values():
        dcount[v] = dcount.get(v, 0) + 1
    lines = [f"file: {path} ({path.stat().st_size / 1e9:.3f} GB)" if path.is_file() else f"file: {path}",
             f"kind: {kind}",
             f"tensors: {len(shapes)}, parameters: {L.count_params(shapes) / 1e6:.2f} M",
             "dtypes: " + ", ".join(f"{k} {n}" for k, n in dcount.items()),
             "groups:"]
    lines += [f"  {g:45s} {n}" for g, n in group_counts(shapes).items()]
    if meta:
        lines.append("metadata:")
        lines += [f"  {k}: {v}" for k, v in sorted(meta.items())]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# CLI


class TextProgress:
    """A one-line text progress bar on stderr for callable(done, total) progress."""

    def __init__(self, label: str = "", stream=None, width: int = 30):
        self.label, self.stream, self.width, self.last = label, stream or sys.stderr, width, -1

    def __call__(self, done: int, total: int) -> None:
        pct = int(100 * done / total) if total else 100
        if pct == self.last:
            return
        self.last = pct
        fill = self.width * pct // 100
        self.stream.write(f"\r{self.label}[{'#' * fill}{'.' * (self.width - fill)}] {pct:3d}% "
                          f"{done / 1e9:.2f}/{total / 1e9:.2f} GB")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()


def _default_official() -> Path:
    """ComfyUI's models/magicpose/model_state-110000.pth (or .th), for `convert` without arguments."""
    folder = hub.default_model_dir()
    for name in (hub.LOCAL_FILENAME, hub.FILENAME):
        if (folder / name).is_file():
            return folder / name
    if folder == Path.cwd():
        raise CheckpointError(f"convert without arguments works in the pack's folder inside ComfyUI/custom_nodes "
                              f"(it reads models/magicpose/{hub.LOCAL_FILENAME}); here, name the file: "
                              f"convert SRC [OUTDIR]")
    raise CheckpointError(hub.missing_weights_message(folder))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m magicpose_core.checkpoint",
                                     description="Convert, download or inspect MagicPose weights.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert", help=f"split the official {hub.FILENAME} into safetensors parts; without "
                       "arguments, in the pack's folder inside ComfyUI/custom_nodes: ComfyUI's models/magicpose/"
                       f"{hub.LOCAL_FILENAME} (or .th) -> parts next to it + the SD1.5 in models/checkpoints")
    c.add_argument("src", nargs="?")
    c.add_argument("outdir", nargs="?", help="default: the folder of src")
    c.add_argument("--dtype", choices=list(DTYPES), default="fp16")
    c.add_argument("--with-sd15", action="store_true", help="also write the bundled SD1.5 as a checkpoint "
                   "(always on without arguments)")
    c.add_argument("--sd15-dir", default=None, help="folder for the SD1.5 checkpoint (default: outdir; without "
                   "arguments: ComfyUI's models/checkpoints)")
    d = sub.add_parser("download", help=f"download {hub.FILENAME} from {hub.REPO_ID} (~9.15 GB)")
    d.add_argument("--dir", default=None, help="destination (default: ComfyUI/models/magicpose or the current folder)")
    i = sub.add_parser("inspect", help="print what a weights file is and its key groups")
    i.add_argument("file")
    args = parser.parse_args(argv)

    handler = logging.StreamHandler(sys.stderr)  # CLI only: the library itself never configures logging
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        if args.cmd == "convert":
            src, outdir, with_sd15, sd15_dir = args.src, args.outdir, args.with_sd15, args.sd15_dir
            if src is None:  # the one documented command: ComfyUI's own folders
                src, with_sd15 = _default_official(), True
                sd15_dir = sd15_dir or src.parent.parent / "checkpoints"
            paths = convert(src, outdir or Path(src).parent, dtype=args.dtype, with_sd15=with_sd15,
                            progress=TextProgress("convert "), sd15_dir=sd15_dir)
            for part, p in paths.items():
                print(f"{part}: {p} ({p.stat().st_size / 1e9:.3f} GB)")
            if args.src is not None:
                print("Put the .appearance and .pose_controlnet files in models/magicpose (or keep them together) "
                      "and the .sd15 file, if written, in models/checkpoints.")
        elif args.cmd == "download":
            print(hub.download_official(args.dir))
        else:
            print(inspect(args.file))
    except (CheckpointError, hub.HubError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        log.removeHandler(handler)
    return 0

