"""`scripts/gpu_check.sh --prepare`: gather what the bare, offline GPU image lacks to run ComfyUI 0.30 and the pack.

The GPU image has Python 3.12 with torch 2.11 (CUDA 13), numpy 2, safetensors, onnxruntime, opencv-python-headless,
einops, aiohttp, scikit-image, matplotlib, scipy, PyYAML, Pillow, psutil, tqdm, transformers, tokenizers,
sentencepiece, huggingface_hub, requests, filelock and pytest, and no package index. Read from ComfyUI's
requirements.txt and its imports, the pack still needs:
- ``av`` (ComfyUI's comfy_api and the pack's media code), ``torchsde`` + ``trampoline`` (comfy/k_diffusion/sampling.py),
  ``comfy-aimdo`` (imported unguarded by main.py and comfy/model_management.py), ``SQLAlchemy`` + ``alembic`` +
  ``Mako`` (the server's database, even in memory), ``simpleeval`` (comfy_extras math nodes), ``blake3`` (asset
  hashing), ``pydantic`` + ``pydantic-core`` + ``pydantic-settings`` + ``annotated-types`` + ``typing-inspection``
  + ``python-dotenv`` (comfy_config, the asset routes), ``websocket-client`` (the pack's headless client);
- not the frontend (``comfyui-frontend-package``, tens of MB): the check's servers are driven over the API and
  start with ``--front-end-root`` pointing at an empty folder; not the workflow templates or embedded docs (the
  server logs their absence and runs); not ``comfy-kitchen`` (43 MiB; fp8/fp4 kernels, imported in a try, SD1.5 in
  fp16/bf16/fp32 never uses them); not spandrel / kornia (optional extras nodes).
Each wheel is the cp312 manylinux (or pure-Python) build of the version in this checkout's .venv, downloaded with
``--no-deps`` (the list above is complete by construction; the run installs it with ``--no-index --no-deps``).

ComfyUI's tree (``.cache/ComfyUI`` or $COMFYUI_PATH) travels as ``comfyui.tar.gz`` without what a server for SD1.5 does
not read: the tokenizer data of other text encoders (comfy/text_encoders/*_tokenizer; SD1.5's is comfy/sd1_tokenizer),
its tests and the subgraph blueprints.

It prints the size of what travels (the working tree + this folder) against the device tool's 64 MiB, the `carry`
list and the one-line command to run there.

    .venv/bin/python scripts/gpu_prepare.py [--dest .cache/gpu-check]
"""
from __future__ import annotations

import argparse
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMFYUI = Path(os.environ.get("COMFYUI_PATH") or ROOT / ".cache" / "ComfyUI")
MIB = 1024 * 1024
BUDGET = 64 * MIB           # the device tool: working tree + carried paths
WHEELS = ("av", "torchsde", "trampoline", "comfy-aimdo", "SQLAlchemy", "alembic",
          "Mako", "simpleeval", "blake3", "pydantic", "pydantic-core", "pydantic-settings", "annotated-types",
          "typing-inspection", "python-dotenv", "websocket-client")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")
PRUNE_DIRS = ("tests", "tests-unit", "blueprints", ".git", "script_examples")
DEVICE_COMMAND = "scripts/gpu_check.sh --out $OUT"


def version_of(name: str) -> str:
    """The version this checkout's environment runs (the same as the CPU tests)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError as e:
        raise SystemExit(f"gpu_prepare: {name} is not installed in {sys.executable}; run `make env` first") from e


def download_wheels(dest: Path) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("*.whl"):
        old.unlink()
    pins = [f"{name}=={version_of(name)}" for name in WHEELS]
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps",
           "--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp", "--abi", "cp312",
           "--abi", "abi3", "--abi", "none", "-d", str(dest)]
    for p in PLATFORMS:
        cmd += ["--platform", p]
    proc = subprocess.run(cmd + pins, capture_output=True, text=True)
    noise = "is ignored: it is neither a file nor a directory"   # this machine's absent local index folders
    sys.stderr.write("".join(ln + "\n" for ln in proc.stderr.splitlines() if noise not in ln))
    if proc.returncode:
        raise SystemExit(f"gpu_prepare: pip download failed ({proc.returncode})")
    return sorted(dest.glob("*.whl"))


def pack_comfyui(src: Path, out: Path) -> int:
    """ComfyUI's tree, pruned, as out (tar.gz, top folder `ComfyUI`); returns the bytes of the files kept."""
    if not (src / "main.py").is_file():
        raise SystemExit(f"gpu_prepare: no ComfyUI at {src} (run `make env` or set COMFYUI_PATH)")
    kept = 0

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        nonlocal kept
        rel = Path(info.name).relative_to("ComfyUI") if info.name != "ComfyUI" else Path()
        parts = rel.parts
        if parts and (parts[0] in PRUNE_DIRS or "__pycache__" in parts):
            return None
        if len(parts) >= 3 and parts[:2] == ("comfy", "text_encoders") and parts[2].endswith("_tokenizer"):
            return None
        kept += info.size
        return info

    with tarfile.open(out, "w:gz", compresslevel=6) as tar:
        tar.add(src, arcname="ComfyUI", filter=keep)
    return kept


def working_tree_bytes() -> int:
    """Tracked and untracked-not-ignored files: what the device tool sends besides the carried paths."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         check=True, capture_output=True).stdout
    return sum((ROOT / p).stat().st_size for p in out.decode().split("\0") if p and (ROOT / p).is_file())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dest", type=Path, default=ROOT / ".cache" / "gpu-check",
                    help="folder to fill (default .cache/gpu-check, git-ignored; carried to the device)")
    a = ap.parse_args(argv)
    dest = a.dest.resolve()
    dest.mkdir(parents=True, exist_ok=True)
    print(f"[gpu-prepare] wheels for cp312 manylinux x86_64: {', '.join(WHEELS)}", file=sys.stderr)
    wheels = download_wheels(dest / "wheels")
    with tempfile.TemporaryDirectory() as tmp:
        tgz = Path(tmp) / "comfyui.tar.gz"
        raw = pack_comfyui(COMFYUI, tgz)
        shutil.move(tgz, dest / "comfyui.tar.gz")
    sizes = {w.name: w.stat().st_size for w in wheels}
    tree = working_tree_bytes()
    carried = sum(sizes.values()) + (dest / "comfyui.tar.gz").stat().st_size
    for name, size in sorted(sizes.items(), key=lambda kv: -kv[1]):
        print(f"  {size / MIB:7.2f} MiB  wheels/{name}")
    print(f"  {(dest / 'comfyui.tar.gz').stat().st_size / MIB:7.2f} MiB  comfyui.tar.gz ({raw / MIB:.1f} MiB unpacked, "
          f"from {COMFYUI})")
    total = tree + carried
    print(f"carried {carried / MIB:.1f} MiB + working tree {tree / MIB:.1f} MiB = {total / MIB:.1f} MiB of the "
          f"{BUDGET / MIB:.0f} MiB the device tool sends")
    try:
        rel = dest.relative_to(ROOT)
    except ValueError:
        rel = None
    print(f"carry: [\"{rel if rel is not None else dest}\"]")
    cmd = DEVICE_COMMAND if rel is None or str(rel) == ".cache/gpu-check" else f"GPU_CHECK_DIR={rel} {DEVICE_COMMAND}"
    print(f"command: {cmd}")
    if rel is None:
        print("note: the destination is outside the repository; the device tool carries only paths inside it",
              file=sys.stderr)
    if total > BUDGET:
        print(f"gpu_prepare: {total / MIB:.1f} MiB is over the {BUDGET / MIB:.0f} MiB budget", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
