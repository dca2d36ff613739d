"""The GPU check's table and its targets (issue 25): read from the JSON that scripts/gpu_check.py writes.

Targets (H100, 512x512, 25 steps, fp16): <= 0.15 s/frame at the best frame_batch; our overhead over the bare
network passes <= 5 %; frame_batch 4 at 512x512 within 8 GiB of VRAM.

    python scripts/gpu_report.py gpu_check.json      # prints the table again
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

S_PER_FRAME = 0.15
OVERHEAD = 0.05
VRAM_FB4_MIB = 8 * 1024


def _best(report: dict) -> dict | None:
    rows = [r for r in (report.get("speed") or {}).get("speed", []) if r["dtype"] == "fp16" and r["steps"] == 25]
    rows = rows or [r for r in (report.get("speed") or {}).get("speed", []) if r["steps"] == min(
        x["steps"] for x in report["speed"]["speed"])]
    return min(rows, key=lambda r: r["seconds_per_frame"]) if rows else None


def targets(report: dict) -> dict:
    """Each target with the measured value and whether it is met (None: not measured in this run)."""
    best = _best(report)
    fb4 = [r for r in (report.get("speed") or {}).get("speed", []) if r["frame_batch"] == 4 and r["size"] == 512
           and r.get("peak_vram_mib")]
    out = {
        "s_per_frame_best_fb": {"target": S_PER_FRAME, "value": best and best["seconds_per_frame"],
                                "frame_batch": best and best["frame_batch"], "dtype": best and best["dtype"]},
        "overhead_vs_bare": {"target": OVERHEAD, "value": best and best["overhead"]},
        "vram_fb4_512_mib": {"target": VRAM_FB4_MIB, "value": min((r["peak_vram_mib"] for r in fb4), default=None)},
    }
    for k, t in out.items():
        t["met"] = None if t["value"] is None else t["value"] <= t["target"]
    out["comparable"] = report.get("meta", {}).get("mode") == "gpu"
    return out


def _f(v, fmt: str = ".3f") -> str:
    return "n/a" if v is None else format(v, fmt)


def report_lines(r: dict) -> list[str]:
    m = r.get("meta", {})
    sp = r.get("speed") or {}
    lines = ["", f"MagicPose GPU check ({m.get('mode')}): {sp.get('device_name', '?')}, attention "
             f"{sp.get('attention', '?')}, {_f(m.get('seconds'), '.0f')} s of {_f(m.get('budget_seconds'), '.0f')} s"]
    c = r.get("correctness") or {}
    comp = (c.get("device") or {}).get("comparison")
    if comp:
        lines.append("  correctness (parity fixture, random tiny weights; max |diff|):")
        lines.append(f"    {'output':6}{'max|x|':>10}{'floor':>10}{'fp32-cpu':>10}{'fp32-f64':>10}{'fp16-f64':>10}"
                     f"{'bf16-f64':>10}  fp32 within 4x floor")
        for what, row in comp.items():
            lines.append(f"    {what:6}{row['max_abs']:10.2e}{row['floor_cpu_fp32_vs_fp64']:10.2e}"
                         f"{row.get('fp32_vs_cpu_fp32', float('nan')):10.2e}"
                         f"{row.get('fp32_vs_fp64', float('nan')):10.2e}"
                         f"{row.get('fp16_vs_fp64', float('nan')):10.2e}{row.get('bf16_vs_fp64', float('nan')):10.2e}"
                         f"  {row.get('fp32_within_floor')}")
    elif c:
        why = (c.get("device") or c.get("cpu") or {}).get("error", "no result")
        lines.append(f"  correctness: not compared ({why})")
    if sp.get("speed"):
        lines.append(f"  speed ({sp.get('weights')}):")
        lines.append(f"    {'dtype':6}{'size':>5}{'steps':>6}{'fb':>4}{'s/frame':>9}{'it/s':>7}{'ACM':>6}{'CN':>6}"
                     f"{'UNet':>6}{'other':>6}{'bare':>8}{'ovh':>7}{'VRAM MiB':>10}")
        for x in sp["speed"]:
            s = x["share"]
            lines.append(f"    {x['dtype']:6}{x['size']:5d}{x['steps']:6d}{x['frame_batch']:4d}"
                         f"{x['seconds_per_frame']:9.3f}{x['it_per_s']:7.2f}{s['acm']:6.0%}{s['controlnet']:6.0%}"
                         f"{s['main_unet']:6.0%}{s['other']:6.0%}{x['bare_seconds_per_frame']:8.3f}"
                         f"{x['overhead']:+7.1%}{_f(x['peak_vram_mib'], '10.0f'):>10}")
    for v in sp.get("variants", []):
        lines.append(f"    variant {v['variant']}: " + (f"skipped ({v['skipped']})" if "skipped" in v else
                     f"{v['seconds_per_frame']:.3f} s/frame at fb {v['frame_batch']}"
                     + (f", compiled in {v['compile_seconds']:.0f} s" if "compile_seconds" in v else "")))
    fit = sp.get("vram_fit")
    if fit:
        for size, f in fit["by_size"].items():
            if f.get("fits"):
                lines.append(f"    VRAM {size}px {fit['dtype']}: {f['base_mib']:.0f} MiB + {f['per_frame_mib']:.0f} "
                             f"MiB/frame; largest frame_batch: " + ", ".join(f"{k} {v}" for k, v in f["fits"].items()))
    sv = r.get("server") or {}
    if sv.get("runs"):
        lines.append(f"  video workflow on a ComfyUI server ({sv.get('settings')}):")
        for x in sv["runs"]:
            if "skipped" in x or "error" in x:
                lines.append(f"    {x['flags']:10} {x.get('skipped') or 'ERROR ' + x['error'][:200]}")
            else:
                eq = x.get("equal_within_floor")
                lines.append(f"    {x['flags']:10} {x['seconds']:7.1f} s, max|latent| {x['max_abs_latent']:.2f}"
                             + ("" if eq is None else f", max|diff| vs default {x['max_abs_diff_vs_default']:.2e} "
                                f"(floor {x['floor']:.2e}): {'equal' if eq else 'DIFFERENT'}"))
    lv = sv.get("long_video")
    if lv:
        lines.append(f"    long video: {lv['frames']} frames at {lv['size']}px: {lv['seconds']:.0f} s, server peak RSS "
                     f"{lv['peak_rss_mib']:.0f} MiB (before it {lv['peak_rss_mib_before']:.0f} MiB)")
    if sv.get("error"):
        lines.append(f"  server section ERROR: {sv['error'][:300]}")
    t = r.get("targets") or targets(r)
    note = "" if t.get("comparable") else " (dry run: sizes and device differ, not comparable)"
    lines.append(f"  targets (H100, 512x512, 25 steps, fp16){note}:")
    names = {"s_per_frame_best_fb": "s/frame at the best frame_batch", "overhead_vs_bare": "overhead over bare passes",
             "vram_fb4_512_mib": "peak VRAM, frame_batch 4 at 512 (MiB)"}
    for k, label in names.items():
        x = t[k]
        verdict = "n/a" if x["met"] is None else ("met" if x["met"] else "NOT met")
        lines.append(f"    {label:40} {_f(x['value'], '.3f'):>10}  target <= {x['target']}: {verdict}")
    return lines


if __name__ == "__main__":
    print("\n".join(report_lines(json.loads(Path(sys.argv[1]).read_text()))))
