"""The GPU check's dry run (scripts/gpu_check.sh --dry-run): the same code paths as on the GPU, on the CPU at the
smallest sizes, so the check never rots. Checked: it exits 0; its JSON has every section (correctness with the device
fp32 result within the fp32 floor, speed rows with the ACM / ControlNet / UNet split and the bare passes, the VRAM fit,
SDPA variants, the video workflow on a real ComfyUI server with its latents and a long video's peak RSS, targets),
every number in it is finite, and the table prints."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import figures

pytestmark = [pytest.mark.comfy, pytest.mark.server]

ROOT = Path(__file__).resolve().parents[2]


def _numbers(x, path="") -> list[tuple[str, float]]:
    if isinstance(x, bool) or x is None:
        return []
    if isinstance(x, (int, float)):
        return [(path, float(x))]
    if isinstance(x, dict):
        return [n for k, v in x.items() for n in _numbers(v, f"{path}.{k}")]
    if isinstance(x, list):
        return [n for i, v in enumerate(x) for n in _numbers(v, f"{path}[{i}]")]
    return []


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    env = dict(os.environ, PYTHON=sys.executable)
    t0 = time.perf_counter()
    proc = subprocess.run([str(ROOT / "scripts" / "gpu_check.sh"), "--dry-run", "--out", str(out)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=2400)
    figures.record("gpu check: dry run (s)", round(time.perf_counter() - t0, 1))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc.stdout, json.loads((out / "gpu_check.json").read_text())


def test_dry_run_writes_every_section_with_finite_numbers(dry_run):
    _, r = dry_run
    assert r["meta"]["mode"].startswith("dry-run")
    bad = [p for p, v in _numbers(r) if not math.isfinite(v)]
    assert not bad, bad
    for section in ("correctness", "speed", "server", "targets"):
        assert section in r and "error" not in r[section], (section, r.get(section))


def test_dry_run_correctness_compares_the_device_with_the_cpu_reference(dry_run):
    comp = dry_run[1]["correctness"]["device"]["comparison"]
    for what in ("eps", "ddim"):
        row = comp[what]
        assert row["max_abs"] > 0 and row["floor_cpu_fp32_vs_fp64"] > 0      # fp32 differs from float64 somewhere
        assert row["fp32_vs_cpu_fp32"] <= row["floor_cpu_fp32_vs_fp64"]     # the "device" is this CPU
        assert row["fp32_within_floor"] is True


def test_dry_run_speed_rows_split_the_time_and_fit_the_memory_curve(dry_run):
    sp = dry_run[1]["speed"]
    rows = sp["speed"]
    assert {(x["steps"], x["frame_batch"]) for x in rows} == {(1, 1), (1, 2), (2, 2)}
    for x in rows:
        assert x["seconds_per_frame"] > 0 and x["bare_seconds_per_frame"] > 0
        assert 0 < x["share"]["main_unet"] < 1 and 0 < x["share"]["acm"] < 1 and 0 < x["share"]["controlnet"] < 1
        assert x["peak_vram_mib"] is None                                    # no GPU: no VRAM figure, not a fake one
    assert [m["size"] for m in sp["memory"]] == [64, 64]
    assert any(v["variant"] == "sdpa MATH" and v["seconds_per_frame"] > 0 for v in sp["variants"])
    assert sp["vram_fit"]["measured"] is False


def test_dry_run_runs_the_video_workflow_on_a_server(dry_run):
    sv = dry_run[1]["server"]
    (run,) = sv["runs"]
    assert run["flags"] == "default" and "error" not in run, run
    assert run["latent_shape"] == [2, 4, 8, 8] and run["max_abs_latent"] > 0 and run["video_bytes"] > 0
    assert set(sv["not_run"]) == {"--lowvram", "--novram"}
    lv = sv["long_video"]
    assert lv["latent_frames"] == lv["frames"] and lv["peak_rss_mib"] >= lv["peak_rss_mib_before"] > 0


def test_dry_run_prints_the_table_with_the_targets(dry_run):
    out = dry_run[0]
    assert "MagicPose GPU check (dry-run" in out
    assert "s/frame at the best frame_batch" in out and "target <= 0.15" in out
    assert "video workflow on a ComfyUI server" in out and "correctness (parity fixture" in out
