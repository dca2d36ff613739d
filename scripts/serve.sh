#!/usr/bin/env bash
# Start ComfyUI on 127.0.0.1:${PORT:-8188} with this pack loaded. State (models, input, output, user) lives
# under .cache/serve; the ComfyUI tree is never written to. Put weights in .cache/serve/models/... or point
# EXTRA_MODEL_PATHS at an extra_model_paths.yaml.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COMFY="${COMFYUI_PATH:?run through make serve, or set COMFYUI_PATH}"
BASE="${SERVE_BASE:-$ROOT/.cache/serve}"
mkdir -p "$BASE"/{custom_nodes,input,output,temp,user,models/magicpose,models/checkpoints,models/controlnet}
ln -sfn "$ROOT" "$BASE/custom_nodes/magicpose"
extra=()
[ -n "${EXTRA_MODEL_PATHS:-}" ] && extra+=(--extra-model-paths-config "$EXTRA_MODEL_PATHS")
# The pinned torch is a CUDA build: without a usable GPU ComfyUI must be told to run on the CPU.
if ! "$ROOT/.venv/bin/python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  extra+=(--cpu --use-pytorch-cross-attention)  # SDPA: ~1.8x faster than the CPU default
  echo "[serve] no CUDA device: running ComfyUI on the CPU" >&2
fi
cd "$COMFY"
exec "$ROOT/.venv/bin/python" main.py --listen 127.0.0.1 --port "${PORT:-8188}" --disable-auto-launch \
  --base-directory "$BASE" --database-url sqlite:///:memory: --disable-api-nodes \
  --disable-all-custom-nodes --whitelist-custom-nodes magicpose "${extra[@]}" ${COMFY_ARGS:-}
