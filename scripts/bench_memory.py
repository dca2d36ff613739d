"""Peak memory of MagicPose sampling against the number of steps and frame chunks (issue 12's memory table).

Builds the full-width random SD1.5 / appearance / ControlNet weights once (bench_env.py), then for each
configuration FRAMES:FRAME_BATCH runs MagicPoseSample's function (ddim, magicpose_official, CFG 7) and records the
peak RSS (VmHWM, reset before each run; freed heap is returned to the OS first with glibc's malloc_trim, else
new tensors reuse the gigabytes freed while building the weights and RSS cannot see them; every large allocation is
its own mmap, so RSS follows live tensors: bench_env.exact_malloc), the peak GPU memory, and
the most the pack's bank cache held after any step (read through a post-CFG hook; works on old checkouts too).
`--pack-root` loads another checkout of the pack (e.g. a worktree of an older commit) to measure "before" with the
same script.

    .venv/bin/python scripts/bench_memory.py --size 128 --steps 50 --runs 1:1 4:1 [--pack-root OLD_CHECKOUT] [--json f]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
MIB = 1024 * 1024


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--runs", nargs="+", default=["1:1", "4:1"], help="FRAMES:FRAME_BATCH per run")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--pack-root", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    import bench_env as E

    pack = E.start_comfy("cpu" if a.device == "cpu" else "cuda", a.pack_root)
    import comfy.model_management
    import comfy.utils
    from support.magicpose_env import conditioning, pose_maps, reference_latent, text_context

    comfy.utils.PROGRESS_BAR_ENABLED = False
    gpu = comfy.model_management.get_torch_device().type == "cuda"
    unet, bundle, build_s = E.build_models(pack, a.tiny, a.dtype)
    E.load_on_device(unet, bundle.appearance, bundle.pose_controlnet.control_model_wrapped)
    ctx, z = text_context(0), reference_latent(a.size)
    mem = E.PeakMemory(gpu)
    trim = E.malloc_trim()
    exact = E.exact_malloc()   # RSS follows live tensors (else freed, fragmented heap inflates the peak)
    made = []
    orig = pack.nodes.patch.run_sampling.apply_magicpose

    def spy(*args, **kw):  # the patched model, to read its bank statistics afterwards (new code only)
        made.append(orig(*args, **kw))
        return made[-1]

    pack.nodes.patch.run_sampling.apply_magicpose = spy
    out = {"pack_root": str(a.pack_root or E.ROOT), "size": a.size, "steps": a.steps, "dtype": a.dtype,
           "build_seconds": build_s, "loadavg_start": os.getloadavg(), "exact_malloc": exact, "runs": []}
    for spec in a.runs:
        frames, fb = (int(v) for v in spec.split(":"))
        poses = pose_maps(frames, a.size)
        cache_peak, rss_steps = [0], []

        def watch(args, _peak=cache_peak):   # after each step: what the bank cache holds, and the RSS
            _peak[0] = max(_peak[0], pack.nodes.patch.model_patch.magicpose_run(made[-1]).cache.nbytes())
            rss_steps.append(E.rss_bytes())
            return args["denoised"]

        model = unet.clone()
        model.set_model_sampler_post_cfg_function(watch)
        trim()
        base = E.rss_bytes()
        mem.take()
        t0 = time.perf_counter()
        run_sampling = pack.nodes.patch.run_sampling
        settings = run_sampling.SamplingSettings(steps=a.steps, scheduler="magicpose_official", frame_batch=fb)
        lat = run_sampling.magicpose_sample(model, bundle, {"samples": z}, poses, conditioning(ctx), conditioning(ctx),
                                            settings)["samples"]
        secs = time.perf_counter() - t0
        peak, peak_gpu = mem.take()
        stats = getattr(pack.nodes.patch.model_patch.magicpose_run(made[-1]), "stats", None)
        r = {"frames": frames, "frame_batch": fb, "chunks": -(-frames // fb), "seconds": secs,
             "rss_before_mib": base / MIB, "peak_rss_mib": peak / MIB, "extra_rss_mib": (peak - base) / MIB,
             "peak_gpu_mib": peak_gpu / MIB if gpu else None, "acm_calls": getattr(stats, "acm_calls", None),
             "bank_mib": getattr(stats, "bank_bytes", 0) / MIB or None,
             "peak_cache_mib": getattr(stats, "peak_cache_bytes", 0) / MIB or None,
             "cache_after_steps_max_mib": cache_peak[0] / MIB,
             # RSS above the start after each step (the post-CFG hook runs once per step, all chunks included)
             "rss_after_steps_mib": [round((v - base) / MIB, 1) for v in rss_steps], "loadavg": os.getloadavg()}
        out["runs"].append(r)
        print(f"{a.size}x{a.size} {a.steps} steps, {frames} frame(s) in chunks of {fb} ({r['chunks']} chunk(s)): "
              f"peak RSS +{r['extra_rss_mib']:.0f} MiB over {base / MIB:.0f} MiB, {secs:.0f} s; bank cache held "
              f"up to {r['cache_after_steps_max_mib']:.1f} MiB"
              + (f", bank cache peak {r['peak_cache_mib']:.1f} MiB (one bank {r['bank_mib']:.1f} MiB)"
                 if r["bank_mib"] else "")
              + (f"; RSS after the first / last step +{r['rss_after_steps_mib'][0]:.0f} / "
                 f"+{r['rss_after_steps_mib'][-1]:.0f} MiB" if rss_steps else "")
              + f"; load {r['loadavg'][0]:.1f}", flush=True)
        del lat, poses
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
