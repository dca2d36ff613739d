"""Reading weights files without executing pickled code, and saying what a file is when it cannot be read.

- `.th/.ckpt/.pth/.pt` (zip or legacy `torch.save`, or a bare pickle) load with `torch.load(weights_only=True)`;
  zip checkpoints are memory-mapped. A pickle that needs code to load is refused, naming the globals it would
  import: torch's static scan (`torch.serialization.get_unsafe_globals_in_checkpoint`) for zip files, an opcode
  scan here for legacy and bare pickles, which torch's scan does not read.
- `.safetensors` files are read with the safetensors library (`safe_open`: shapes, dtypes and metadata without
  the tensor data).
- A file that is neither is described from its first bytes (a web page, a Git LFS pointer, a renamed pickle,
  a truncated download). Reads here are bounded: 512 bytes for the diagnosis, `PICKLE_SCAN_LIMIT` for the scan.

The official file is `model_state-110000.th` of MagicPose (ICML 2024, arXiv 2311.12052; HF `Boese0601/MagicDance`).
"""
from __future__ import annotations

import io
import logging
import os
import pickle
import pickletools
import re
import zipfile
from pathlib import Path
from typing import Mapping

import torch
from safetensors import safe_open

from . import hub
from .errors import HINT, SHOW, CheckpointError

log = logging.getLogger("MagicPose")

PICKLE_SCAN_LIMIT = 64 << 20  # bytes of a legacy / bare pickle scanned for the globals it would import
ST_HEADER_LIMIT = 100 << 20   # safetensors' own cap on its JSON header
_PLAIN_GLOBALS = {"collections.OrderedDict", "_codecs.encode", "builtins.set", "builtins.bytearray"}


def _first_line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return s[0][:300] if s else type(e).__name__


# --------------------------------------------------------------------------------------------------
# pickles


def _legacy_globals(raw: bytes) -> list[str]:
    """The globals named by the pickles at the start of `raw` (opcodes read, never run); the scan stops at the
    first byte that is not an opcode (the raw storages after a legacy torch.save) or at the end of `raw`."""
    names: list[str] = []
    strings: list[str] = []
    data = io.BytesIO(raw)
    while data.tell() < len(raw):
        try:
            for op, arg, _ in pickletools.genops(data):
                if op.name == "GLOBAL":
                    names.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    names.append(f"{strings[-2]}.{strings[-1]}")
                elif isinstance(arg, str):
                    strings.append(arg)
        except Exception:
            break
    unique = sorted(set(names))
    odd = [n for n in unique if not n.startswith("torch.") and n not in _PLAIN_GLOBALS]
    return odd or unique


def _unsafe_globals(path: Path) -> list[str]:
    """The globals a checkpoint's pickle would import that `weights_only` refuses (all of them for a legacy
    pickle without unusual ones); [] when the file cannot be scanned."""
    try:
        if zipfile.is_zipfile(path):
            return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
        with open(path, "rb") as f:
            return _legacy_globals(f.read(PICKLE_SCAN_LIMIT))
    except Exception:  # torchscript, no data.pkl, an opcode torch's scan does not know: torch.load's message remains
        return []


def _refused(path: Path, what: str) -> CheckpointError:
    return CheckpointError(f"{path.name}: refused: this file needs code execution to load ({what}); MagicPose only "
                           f"loads plain tensors. Use the official {hub.FILENAME} or a .safetensors file.")


def _torch_load(path: Path, mmap: bool) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        m = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        names = _unsafe_globals(path) or ([m.group(1)] if m else [])
        if m or names:
            raise _refused(path, f"it references {', '.join(names[:SHOW])}") from None
        raise CheckpointError(f"{path.name}: not a readable PyTorch checkpoint ({_first_line(e)})") from None
    except Exception as e:  # torch raises RuntimeError, EOFError, KeyError, ... for damaged archives and pickles
        raise CheckpointError(f"{path.name}: could not be read as a PyTorch checkpoint; it may be truncated or "
                              f"corrupted (re-download or re-copy it): {_first_line(e)}") from None


# --------------------------------------------------------------------------------------------------
# safetensors


def looks_like_safetensors(path: Path) -> bool:
    """Whether the file starts as a safetensors file does: an 8-byte little-endian header length that fits the
    file (and safetensors' cap), then a JSON object."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(9)
    n = int.from_bytes(head[:8], "little")
    return len(head) == 9 and 0 < n <= min(size - 8, ST_HEADER_LIMIT) and head[8:] == b"{"


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


def _unreadable_safetensors(path: Path, e: BaseException) -> CheckpointError:
    if looks_like_safetensors(path):
        return CheckpointError(f"{path.name}: not a readable safetensors file; it may be truncated or corrupted "
                               f"(re-download or re-convert it): {_first_line(e)}")
    return CheckpointError(not_safetensors_advice(path))


def safetensors_info(path: str | os.PathLike) -> tuple[dict[str, tuple[int, ...]], dict[str, str], dict[str, str]]:
    """Keys -> shapes, keys -> dtypes ("F16", "BF16", ...) and the metadata of a safetensors file, without reading
    the tensor data."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            slices = {k: f.get_slice(k) for k in getattr(f, "offset_keys", f.keys)()}  # file order where known
            meta = dict(f.metadata() or {})
    except Exception as e:  # safetensors raises its own error type for truncated / malformed files
        raise _unreadable_safetensors(path, e) from None
    return ({k: tuple(s.get_shape()) for k, s in slices.items()}, {k: s.get_dtype() for k, s in slices.items()},
            meta)


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors and the metadata of a safetensors file (no pickle)."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in getattr(f, "offset_keys", f.keys)()}, dict(f.metadata() or {})
    except Exception as e:
        raise _unreadable_safetensors(path, e) from None


# --------------------------------------------------------------------------------------------------
# any weights file


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
    if path.suffix.lower() == ".safetensors" or looks_like_safetensors(path):
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
