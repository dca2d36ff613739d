"""What a run produced: its `Result`, the files a node's history output lists, and where each downloaded file goes
(one file: --out; several: numbered next to it; a directory: their server names; see "Outputs" in `cli`)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from .errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK


@dataclass(frozen=True)
class Result:
    """How one prompt ended, and what it left."""

    prompt_id: str
    status: str                                   # "success" | "error" | "interrupted"
    files: tuple[Path, ...] = ()                  # downloaded files
    outputs: dict = field(default_factory=dict)   # /history outputs by node id
    error: str = ""                               # readable execution error
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "success"

    @property
    def exit_code(self) -> int:
        return {"success": EXIT_OK, "interrupted": EXIT_INTERRUPTED}.get(self.status, EXIT_FAILED)


def output_files(node_output: Mapping) -> list[dict]:
    """Every {filename, subfolder, type} listed in one node's history outputs (images, gifs, videos, ...)."""
    files, seen = [], set()
    for value in node_output.values():
        if not isinstance(value, list):
            continue
        for item in value:
            if isinstance(item, Mapping) and item.get("filename"):
                key = (item.get("type", "output"), item.get("subfolder", ""), item["filename"])
                if key not in seen:
                    seen.add(key)
                    files.append(dict(item))
    return files


def output_destinations(out: str | os.PathLike, files: Sequence[Mapping]) -> list[Path]:
    """Where each downloaded file goes: one file -> out; several -> numbered next to it; a directory -> names."""
    as_dir = str(out).endswith(("/", os.sep)) or Path(out).is_dir()
    out = Path(out)
    if as_dir:
        return [out / Path(f["filename"]).name for f in files]
    if len(files) == 1:
        return [out]
    return [out.with_name(f"{out.stem}_{i:05d}{Path(f['filename']).suffix or out.suffix}")
            for i, f in enumerate(files, 1)]

