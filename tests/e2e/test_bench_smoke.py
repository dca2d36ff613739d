"""Smoke test of the `make bench` tool (scripts/bench.py) at a toy size: it runs end to end (pose extraction,
ours vs the official structure, long-video memory), writes its JSON, and its figures are consistent.

A test of the tool, not of speed: no timing is asserted. The output comparison is asserted as the parity tests do
(tiny factory weights, fp32), because a bench whose official-structure driver computed something else than ours
would report a meaningless ratio.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.comfy]

ROOT = Path(__file__).resolve().parents[2]
STEPS, FRAMES = 2, 2


@pytest.fixture(scope="module")
def bench_run(comfy_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    cmd = [sys.executable, str(ROOT / "scripts" / "bench.py"), "--tiny", "--size", "64", "--frames", str(FRAMES),
           "--steps", str(STEPS), "--frame-batch", "2", "--long-frames", "4", "--long-chunk", "2",
           "--long-steps", "10", "--pose-frames", "4", "--pose-size", "128", "--out-dir", str(out)]
    env = {**os.environ, "COMFYUI_PATH": str(comfy_root)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "bench.json").read_text()), proc.stdout, out


def test_bench_writes_the_report_and_a_timestamped_copy(bench_run):
    report, stdout, out = bench_run
    assert len(list(out.glob("bench-*.json"))) == 1
    for line in ("ours / official structure, per frame", "ours / bare network passes", "max |ours - official|",
                 "long video", "pose extraction", "no accelerator", "independent reference implementation",
                 "single image (1 frame", "precision (ours, autocast", "load average"):
        assert line in stdout, line
    assert {"pose", "compare", "long", "reference", "load", "loaded", "wall_seconds"} <= set(report)
    assert "ours_final" not in report["compare"]


def test_bench_counts_the_appearance_model_calls_of_each_structure(bench_run):
    c = bench_run[0]["compare"]
    assert c["ours"]["acm_calls"] == STEPS                        # once per step for the whole video
    assert c["official"]["acm_calls_per_frame"] == STEPS           # every step of every frame
    assert c["official"]["acm_calls_for_frames"] == STEPS * FRAMES
    assert c["official"]["calls"]["controlnet"] == 2 * c["official"]["calls"]["acm"]   # cond + discarded uncond
    assert c["ours"]["calls"]["controlnet"] == STEPS                # one pass per (batched) step, cond only


def test_bench_split_and_flops_are_consistent(bench_run):
    c = bench_run[0]["compare"]
    for side in ("ours", "official"):
        s = c[side]["split_per_frame"]
        assert set(s) >= {"acm", "controlnet", "main_unet", "other", "total"}
        assert all(s[k] > 0 for k in ("acm", "controlnet", "main_cond", "main_uncond"))
        assert math.isclose(s["acm"] + s["controlnet"] + s["main_unet"] + s["other"], s["total"], rel_tol=1e-9)
        assert c[side]["peak_rss_mib"] > 0 and c[side]["seconds_per_frame"] > 0
    f = c["flops_per_pass_batch1"]
    assert f["main_cond"] > f["main_uncond"] > f["controlnet"] > 0   # the bank adds keys/values to self-attention
    assert f["acm_full"] > f["acm_truncated"] > 0
    assert c["ours"]["flops_per_frame"] < c["official"]["flops_per_frame"]
    passes = list(c["bare"]["passes"].values())
    assert passes and all(p["batch"] == 2 and p["step"] > p["acm"] > 0 for p in passes)
    assert c["bare"]["seconds_per_frame"] > 0 and c["bare"]["ours_over_bare"] > 0


def test_bench_outputs_match_the_official_structure(bench_run):
    c = bench_run[0]["compare"]
    assert c["floor_ulp"] is not None and c["floor_ulp"] > 0
    assert c["max_abs_diff"] <= max(1e-4, 2 * c["floor_ulp"]), (c["max_abs_diff"], c["floor_ulp"])
    before = c["max_abs_diff_before_step"]
    assert len(before) == STEPS and before[0] < 1e-5     # same x_T: they start together (k-space vs DDPM rounding)


def test_bench_long_video_and_pose_figures(bench_run):
    report = bench_run[0]
    runs = report["long"]["runs"]
    assert [r["frames"] for r in runs] == [2, 4] and all(r["frame_batch"] == 2 for r in runs)
    assert all(r["peak_rss_mib"] >= r["rss_before_mib"] > 0 for r in runs)
    assert report["pose"]["frames"] == 4 and report["pose"]["total_fps"] > 0


def test_bench_checks_against_the_independent_reference_implementation(bench_run):
    report = bench_run[0]
    c, ref = report["compare"], report["reference"]
    assert len(ref["max_abs_diff_per_frame"]) == c["official_frames"]
    assert ref["max_abs_diff"] <= max(1e-4, 2 * c["floor_ulp"]), (ref["max_abs_diff"], c["floor_ulp"])


def test_bench_records_load_and_the_single_image_and_precision_figures(bench_run):
    report, stdout, _ = bench_run
    load = report["load"]
    # sampled from /proc/loadavg during the run: the sampling thread itself is running when it reads (>= 1), and
    # a sampler that recorded nothing reports placeholders (0 samples, 0 running), which fail here
    assert load["samples"] >= 1 and load["max_running"] >= 1, load
    assert 0 <= load["median_1min"] <= load["max_1min"], load
    assert (report["loaded"] is None) == ("LOADED MACHINE" not in stdout)
    c = report["compare"]
    assert c["single"]["seconds_per_frame"] > 0 and c["single"]["max_abs_diff_vs_batched"] < 1e-2
    rows = {r["precision"]: r for r in c["precision"]}
    assert set(rows) == {"fp32", "bf16", "fp16"}
    assert rows["fp32"]["max_rel_dev"] == 0.0 and rows["fp32"]["speedup"] == 1.0
    bf16 = rows["bf16"]
    assert "skipped" in bf16 or 0 < bf16["max_rel_dev"] < 0.5
    auto = c["autocast_auto"]   # what autocast="auto" chooses here, from the pack's own probe
    assert auto["choice"] in ("off", "bf16", "fp16") and auto["probe"]["seconds"]["off"] > 0
    assert set(auto["speedup"]) == {"bf16", "fp16"} and auto["cpu"]["capability"]
    assert f"autocast auto -> {auto['choice']} on this machine" in stdout and "block speed-up" in stdout


def test_bench_long_video_holds_one_bank_over_ten_steps(bench_run):
    for r in bench_run[0]["long"]["runs"]:
        assert r["steps"] == 10 and r["acm_calls"] == 10
        assert r["bank_mib"] > 0 and r["peak_cache_mib"] == r["bank_mib"]
