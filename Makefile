# MagicPose for ComfyUI: one-command environment, tests, server, demo and benchmark.
#   make test    build .venv + ComfyUI 0.30.0 (+ the plain-install venv) when missing or stale, then run the whole
#                test suite (CPU)
#   make serve   ComfyUI on http://127.0.0.1:8188 with this pack loaded (state under .cache/serve)
#   make demo    the main job end to end (see README)
#   make bench   performance benchmark (prints a table, writes .cache/bench/*.json)
#   make gpu-check  the GPU check on a CUDA machine (scripts/gpu_check.sh: GPU_ARGS=--prepare gathers its offline
#                files here first; GPU_ARGS="--dry-run --out DIR" runs it on the CPU)
SHELL := /bin/bash
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: env test serve demo bench gpu-check clean

env:
	@COMFYUI_PATH="$$(scripts/env.sh)" && COMFYUI_PATH="$$COMFYUI_PATH" scripts/env_plain.sh >/dev/null

# The environment (both venvs) is built first, so the test run's own time is what the README states.
test:
	@COMFYUI_PATH="$$(scripts/env.sh)" && export COMFYUI_PATH && scripts/env_plain.sh >/dev/null && \
	  $(PY) -m pytest $(PYTEST_ARGS)

serve:
	@COMFYUI_PATH="$$(scripts/env.sh)" && export COMFYUI_PATH && scripts/serve.sh

demo:
	@COMFYUI_PATH="$$(scripts/env.sh)" && export COMFYUI_PATH && scripts/demo.sh

bench:
	@COMFYUI_PATH="$$(scripts/env.sh)" && export COMFYUI_PATH && $(PY) scripts/bench.py $(BENCH_ARGS)

gpu-check:
	@scripts/gpu_check.sh $(if $(GPU_ARGS),$(GPU_ARGS),--out "$${OUT:-.cache/gpu-check/out}")

clean:
	rm -rf .cache/test-logs .cache/serve .pytest_cache
