#!/usr/bin/env bash
# The plain-install environment: what a user gets after `pip install -r requirements.txt` in their ComfyUI.
#
#   scripts/env_plain.sh      create or refresh .cache/plain-venv; prints its python on success, nothing else
#
# ComfyUI's own requirements.txt (all of it, as ComfyUI's README installs it), then the pack's requirements.txt
# with no constraints and no extras: numpy 2, no mediapipe, whatever versions pip picks today. Only the torch
# trio is pinned to the versions scripts/env.sh uses (ComfyUI owns torch; a user's pip run does not change it).
# tests/e2e/test_plain_install.py starts a real ComfyUI server from this Python. The venv is rebuilt when this
# script, the pack's requirements.txt or ComfyUI's requirements.txt changes (a hash stamp); pip's cache is used.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
VENV="$ROOT/.cache/plain-venv"
COMFY="${COMFYUI_PATH:-$ROOT/.cache/ComfyUI}"
TORCH_PINS=(torch==2.11.0 torchvision==0.26.0 torchaudio==2.11.0)

log() { echo "[env-plain] $*" >&2; }

[ -f "$COMFY/requirements.txt" ] || { echo "no ComfyUI at $COMFY: run scripts/env.sh (or set COMFYUI_PATH)" >&2; exit 2; }
want="$(cat "$ROOT/requirements.txt" "$COMFY/requirements.txt" "$ROOT/scripts/env_plain.sh" \
  | "$PY" -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')"
if [ "$(cat "$VENV/.magicpose-plain" 2>/dev/null)" = "$want" ] && "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
  echo "$VENV/bin/python"
  exit 0
fi

start=$(date +%s)
log "building $VENV (ComfyUI requirements + the pack's requirements.txt, no constraints but the torch trio)"
rm -rf "$VENV"
"$PY" -m venv "$VENV"
pins="$VENV/torch-pins.txt"
printf '%s\n' "${TORCH_PINS[@]}" > "$pins"
pip_install() {
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$@" \
    2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
}
pip_install --upgrade pip
pip_install -c "$pins" "${TORCH_PINS[@]}" -r "$COMFY/requirements.txt"
pip_install -c "$pins" -r "$ROOT/requirements.txt"
"$VENV/bin/python" -m pip check >&2 || log "pip check reports the conflicts above (a user's pip would too)"
"$VENV/bin/python" - >&2 <<'EOF'
import importlib.metadata as md
import importlib.util

import numpy

assert int(numpy.__version__.split(".")[0]) >= 2, f"plain install resolved numpy {numpy.__version__}, expected 2.x"
assert importlib.util.find_spec("mediapipe") is None, "mediapipe must not come with a plain install"
for name in ("torch", "numpy", "opencv-python-headless", "opencv-python", "onnxruntime", "huggingface_hub",
             "safetensors", "av", "einops", "protobuf"):
    try:
        print(f"[env-plain] {name} {md.version(name)}")
    except md.PackageNotFoundError:
        pass
EOF
echo "$want" > "$VENV/.magicpose-plain"
log "built in $(( $(date +%s) - start )) s"
echo "$VENV/bin/python"
