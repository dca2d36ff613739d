"""The ComfyUI frontends the browser tests run against.

- ``installed()``: the one ComfyUI's requirements install into the venv (``comfyui-frontend-package``, 1.47.12 for
  ComfyUI 0.30.0), served by default.
- ``current()``: the newer one that ``scripts/env.sh`` unpacks into ``.cache/frontend-<version>/`` (its
  ``FRONTEND_VERSION`` is the one source of the version), served with ``--front-end-root``. Tests never download
  it: a missing folder is an error that names ``make env``.
"""
from __future__ import annotations

import importlib.metadata
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENV_SH = ROOT / "scripts" / "env.sh"
NODES2_SETTING = "Comfy.VueNodes.Enabled"   # "Modern Node Design (Nodes 2.0)": the Vue node renderer


@dataclass(frozen=True)
class Frontend:
    version: str
    root: Path | None = None     # None: ComfyUI's installed frontend

    @property
    def server_args(self) -> list[str]:
        return [] if self.root is None else ["--front-end-root", str(self.root)]

    def require(self) -> "Frontend":
        if self.root is not None and not (self.root / "index.html").is_file():
            raise RuntimeError(f"frontend {self.version} is not unpacked at {self.root}: run `make env` "
                               f"(scripts/env.sh downloads comfyui-frontend-package=={self.version} from PyPI once)")
        return self


def installed() -> Frontend:
    try:
        return Frontend(importlib.metadata.version("comfyui-frontend-package"))
    except importlib.metadata.PackageNotFoundError:
        return Frontend("installed")   # a ComfyUI with its frontend elsewhere: the version is read in the page


def current() -> Frontend:
    m = re.search(r'^FRONTEND_VERSION="([0-9][^"]*)"', ENV_SH.read_text(), re.M)
    if m is None:
        raise RuntimeError(f"{ENV_SH} defines no FRONTEND_VERSION=\"x.y.z\"")
    return Frontend(m.group(1), ROOT / ".cache" / f"frontend-{m.group(1)}")
