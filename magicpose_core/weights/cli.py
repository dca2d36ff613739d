"""The weights command line: `python -m magicpose_core.checkpoint {convert,download,inspect} ...` (the documented
form; `python -m magicpose_core.weights ...` is the same). Nothing in the library imports this module.

`convert` without arguments, run in the pack's folder inside ComfyUI/custom_nodes, splits ComfyUI's
models/magicpose/model_state-110000.pth (the official `model_state-110000.th` of MagicPose, ICML 2024,
arXiv 2311.12052, HF `Boese0601/MagicDance`) into the parts next to it and the SD1.5 in models/checkpoints.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from . import hub
from .convert import DTYPES, Progress, convert
from .errors import CheckpointError
from .report import inspect

log = logging.getLogger("MagicPose")


def _progress_bar(label: str) -> Progress:
    """A tqdm bar on stderr fed by callable(done_bytes, total_bytes) progress."""
    bar: tqdm | None = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=label, unit="B", unit_scale=True, file=sys.stderr)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update


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
                            progress=_progress_bar("convert"), sd15_dir=sd15_dir)
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
