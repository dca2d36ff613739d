#!/usr/bin/env bash
# `make gpu-check`: the GPU check (CUDA correctness, the video workflow on a real ComfyUI server with default /
# --lowvram / --novram, speed and memory at full SD1.5 widths) as one short command for a bare, offline GPU machine.
#
#   scripts/gpu_check.sh --prepare [--dest DIR]     here, where PyPI is reachable: gather what the GPU image lacks
#                                                   (ComfyUI's pruned tree + wheels) into DIR (default
#                                                   .cache/gpu-check) and print the device command and carry list
#   scripts/gpu_check.sh [--out DIR] [--budget S]   there: install the gathered wheels offline into a temporary
#                                                   target, then measure; JSON to DIR/gpu_check.json (default $OUT)
#   scripts/gpu_check.sh --dry-run --out DIR        the same code paths on the CPU at the smallest sizes (make test)
#
# GPU_CHECK_DIR overrides where the gathered files are read from (default .cache/gpu-check).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DIR="${GPU_CHECK_DIR:-$ROOT/.cache/gpu-check}"

case "${1:-}" in
  --prepare)
    shift
    exec "${PYTHON:-$ROOT/.venv/bin/python}" "$ROOT/scripts/gpu_prepare.py" "$@"
    ;;
  --dry-run)
    PY="${PYTHON:-$ROOT/.venv/bin/python}"
    export COMFYUI_PATH="${COMFYUI_PATH:-$ROOT/.cache/ComfyUI}"
    exec "$PY" "$ROOT/scripts/gpu_check.py" "$@"
    ;;
esac

# --- the run on the GPU machine: nothing is fetched, everything comes from $DIR ----------------------------------
PY="${PYTHON:-python3}"
[ -d "$DIR/wheels" ] && [ -f "$DIR/comfyui.tar.gz" ] || {
  echo "gpu_check: $DIR has no wheels/ or comfyui.tar.gz: run 'scripts/gpu_check.sh --prepare' where PyPI is" \
       "reachable and carry that folder (the run tool's carry list)" >&2; exit 2; }
WORK="$(mktemp -d -t gpu-check.XXXXXX)"
echo "[gpu-check] installing $(ls "$DIR"/wheels/*.whl | wc -l) wheels offline into $WORK/site" >&2
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
  --target "$WORK/site" "$DIR"/wheels/*.whl
tar xzf "$DIR/comfyui.tar.gz" -C "$WORK"
export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
export COMFYUI_PATH="$WORK/ComfyUI"
export PYTHONUNBUFFERED=1
exec "$PY" "$ROOT/scripts/gpu_check.py" "$@"
