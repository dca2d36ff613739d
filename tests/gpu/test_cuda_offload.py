"""On a CUDA device (`pytest -m gpu`; skipped elsewhere): the shipped video workflow on real ComfyUI servers started
with the default flags, `--lowvram` and `--novram` (ComfyUI's model management then offloads the appearance model and
the pose ControlNet, registered as additional / control models) completes and gives the default run's latents within
one fp16 ulp relative (scripts/gpu_server.py)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.comfy, pytest.mark.server, pytest.mark.gpu]

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))


def test_lowvram_and_novram_servers_equal_the_default_run(comfy_root, tmp_path):
    import gpu_measure
    import gpu_server

    res = gpu_measure.Result(tmp_path / "server.json")
    gpu_server.run_section(res, tmp_path, comfy_root, cpu=False, size=256, frames=4, steps=2, frame_batch=2,
                           long_frames=0, flags=["", "--lowvram", "--novram"], budget=500)
    runs = {r["flags"]: r for r in res.data["runs"]}
    assert set(runs) == {"default", "--lowvram", "--novram"}
    for name, r in runs.items():
        assert "error" not in r and "skipped" not in r, r
        if name != "default":
            assert r["equal_within_floor"], r
