#!/usr/bin/env bash
# `make demo`: MagicPose end to end, headless. Starts ComfyUI on 127.0.0.1 (a free port) in the background with
# this pack, runs workflows/api/video_dance_retarget_api.json through the headless client on sample inputs made
# here (scripts/make_sample_inputs.py: a reference photo and a driving video with sound, from images bundled in
# scikit-image and matplotlib; nothing is downloaded), writes the video under outputs/ and stops the server.
#
#   make demo                    the real weights (see below); exits 2 saying what to put where when missing
#   DEMO_WEIGHTS=tiny make demo  random-weight test checkpoints (tests/support/factories.py), 128x128, 4 steps,
#                                8 frames: shows the whole path works in a few minutes on a CPU; the video is noise
#
# Real weights, looked for in this order: .cache/demo/models/{magicpose,checkpoints}/, then $MAGICPOSE_MODELS (a
# folder with the files, flat or in magicpose/ and checkpoints/ subfolders), then $COMFYUI_MODELS (an existing
# ComfyUI models folder: magicpose/ and checkpoints/). Needed:
#   - MagicPose: model_state-110000.pth or .th (official, 9.15 GB), or its converted model_state-110000.appearance.*
#     and .pose_controlnet.* safetensors;
#   - SD1.5: model_state-110000.sd15.fp16.safetensors, the SD1.5 bundled in the official file, written by
#     `python -m magicpose_core.checkpoint convert DIR/model_state-110000.th DIR --with-sd15`.
# Files found outside .cache/demo/models are linked into it (the .th is converted to safetensors there on first use).
#
# Other settings: DEMO_FRAMES (driving frames; default 16, tiny 8), DEMO_STEPS (default 50 = official, tiny 4),
# DEMO_SIZE (default 512 = official, tiny 128), COMFY_ARGS (extra ComfyUI arguments), DEMO_OUT (the video;
# default outputs/magicpose_demo.mp4, tiny: outputs/magicpose_demo_tiny_noise.mp4), DEMO_BASE (ComfyUI's base
# folder: models, input, output, the server log; default .cache/demo).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
COMFY="${COMFYUI_PATH:?run through make demo, or set COMFYUI_PATH to a ComfyUI 0.30 checkout}"
BASE="${DEMO_BASE:-$ROOT/.cache/demo}"
LOG="$BASE/server.log"
WORKFLOW="$ROOT/workflows/api/video_dance_retarget_api.json"
WEIGHTS="${DEMO_WEIGHTS:-real}"
SECONDS=0

say() { echo "[demo] $*" >&2; }
die() { local code="$1"; shift; echo "[demo] $*" >&2; exit "$code"; }

case "$WEIGHTS" in
  tiny) FRAMES="${DEMO_FRAMES:-8}"; STEPS="${DEMO_STEPS:-4}"; SIZE="${DEMO_SIZE:-128}"
        OUT="${DEMO_OUT:-$ROOT/outputs/magicpose_demo_tiny_noise.mp4}" ;;
  real) FRAMES="${DEMO_FRAMES:-16}"; STEPS="${DEMO_STEPS:-50}"; SIZE="${DEMO_SIZE:-512}"
        OUT="${DEMO_OUT:-$ROOT/outputs/magicpose_demo.mp4}" ;;
  *) die 2 "DEMO_WEIGHTS must be 'tiny' (random test weights) or unset (the real weights), got '$WEIGHTS'" ;;
esac
FPS=8
mkdir -p "$BASE"/{custom_nodes,input,output,temp,user,inputs,models/magicpose,models/checkpoints} "$(dirname "$OUT")"
find "$BASE/input" -maxdepth 1 -type f -delete  # only this run's uploads (the client does not overwrite)
ln -sfn "$ROOT" "$BASE/custom_nodes/magicpose"
SETS=()

# --- weights ---------------------------------------------------------------------------------------------
link_model() {  # link_model FILE FOLDER: make FILE visible in .cache/demo/models/FOLDER (no-op when it is there)
  local dst="$BASE/models/$2/$(basename "$1")"
  [ "$(readlink -f "$1")" = "$(readlink -f "$dst" 2>/dev/null || true)" ] || ln -sfn "$(readlink -f "$1")" "$dst"
}
first_match() {  # first_match PATTERN DIR...: the first existing file DIR/PATTERN
  local pattern="$1" d f; shift
  for d in "$@"; do
    [ -n "$d" ] && [ -d "$d" ] || continue
    for f in "$d"/$pattern; do [ -f "$f" ] && { echo "$f"; return 0; }; done
  done
  return 1
}

if [ "$WEIGHTS" = tiny ]; then
  say "DEMO_WEIGHTS=tiny: random-weight test checkpoints; the output video will be NOISE (the path is real)"
  say "generating or reusing the factory checkpoints (first time: ~2.3 GB under .cache/factories, a minute or two)"
  mapfile -t files < <("$PY" -P - "$ROOT" <<'EOF'
import sys
sys.path += [sys.argv[1], sys.argv[1] + "/tests"]
from support import factories
print(factories.sd15_checkpoint())
print(factories.magicpose_checkpoint())
EOF
)
  [ "${#files[@]}" -eq 2 ] || die 1 "could not make the factory checkpoints"
  link_model "${files[0]}" checkpoints
  link_model "${files[1]}" magicpose
  SETS+=(--set "Checkpoint.ckpt_name=$(basename "${files[0]}")" --set "MagicPose model.ckpt_name=$(basename "${files[1]}")")
else
  mp_dirs=("$BASE/models/magicpose" "${MAGICPOSE_MODELS:-}" "${MAGICPOSE_MODELS:+$MAGICPOSE_MODELS/magicpose}"
           "${COMFYUI_MODELS:+$COMFYUI_MODELS/magicpose}")
  ck_dirs=("$BASE/models/checkpoints" "${MAGICPOSE_MODELS:+$MAGICPOSE_MODELS/checkpoints}"
           "${COMFYUI_MODELS:+$COMFYUI_MODELS/checkpoints}" "${mp_dirs[@]}")
  looked="$(printf '%s ' "${mp_dirs[@]}" "${ck_dirs[@]:0:3}" | tr -s ' ')"
  th="$(first_match model_state-110000.pth "${mp_dirs[@]}" || first_match model_state-110000.th "${mp_dirs[@]}" || true)"
  app="$(first_match 'model_state-110000.appearance.*safetensors' "${mp_dirs[@]}" || true)"
  pose=""
  [ -n "$app" ] && pose="$(first_match 'model_state-110000.pose_controlnet.*safetensors' "$(dirname "$app")" || true)"
  sd15="$(first_match model_state-110000.sd15.fp16.safetensors "${ck_dirs[@]}" ||
          first_match 'model_state-110000.sd15.*safetensors' "${ck_dirs[@]}" || true)"
  if [ -z "$th" ] && { [ -z "$app" ] || [ -z "$pose" ]; }; then
    say "the real MagicPose weights are missing (looked in: $looked)"
    "$PY" -P - "$ROOT" "$BASE/models/magicpose" <<'EOF' >&2
import sys
sys.path.append(sys.argv[1])
from magicpose_core.weights import hub
print("[demo] " + hub.missing_weights_message(sys.argv[2]))
EOF
    say "then write the SD1.5 part next to it: .venv/bin/python -m magicpose_core.checkpoint convert" \
        "$BASE/models/magicpose/model_state-110000.pth $BASE/models/magicpose --with-sd15"
    say "(or set MAGICPOSE_MODELS / COMFYUI_MODELS to where the files are). DEMO_WEIGHTS=tiny make demo runs" \
        "the same path on random weights."
    exit 2
  fi
  if [ -z "$sd15" ]; then
    src="${th:-$BASE/models/magicpose/model_state-110000.th}"
    say "the SD1.5 checkpoint model_state-110000.sd15.fp16.safetensors is missing (looked in: $looked)."
    say "It is the SD1.5 bundled in the official file; write it with:"
    say "  .venv/bin/python -m magicpose_core.checkpoint convert $src $(dirname "$src") --with-sd15"
    [ -n "$th" ] || say "(that needs model_state-110000.th: the converted parts alone do not contain the SD1.5)"
    exit 2
  fi
  if [ -n "$th" ]; then
    link_model "$th" magicpose
  else
    link_model "$app" magicpose
    link_model "$pose" magicpose
    SETS+=(--set "MagicPose model.ckpt_name=$(basename "$app")")
  fi
  link_model "$sd15" checkpoints
  SETS+=(--set "Checkpoint.ckpt_name=$(basename "$sd15")")
  say "weights: ${th:-$app} + $sd15"
fi

SETS+=(--set "Sampler.steps=$STEPS")
while read -r s; do SETS+=(--set "$s"); done < <("$PY" -P - "$WORKFLOW" "$SIZE" <<'EOF'
import json, sys
for nid, node in json.load(open(sys.argv[1])).items():     # the untitled size inputs of the shipped workflow
    if node["class_type"] in ("MagicPoseLoadReference", "MagicPoseExtractPose"):
        print(f"{nid}.width={sys.argv[2]}\n{nid}.height={sys.argv[2]}")
EOF
)

# --- sample inputs ---------------------------------------------------------------------------------------
say "making the sample inputs ($FRAMES frames at $FPS fps) in $BASE/inputs"
"$PY" scripts/make_sample_inputs.py "$BASE/inputs" --frames "$FRAMES" --fps "$FPS" >/dev/null

# --- server ----------------------------------------------------------------------------------------------
PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
URL="http://127.0.0.1:$PORT"
extra=()
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  extra+=(--cpu --use-pytorch-cross-attention)
  [ "$WEIGHTS" = real ] && say "no CUDA GPU: ComfyUI runs on the CPU; $FRAMES frames x $STEPS steps at ${SIZE}px take" \
    "long there (set DEMO_FRAMES / DEMO_STEPS / DEMO_SIZE to shorten)"
fi
SERVER_PID=""
stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  if kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
  say "server stopped"
}
trap stop_server EXIT
trap 'exit 130' INT TERM

say "starting ComfyUI on $URL (log: $LOG)"
(cd "$COMFY" && exec "$PY" main.py --listen 127.0.0.1 --port "$PORT" --disable-auto-launch \
  --base-directory "$BASE" --database-url sqlite:///:memory: --disable-api-nodes \
  --disable-all-custom-nodes --whitelist-custom-nodes magicpose "${extra[@]}" ${COMFY_ARGS:-}) >"$LOG" 2>&1 &
SERVER_PID=$!
for i in $(seq 1 360); do
  kill -0 "$SERVER_PID" 2>/dev/null || { tail -n 30 "$LOG" >&2; die 1 "ComfyUI exited while starting (log above)"; }
  curl -sf --noproxy '*' -o /dev/null "$URL/system_stats" && break
  [ "$i" -eq 360 ] && { tail -n 30 "$LOG" >&2; die 1 "ComfyUI did not answer within 3 minutes (log above)"; }
  sleep 0.5
done
say "server up after ${SECONDS}s"

# --- the run ---------------------------------------------------------------------------------------------
say "running video_dance_retarget: $FRAMES frames, ${SIZE}x${SIZE}, $STEPS steps"
rm -f "$OUT"
set +e
"$PY" -m magicpose_core.client run "$WORKFLOW" --server "$URL" --reference "$BASE/inputs/reference.png" \
  --driving "$BASE/inputs/driving.mp4" --out "$OUT" "${SETS[@]}"
rc=$?
set -e
if [ "$rc" -ne 0 ]; then
  say "the run failed (client exit code $rc); server log: $LOG"
  exit "$rc"
fi
"$PY" - "$OUT" <<'EOF' >&2
import sys
import av
with av.open(sys.argv[1]) as c:
    v = c.streams.video[0]
    frames = sum(1 for _ in c.decode(v))
    sound = "with sound" if c.streams.audio else "no sound"
print(f"[demo] {sys.argv[1]}: {frames} frames {v.width}x{v.height} at {float(v.average_rate):g} fps, {sound}")
EOF
[ "$WEIGHTS" = tiny ] && say "NOTE: made with random test weights: the video is noise. Install the real weights" \
  "and run 'make demo' for the real result."
say "done in ${SECONDS}s: $OUT"
