"""Cost of the temporal sources (nodes/patch/temporal_sources.py): extra tokens per site, time per frame, peak memory.

On the full SD1.5 widths with random weights (scripts/bench_env.py), the MagicPose sampling path (MagicPose Apply's
patch with the sampler's step-major `frame_batch` chunks, ddim / ddim_uniform, CFG 7, shared x_T):
- for temporal mode off / first / previous / both: seconds per frame (--frames frames in chunks of --frame-batch,
  --steps steps at --size), the ratio to "off", the anchor tokens appended per conditional row at each site, and the
  anchor cache's peak (the states earlier chunks recorded for later chunks of the same step);
- a long video: --long-frames frames in chunks of --long-chunk, off vs both: peak RSS while sampling (Linux VmHWM,
  reset between runs after freed heap is returned to the OS) above the RSS before it, and the anchor cache's peak;
  memory does not depend on the number of steps by design (the cache holds only the current step), so a few steps
  are enough; --only long skips the per-mode timings.
The effect on flicker is not measured here (random weights do not render anything); measure it on real renders with
the evaluation tool's flicker metric.

    .venv/bin/python scripts/bench_temporal.py [--size 128] [--frames 8] [--frame-batch 4] [--steps 4]
    .venv/bin/python scripts/bench_temporal.py --device cuda --size 512 --steps 25 --long-size 512
    .venv/bin/python scripts/bench_temporal.py --tiny --size 64 --frames 4 --steps 2 --long-frames 8   # smoke run
    .venv/bin/python scripts/bench_temporal.py --only long --long-steps 2      # 64 frames, off vs both, 64x64
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # bench_env (the scripts folder; never the repo root)
MIB = 1024 * 1024
MODES = ("off", "first", "previous", "both")
SD15_BANK_VALUES_512 = 11_550_720   # one frame's post-norm1 states at the 16 sites, 512x512 (docs/method.md §10)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--dtype", default="fp32", choices=("fp32", "fp16", "bf16"))
    p.add_argument("--tiny", action="store_true", help="tiny factory widths (smoke run)")
    p.add_argument("--only", default="all", choices=("all", "modes", "long"),
                   help="run only the per-mode timings or only the long-video memory case")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--frame-batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--long-frames", type=int, default=64)
    p.add_argument("--long-chunk", type=int, default=8)
    p.add_argument("--long-size", type=int, default=64)
    p.add_argument("--long-steps", type=int, default=4)
    p.add_argument("--out", default=str(HERE.parent / ".cache" / "bench" / "bench_temporal.json"))
    a = p.parse_args(argv)
    for name in ("size", "long_size"):
        v = getattr(a, name)
        if v % 8 or not 8 <= v <= 2048:
            p.error(f"--{name.replace('_', '-')} must be a multiple of 8 within 8..2048")
    for name in ("frames", "frame_batch", "steps", "long_frames", "long_chunk", "long_steps"):
        if not 1 <= getattr(a, name) <= 1024:
            p.error(f"--{name.replace('_', '-')} must be within 1..1024")
    return a


def sample(pack, unet, bundle, mode: str, frames: int, frame_batch: int, size: int, steps: int):
    """(latents, TemporalRun or None) for `frames` pose maps through the MagicPose sampling path."""
    import comfy.sample
    import torch
    from support.magicpose_env import conditioning, pose_maps, reference_latent, text_context

    P, T = pack.nodes.patch.model_patch, pack.nodes.patch.temporal_sources
    ref = pack.magicpose_core.model.reference.MagicPoseReference.from_latent(reference_latent(size))
    m = P.apply_magicpose(unet, bundle, ref, P.MagicPoseOptions(frame_batch=frame_batch))
    m = T.add_temporal_sources(m, pack.magicpose_core.model.temporal.TemporalOptions(mode))
    ctx = text_context(0)
    pos = P.attach_pose_control(conditioning(ctx), bundle.pose_controlnet, pose_maps(frames, size))
    latent = torch.zeros((frames, 4, size // 8, size // 8))
    noise = comfy.sample.prepare_noise(latent[:1], 0).expand(frames, -1, -1, -1).contiguous()
    out = comfy.sample.sample(m, noise, steps, 7.0, "ddim", "ddim_uniform", pos, conditioning(ctx), latent,
                              disable_pbar=True, seed=0)
    return out, T.temporal_run(m)


def modes_case(pack, unet, bundle, a, dev) -> dict:
    """Seconds per frame, anchor tokens and the anchor cache's peak for each temporal mode."""
    import bench_env as E

    res, base = {}, None
    print(f"temporal modes: {a.frames} frames in chunks of {a.frame_batch}, {a.steps} steps, {a.size}x{a.size}",
          flush=True)
    for mode in MODES:
        with E.timed(dev.type) as t:
            out, run = sample(pack, unet, bundle, mode, a.frames, a.frame_batch, a.size, a.steps)
        spf = t[0] / a.frames
        base = spf if mode == "off" else base
        r = {"seconds_per_frame": spf, "ratio_to_off": spf / base}
        if run is not None:
            calls = max(1, run.stats.anchor_calls)
            r["anchor_tokens_per_row_per_site"] = {"/".join(map(str, k)): v // calls
                                                   for k, v in sorted(run.stats.extra_tokens.items())}
            r["anchor_cache_peak_mib"] = run.stats.peak_cache_bytes / MIB
        res[mode] = r
        extra = ""
        if run is not None:
            tokens = sorted(set(r["anchor_tokens_per_row_per_site"].values()))
            extra = f", anchor tokens per row per site {tokens}, anchor cache peak {r['anchor_cache_peak_mib']:.1f} MiB"
        print(f"{mode:>9}: {spf:7.2f} s/frame ({spf / base:.2f}x off){extra}", flush=True)
        del out
    return res


def long_case(pack, unet, bundle, a, dev, widths: str) -> dict:
    """Peak RSS (above the RSS before sampling) and the anchor cache's peak for a long video, off vs both."""
    import gc

    import bench_env as E

    gpu = dev.type == "cuda"
    mem, trim, res = E.PeakMemory(gpu), E.malloc_trim(), {}
    E.exact_malloc()   # RSS follows live tensors, not freed heap
    print(f"long video: {a.long_frames} frames in chunks of {a.long_chunk} at {a.long_size}x{a.long_size}, "
          f"{a.long_steps} steps, {widths}, {a.dtype}", flush=True)
    for mode in ("off", "both"):
        gc.collect()
        trim()
        before = E.rss_bytes()
        mem.take()
        with E.timed(dev.type) as t:
            out, run = sample(pack, unet, bundle, mode, a.long_frames, a.long_chunk, a.long_size, a.long_steps)
        peak, peak_gpu = mem.take()
        stats = None if run is None else run.stats
        r = {"frames": a.long_frames, "frame_batch": a.long_chunk, "size": a.long_size, "steps": a.long_steps,
             "widths": widths, "seconds": t[0], "rss_before_mib": before / MIB, "peak_rss_mib": peak / MIB,
             "peak_rss_above_before_mib": (peak - before) / MIB,
             "peak_gpu_mib": peak_gpu / MIB if gpu else None,
             "anchor_cache_peak_mib": 0.0 if stats is None else stats.peak_cache_bytes / MIB,
             "anchor_states_recorded": 0 if stats is None else stats.recorded,
             "anchor_states_read_from_cache": 0 if stats is None else stats.cached_reads,
             "anchor_cache_left_after": 0 if run is None else len(run.cache),
             "peak_memory_resettable": mem.resettable}
        res[mode] = r
        gpu_s = f", peak GPU {r['peak_gpu_mib']:.0f} MiB" if gpu else ""
        print(f"  {mode:>4}: {t[0]:.0f} s, peak RSS {r['peak_rss_mib']:.0f} MiB ({r['peak_rss_above_before_mib']:+.0f} "
              f"MiB above the {r['rss_before_mib']:.0f} MiB before){gpu_s}, anchor cache peak "
              f"{r['anchor_cache_peak_mib']:.2f} MiB ({r['anchor_states_recorded']} states recorded, "
              f"{r['anchor_states_read_from_cache']} read, {r['anchor_cache_left_after']} left after)", flush=True)
        del out, run
    d = res["both"]["peak_rss_above_before_mib"] - res["off"]["peak_rss_above_before_mib"]
    print(f"  both - off: {d:+.0f} MiB peak RSS; the anchor cache held at most "
          f"{res['both']['anchor_cache_peak_mib']:.2f} MiB", flush=True)
    return res


def main(argv=None) -> None:
    a = parse_args(argv)
    import bench_env as E

    pack = E.start_comfy(a.device)
    import importlib

    importlib.import_module(f"{E.PACK_NAME}.nodes.patch.temporal_sources")
    import comfy.model_management
    import comfy.utils

    comfy.utils.PROGRESS_BAR_ENABLED = False
    dev = comfy.model_management.get_torch_device()
    unet, bundle, build_s = E.build_models(pack, a.tiny, a.dtype)
    E.load_on_device(unet, bundle.appearance, bundle.pose_controlnet.control_model_wrapped)
    print(f"weights ({'tiny factory' if a.tiny else 'full SD1.5'} widths, {a.dtype}) built in {build_s:.1f} s on "
          f"{dev}", flush=True)
    sample(pack, unet, bundle, "off", 1, 1, a.long_size if a.only == "long" else a.size, 1)  # warm-up

    res = {"args": vars(a), "modes": {}, "long": {}}
    widths = "tiny factory widths" if a.tiny else "full SD1.5 widths"
    if a.only in ("all", "modes"):
        res["modes"] = modes_case(pack, unet, bundle, a, dev)
    if a.only in ("all", "long"):
        res["long"] = long_case(pack, unet, bundle, a, dev, widths)
    per_set = SD15_BANK_VALUES_512 * {"fp32": 4, "fp16": 2, "bf16": 2}[a.dtype] / MIB
    res["anchor_set_512_mib"] = per_set
    print(f"at 512x512 ({a.dtype}) one frame's states at the 16 sites are {per_set:.1f} MiB; the anchor cache holds at "
          f"most one set for 'first' or 'previous' and two for 'both' (only with frame chunks), whatever the steps "
          f"and frames", flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
