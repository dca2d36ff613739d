"""The parts folder of a split render: one lossless part per finished frame range, a manifest naming the run (a digest
of the filled workflow and of the input files) and its range plan, so that ``--resume`` renders only the missing
ranges; and the merge of the parts into the output video with the driver's fps and sound.

PyAV (through magicpose_core.media.video) is imported on use, when a part is probed or the parts are merged.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from fractions import Fraction
from pathlib import Path
from typing import Any, Mapping

from .errors import ClientError, UsageError
from .split_plan import PART_FORMAT, FrameRange, SplitPlan

log = logging.getLogger("MagicPose")

MANIFEST = "manifest.json"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def default_out(out: str | os.PathLike, plan: SplitPlan) -> Path:
    """--out as a file: inside an existing directory (or a path ending with "/"), named after the Output's prefix."""
    p = Path(out)
    if str(out).endswith(("/", os.sep)) or p.is_dir():
        return p / f"{Path(plan.filename_prefix).name or 'video'}.{plan.format}"
    return p


class Parts:
    """The parts folder `folder` of the run whose digest is `key`."""

    def __init__(self, folder: Path, key: str):
        self.folder, self.key = folder, key

    def part(self, rng: FrameRange) -> Path:
        return self.folder / f"range_{rng.name}.{PART_FORMAT}"

    def partial(self, rng: FrameRange) -> Path:
        """Where a range's part is downloaded before it is checked and renamed to `part`."""
        return self.folder / f".range_{rng.name}.{PART_FORMAT}.partial"

    def resume(self, total: int) -> tuple[list[FrameRange], set[FrameRange]] | None:
        """The range plan of an earlier run of the same job and the ranges whose parts are complete; None when the
        folder has no manifest. UsageError when the manifest is unreadable or belongs to another run."""
        path = self.folder / MANIFEST
        if not path.is_file():
            log.warning("--resume: no earlier parts in %s; rendering everything", self.folder)
            return None
        try:
            data = json.loads(path.read_text())
            ranges = [FrameRange(int(a), int(b)) for a, b in data["ranges"]]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UsageError(f"--resume: cannot read {path} ({e}); remove {self.folder} or drop --resume") from None
        if data.get("key") != self.key or data.get("frames") != total:
            raise UsageError(f"--resume: the parts in {self.folder} belong to another run (the workflow, its settings "
                             "or the input files differ); remove that folder or drop --resume")
        from ..media.video import probe_video

        done = set()
        for rng in ranges:
            part = self.part(rng)
            try:
                if part.is_file() and probe_video(str(part)).frames == len(rng):
                    done.add(rng)
            except ValueError:
                log.warning("--resume: %s is damaged; rendering %s again", part.name, rng.label)
        return ranges, done

    def start(self, total: int, ranges: list[FrameRange]) -> None:
        """A new plan: the parts of any earlier run are removed and the manifest written."""
        if self.folder.is_dir():
            for old in self.folder.glob(f"range_*.{PART_FORMAT}"):
                old.unlink()
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps({"key": self.key, "frames": total, "ranges": [[r.start, r.stop] for r in ranges]}))
        os.replace(tmp, self.folder / MANIFEST)

    def remove_partials(self) -> None:
        for partial in self.folder.glob(f".range_*.{PART_FORMAT}.partial"):
            partial.unlink(missing_ok=True)

    def labels(self, first: FrameRange, workflow: Mapping) -> dict[str, str]:
        """The file labels the server wrote into the first part (e.g. the provenance label), without the part's own
        workflow (a range cut) and with the whole `workflow` instead."""
        from ..media.video import read_metadata

        meta = {k: v for k, v in read_metadata(str(self.part(first))).items()
                if k.lower() not in ("prompt", "workflow", "encoder")}
        meta["prompt"] = json.dumps(workflow)
        return meta

    def merge(self, ranges: list[FrameRange], total: int, src_fps: Fraction, plan: SplitPlan, driving: str,
              out: Path, workflow: Mapping) -> tuple[Fraction | float, bool]:
        """Merge the parts into `out` (written whole, then renamed) with the fps and sound the plan takes from the
        driving video; returns (fps, whether it has sound)."""
        from ..media.video import merge_videos, read_audio

        sel = plan.selection
        fps = sel.output_fps(src_fps) if plan.fps == "selection" else src_fps if plan.fps == "source" else plan.fps
        audio = None
        if plan.audio == "selection":
            audio = read_audio(driving, *sel.audio_span(total, src_fps))
        elif plan.audio == "source":
            audio = read_audio(driving)
        if audio is not None and audio[0].shape[1] == 0:
            audio = None
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.partial")
        labels = self.labels(ranges[0], workflow) if plan.format in ("mp4", "webm", "mkv") else None
        info = merge_videos([str(self.part(r)) for r in ranges], str(tmp), fps, plan.format, plan.crf, audio,
                            metadata=labels)
        os.replace(tmp, out)
        if info.frames != total:
            raise ClientError(f"the merged video has {info.frames} frames, {total} expected")
        return fps, audio is not None

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
