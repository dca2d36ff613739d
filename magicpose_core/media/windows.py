"""Windows of a streaming render (MagicPose Render Video): the plan, the resume key and the store of finished
windows on disk. Standard library only.

A clip of N kept frames is rendered in windows of ``window`` frames, [0, w), [w, 2w), ..., the last one shorter.
Each finished window is a lossless part (mkv, FFV1 RGB: the frames exactly) written under a temporary name and
renamed into place, so a part on disk is always complete; the manifest lists the finished windows. The store's
folder is named after the resume key: a hash of everything that determines the frames (the driving file's
bytes, the selection, the pose settings, the models, the reference, the conditioning and the sampling settings,
the window size), so a run with the same settings finds the parts of an interrupted run and renders only the
missing windows, and a run with other settings never mixes its parts with them.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

log = logging.getLogger("MagicPose")

DEFAULT_WINDOW = 16
MAX_WINDOW = 1024          # frames per window; a window's pose maps and frames are held at once (~6 MB each at 512²)
MANIFEST = "manifest.json"
PART_SUFFIX = ".mkv"


def check_window(window: int, frame_batch: int = 1) -> int:
    """A valid window size, or a ValueError naming the fix."""
    if isinstance(window, bool) or not isinstance(window, int):
        raise ValueError(f"window must be a whole number of frames, got {window!r}")
    if not 1 <= window <= MAX_WINDOW:
        raise ValueError(f"window must be between 1 and {MAX_WINDOW} frames, got {window}; {DEFAULT_WINDOW} is a "
                         "good start (memory grows with the window, never with the clip)")
    if frame_batch > 1 and window % frame_batch:
        log.info("MagicPose Render Video: window %d is not a multiple of frame_batch %d: the networks see other "
                 "frame groups than in one pass (the same result up to float rounding)", window, frame_batch)
    return window


def plan_windows(total: int, window: int) -> list[tuple[int, int]]:
    """[start, stop) of every window over ``total`` frames; a window larger than the clip is the whole clip."""
    check_window(window)
    if total <= 0:
        raise ValueError("the clip has no frames to render: check the driving video and the frame selection "
                         "(skip_first_frames past the end?)")
    return [(a, min(a + window, total)) for a in range(0, total, window)]


def render_key(parts: Mapping[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of what determines the frames (strings, numbers, lists, dicts)."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_digest(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 (hex) of a file's bytes, read in 1 MiB pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass
class WindowStore:
    """The finished windows of one render (one folder per resume key)."""

    folder: Path
    key: str
    windows: list[tuple[int, int]]

    @classmethod
    def open(cls, root: str | os.PathLike, key: str, windows: list[tuple[int, int]]) -> WindowStore:
        store = cls(Path(root) / key[:24], key, list(windows))
        store.folder.mkdir(parents=True, exist_ok=True)
        old = store._read()
        if old is not None and (old.get("key") != key or [tuple(w) for w in old.get("windows", [])] != store.windows):
            log.warning("MagicPose Render Video: %s belongs to another render; starting it afresh", store.folder)
            store.clear()
            store.folder.mkdir(parents=True, exist_ok=True)
            old = None
        if old is None:
            store._write([])
        return store

    def part(self, index: int) -> Path:
        a, b = self.windows[index]
        return self.folder / f"part_{index:05d}_{a}-{b}{PART_SUFFIX}"

    def pending_part(self, index: int) -> Path:
        """Where window ``index`` is written before ``finish`` renames it into place."""
        return self.part(index).with_suffix(".partial" + PART_SUFFIX)

    def finished(self) -> list[int]:
        """Indices of the windows whose part is on disk and listed in the manifest."""
        listed = set((self._read() or {}).get("done", []))
        return [i for i in range(len(self.windows)) if i in listed and self.part(i).is_file()]

    def finish(self, index: int) -> Path:
        """Move a fully written window into place and list it."""
        os.replace(self.pending_part(index), self.part(index))
        self._write(sorted(set(self.finished()) | {index}))
        return self.part(index)

    def discard_pending(self) -> None:
        for p in self.folder.glob("*.partial" + PART_SUFFIX):
            p.unlink(missing_ok=True)

    def parts(self) -> list[Path]:
        missing = sorted(set(range(len(self.windows))) - set(self.finished()))
        if missing:
            raise RuntimeError(f"windows {missing} are not rendered yet")
        return [self.part(i) for i in range(len(self.windows))]

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def _read(self) -> dict | None:
        try:
            return json.loads((self.folder / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def _write(self, done: list[int]) -> None:
        tmp = self.folder / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps({"key": self.key, "windows": self.windows, "done": done}), encoding="utf-8")
        os.replace(tmp, self.folder / MANIFEST)
