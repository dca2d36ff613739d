"""`make bench`: MagicPose sampling, ours vs the official structure, on identical random SD1.5-size weights.

One process (the "compare" worker) builds the main UNet, the appearance UNet (ACM) and the pose ControlNet once
(full SD1.5 widths, random weights, see bench_env.py) and runs on them, with the same seed, x_T, reference latent,
text context, pose maps and DDIM schedule:
- ours: MagicPoseSample's function (`nodes/patch/run_sampling.py: magicpose_sample`, sampler ddim, scheduler
  magicpose_official, CFG 7, frames in batches of --frame-batch): per step the ACM once for the whole video, per
  frame-step the main UNet with the bank (cond), the plain main UNet (uncond) and one ControlNet pass;
- the official structure (bench_official.py): frame after frame at batch 1, per step the ACM, the ControlNet twice
  and the main UNet twice (separate cond and uncond calls).
It prints, for each: seconds per frame, the split between ACM / ControlNet / main UNet / other (forward hooks,
exclusive time; other = sampler, CFG, Python), peak RSS, ACM calls, FLOPs and the achieved TFLOP/s, and the max
abs difference of the final latents (official latent space, x0.18215) next to the fp32 floor of that comparison
(the official structure against itself with x_T moved by +-1 ulp). It also times, in isolation on the same inputs,
the bare network passes ours needs (ACM once per step; ControlNet + main cond + main uncond per frame-step).

Timing on a shared machine: the official frames are interleaved with ours step by step (a sampler post-CFG hook
runs one step of each official frame after each step of ours; that time is excluded from ours), so both see the
same machine conditions; the median of the per-step ratios is printed next to the whole-run ratio. The official
structure's cost per frame does not depend on the number of frames, so on the CPU it runs on --official-frames
frames (default 1) plus the floor run; its seconds per frame is the median over those runs, and the output
comparison uses the frames both ran.

Checks and figures that cannot flatter us:
- the final latents of ours against the independent reference implementation of the parity tests
  (tests/parity/reference_impl.py: diffusers UNets + ControlNet with their own attention processors and DDIM loop, on
  the same weights and inputs, in a process of its own), next to the fp32 floor; the official-structure driver
  above reuses our bank code, so its agreement alone would be circular;
- the machine's load average before, during and after the run, and a LOADED mark when other work competed for the
  CPU (--wait-quiet waits up to that many seconds for a quiet machine first);
- the single-image case: ours on one frame (no frame batching, no appearance-pass amortisation) vs the official
  structure;
- precision: ours on --precision-frames frames under fp32, bf16 and fp16 autocast: seconds per frame and the max
  deviation from fp32 (a precision is skipped, with the figure, when a UNet-like block or then one step runs over 4x
  slower than in fp32), next to the `autocast="auto"` probe's figures for that block (its speed-up and deviation,
  magicpose_core/model/precision.py) and what `auto` chooses on this machine;
- pose extraction throughput (scripts/bench_pose.py, a subprocess) and, for long videos, peak RSS and bank-cache
  peak of --long-frames frames in chunks of --long-chunk vs --long-chunk frames, >= 10 steps, in a process of its
  own (peak reset between the two); on the CPU at a smaller size.

    .venv/bin/python scripts/bench.py [--size 256] [--frames 8] [--steps 10] [--dtype fp32] [--device cpu]
    .venv/bin/python scripts/bench.py --device cuda            # 512x512, 25 steps, bf16 unless given
    .venv/bin/python scripts/bench.py --tiny --size 64 --frames 2 --steps 2 --out-dir .cache/bench-smoke   # smoke run

Writes <out-dir>/bench.json (default .cache/bench) and a timestamped copy.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MIB = 1024 * 1024
GPU_TARGET_S_PER_FRAME = 0.15   # issue 7: 512x512, 25 steps, bf16 on an H100
RATIO_TARGET = 0.70             # ours / official structure, per frame, equal steps, >= 8 frames
BARE_TARGET = 1.05              # ours end-to-end / bare network passes it needs
DIFF_TARGET = 1e-4              # final latents, fp32, official latent space


# ---------------------------------------------------------------------------------------------------------------
# arguments


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    ap.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default=None,
                    help="weights of ours (default: fp32 on the CPU, bf16 on cuda); the official structure always "
                         "uses fp32 weights, under autocast to this dtype when it is not fp32 (as the official script)")
    ap.add_argument("--size", type=int, default=None, help="image side in pixels (default 256 on the CPU, 512 on cuda)")
    ap.add_argument("--frames", type=int, default=8, help="frames of ours (default 8)")
    ap.add_argument("--steps", type=int, default=None, help="DDIM steps (default 10 on the CPU, 25 on cuda)")
    ap.add_argument("--frame-batch", type=int, default=8, help="ours: frames per batch (default 8)")
    ap.add_argument("--official-frames", type=int, default=None,
                    help="frames of the official structure, plus one floor run (default 1 on the CPU, all on cuda)")
    ap.add_argument("--cfg", type=float, default=7.0)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--no-floor", action="store_true", help="skip the official +-1 ulp floor run")
    ap.add_argument("--bare-steps", type=int, default=2, help="steps after which the bare passes are timed (2)")
    ap.add_argument("--tiny", action="store_true", help="tiny factory UNet layout (smoke test), not SD1.5 widths")
    ap.add_argument("--long-frames", type=int, default=None, help="default: 32 on the CPU, 64 on cuda")
    ap.add_argument("--long-chunk", type=int, default=8)
    ap.add_argument("--long-size", type=int, default=None, help="default: 128 on the CPU, --size on cuda")
    ap.add_argument("--long-steps", type=int, default=None, help="default: 10 on the CPU, --steps on cuda (>= 10)")
    ap.add_argument("--precisions", default="fp32,bf16,fp16", help="autocast precisions of the precision table")
    ap.add_argument("--precision-frames", type=int, default=2)
    ap.add_argument("--skip-precision", action="store_true")
    ap.add_argument("--skip-single", action="store_true")
    ap.add_argument("--skip-reference", action="store_true", help="skip the independent reference check")
    ap.add_argument("--wait-quiet", type=float, default=0.0,
                    help="wait up to this many seconds for the 1-minute load average to fall below --quiet-load")
    ap.add_argument("--quiet-load", type=float, default=0.5)
    ap.add_argument("--pose-frames", type=int, default=48)
    ap.add_argument("--pose-size", type=int, default=512)
    ap.add_argument("--skip-pose", action="store_true")
    ap.add_argument("--skip-long", action="store_true")
    ap.add_argument("--out-dir", type=Path, default=ROOT / ".cache" / "bench")
    ap.add_argument("--worker", choices=("compare", "long", "reference"), help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    gpu = a.device.startswith("cuda")
    a.dtype = a.dtype or ("bf16" if gpu else "fp32")
    a.size = a.size or (512 if gpu else 256)
    a.steps = a.steps or (25 if gpu else 10)
    a.official_frames = a.frames if a.official_frames is None and gpu else (a.official_frames or 1)
    a.official_frames = max(1, min(a.official_frames, a.frames))
    a.long_size = a.long_size or (a.size if gpu else min(a.size, 128))
    a.long_steps = a.long_steps or (a.steps if gpu else 10)
    a.long_frames = a.long_frames or (64 if gpu else 32)
    if a.size % 8 or a.long_size % 8:
        ap.error("sizes must be multiples of 8")
    return a


# ---------------------------------------------------------------------------------------------------------------
# measurement helpers (workers)


def maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def split_of(seconds: dict, total: float) -> dict:
    """Seconds by module from a timer scope: ACM, ControlNet, main UNet (cond + uncond), other = total - modules."""
    main = seconds.get("main_cond", 0.0) + seconds.get("main_uncond", 0.0)
    acm, cn = seconds.get("acm", 0.0), seconds.get("controlnet", 0.0)
    return {"acm": acm, "controlnet": cn, "main_unet": main, "main_cond": seconds.get("main_cond", 0.0),
            "main_uncond": seconds.get("main_uncond", 0.0), "other": total - acm - cn - main, "total": total}


def scaled(d: dict, factor: float) -> dict:
    return {k: v * factor for k, v in d.items()}


def official_settings(pack, a: argparse.Namespace, steps: int, frame_batch: int):
    """MagicPose Sampler's settings for the comparison: ddim on the magicpose_official schedule, shared noise."""
    return pack.nodes.patch.run_sampling.SamplingSettings(seed=a.seed, steps=steps, cfg=a.cfg,
                                                          scheduler="magicpose_official", frame_batch=frame_batch)


# ---------------------------------------------------------------------------------------------------------------
# worker: ours vs the official structure


def worker_compare(a: argparse.Namespace) -> dict:
    import bench_env as E
    from bench_official import OfficialStructure

    pack = E.start_comfy("cpu" if a.device == "cpu" else "cuda")
    import comfy.model_management
    import comfy.sample
    import comfy.utils
    import torch
    from support.magicpose_env import conditioning, pose_maps, reference_latent, text_context

    comfy.utils.PROGRESS_BAR_ENABLED = False
    dev = comfy.model_management.get_torch_device()
    gpu = dev.type == "cuda"
    P = pack.nodes.patch.model_patch
    log(f"building weights ({'tiny layout' if a.tiny else 'SD1.5 widths'}, {a.dtype}) on {dev}")
    unet, bundle, build_s = E.build_models(pack, a.tiny, a.dtype)
    if a.dtype == "fp32":
        o_unet, o_bundle, o_build_s = unet, bundle, 0.0
    else:  # the official script keeps fp32 weights and runs under autocast
        o_unet, o_bundle, o_build_s = E.build_models(pack, a.tiny, "fp32")
    log(f"weights built in {build_s + o_build_s:.1f} s, RSS {E.rss_bytes() / MIB:.0f} MiB")

    n, steps, size, fb = a.frames, a.steps, a.size, a.frame_batch
    ctx, poses, z_raw = text_context(0), pose_maps(n, size), reference_latent(size)
    scale = pack.magicpose_core.model.constants.LATENT_SCALE_FACTOR
    noise = comfy.sample.prepare_noise(torch.zeros((1, 4, size // 8, size // 8)), a.seed)  # x_T of every frame

    timer = E.ModuleTimer(dev.type)
    patchers = []
    for u, b in {(id(unet), id(bundle)): (unet, bundle), (id(o_unet), id(o_bundle)): (o_unet, o_bundle)}.values():
        timer.attach(u.model.diffusion_model, E.main_unet_label)
        timer.attach(b.appearance.model.diffusion_model, "acm")
        timer.attach(b.pose_controlnet.control_model, "controlnet")
        patchers += [u, b.appearance, b.pose_controlnet.control_model_wrapped]
    E.load_on_device(*patchers)
    modules = {"unet": unet.model.diffusion_model, "acm": bundle.appearance.model.diffusion_model,
               "cn": bundle.pose_controlnet.control_model,
               "dtype": unet.model.get_dtype_inference()}   # what ComfyUI feeds the modules (manual cast included)
    autocast = None if a.dtype == "fp32" else E.torch_dtype(a.dtype)
    official = OfficialStructure(pack, o_unet.model.diffusion_model, o_bundle.appearance.model.diffusion_model,
                                 o_bundle.pose_controlnet, ctx, z_raw * scale, dev, autocast=autocast)

    # --- FLOPs of one pass of each module at batch 1 (untimed; also warms the batch-1 shapes) -------------------
    timer.enabled = False
    log("counting FLOPs (one pass of each module at batch 1)")
    flops = count_flops(E, P, pack, modules, ctx, z_raw * scale, poses[:1], dev)
    timer.enabled = True
    flops_ours_frame = steps * (flops["main_cond"] + flops["main_uncond"] + flops["controlnet"]
                                + flops["acm_truncated"] / n)
    flops_official_frame = steps * (flops["acm_full"] + 2 * flops["controlnet"] + flops["main_cond"]
                                    + flops["main_uncond"])

    # --- the official frames (+ the floor run), advanced one step after each step of ours ------------------------
    k_off = a.official_frames
    trajs = [official.start(noise, poses[k:k + 1].movedim(-1, 1), steps) for k in range(k_off)]  # (1,H,W,3)->(1,3,H,W)
    floor_tr = None
    if not a.no_floor:
        ulp = torch.nextafter(noise, noise + 1) - noise
        jitter = ulp * torch.randint(-1, 2, noise.shape, generator=torch.Generator().manual_seed(0))
        floor_tr = official.start(noise + jitter, poses[:1].movedim(-1, 1), steps)
    all_trajs = trajs + ([floor_tr] if floor_tr is not None else [])
    bare_at = sorted({min(steps - 1, (i + 1) * steps // (a.bare_steps + 1)) for i in range(a.bare_steps)})
    mem = E.PeakMemory(gpu)
    peaks = {"ours": [0, 0], "official": [0, 0]}

    def note_peak(who: str) -> None:
        rss, g = mem.take()
        peaks[who][0] = max(peaks[who][0], rss)
        peaks[who][1] = max(peaks[who][1], g or 0)

    o_patchers = patchers[3:] if o_unet is not unet else []

    def official_steps() -> None:
        if o_patchers and next(o_unet.model.diffusion_model.parameters()).device != dev:
            E.load_on_device(*o_patchers)   # ComfyUI offloaded the official fp32 copy to make room for ours
        timer.scope = "official"
        for tr in all_trajs:
            if not tr.finished:
                with E.timed(dev.type) as t:
                    official.step(tr, a.cfg)
                tr.seconds.append(t[0])
        timer.scope = "ours"

    clock = {"pause": 0.0, "last": 0.0, "ours_steps": [], "bare": {}, "diff": [], "floor": []}

    def between_steps(args):  # sampler_post_cfg_function, after each step of ours (its time is excluded from ours)
        E.synchronize(dev.type)
        t_in = time.perf_counter()
        i = len(clock["ours_steps"])
        clock["ours_steps"].append(t_in - clock["last"])
        note_peak("ours")
        if len(clock["diff"]) < steps and args["input"].shape[0] == min(n, fb):
            # where the two trajectories stand before this step, in DDPM space (k-diffusion x / sqrt(1 + sigma^2))
            x_ddpm = args["input"].float() / (1 + args["sigma"].float().view(-1, 1, 1, 1) ** 2).sqrt()
            clock["diff"].append(max(float((x_ddpm[k:k + 1] - tr.x).abs().max()) for k, tr in enumerate(trajs)))
            if floor_tr is not None:
                clock["floor"].append(float((floor_tr.x - trajs[0].x).abs().max()))
        official_steps()            # one step of each official-structure frame
        note_peak("official")
        if i in bare_at and args["input"].shape[0] == min(n, fb):  # the bare passes on this step's inputs
            ms = args["model"].model_sampling
            sigma = args["sigma"]
            clock["bare"][i] = bare_passes(E, P, pack, modules, ctx, z_raw * scale, poses[:min(n, fb)],
                                           ms.calculate_input(sigma, args["input"]), ms.timestep(sigma), dev, timer)
        clock["last"] = time.perf_counter()
        clock["pause"] += clock["last"] - t_in
        return args["denoised"]

    ours_model = unet.clone()
    ours_model.set_model_sampler_post_cfg_function(between_steps)
    log(f"ours: {n} frames in batches of {fb}, {steps} steps; after each step, one step of {len(all_trajs)} "
        f"official-structure frame(s), and the bare passes after step(s) {[i + 1 for i in bare_at]}")
    timer.reset()
    note_peak("ours")
    with E.timed(dev.type) as t:
        clock["last"] = time.perf_counter()
        out = pack.nodes.patch.run_sampling.magicpose_sample(
            ours_model, bundle, {"samples": z_raw}, poses, conditioning(ctx), conditioning(ctx),
            official_settings(pack, a, steps, fb))["samples"]
    note_peak("ours")
    while any(not tr.finished for tr in all_trajs):   # only when ours ran fewer steps than the official frames
        official_steps()
    note_peak("official")
    ours_s = t[0] - clock["pause"]
    ours_out = out.float() * scale   # official latent space (x0.18215)
    timer.enabled = False
    extra = extra_runs(a, pack, unet, bundle, ctx, poses, z_raw, out, dev)
    timer.enabled = True
    o_secs, o_calls = timer.of("official")
    u_secs, u_calls = timer.of("ours")
    off_frame_s = [sum(tr.seconds) for tr in all_trajs]
    s_off = statistics.median(off_frame_s)
    s_ours = ours_s / n
    log(f"ours: {ours_s:.1f} s = {s_ours:.2f} s/frame ({u_calls.get('acm', 0)} ACM calls); official structure: "
        + ", ".join(f"{x:.1f}" for x in off_frame_s) + " s per frame")

    # drift-robust figures (one chunk only): each step of ours against the official step / bare passes that ran
    # right after it, under the same machine conditions
    one_chunk = n <= fb
    us = clock["ours_steps"]
    off_step = [statistics.median(tr.seconds[i] for tr in all_trajs) for i in range(steps)]
    step_ratios = [(us[i] / n) / off_step[i] for i in range(steps)] if one_chunk else None
    bare = clock["bare"]
    bare_ratios = {i: us[i] / b["step"] for i, b in bare.items()} if one_chunk else {}
    bare_step = statistics.median(b["step"] for b in bare.values()) if bare else float("nan")
    if not bare:
        bare_frame = float("nan")
    elif one_chunk:
        bare_frame = steps * bare_step / n
    else:
        bare_frame = steps * (statistics.median(b["frame_step"] for b in bare.values())
                              + statistics.median(b["acm"] for b in bare.values()) / n)

    # --- summary ------------------------------------------------------------------------------------------------
    diffs = [float((ours_out[k:k + 1] - trajs[k].x.cpu()).abs().max()) for k in range(k_off)]
    floor = None if floor_tr is None else float((floor_tr.x - trajs[0].x).abs().max())
    n_tr = len(all_trajs)
    med = statistics.median
    return {
        "device": str(dev), "device_name": torch.cuda.get_device_name(dev) if gpu else cpu_name(),
        "torch_threads": torch.get_num_threads(), "attention": attention_name(),
        "weights": "tiny factory layout" if a.tiny else "SD1.5 widths (random)", "dtype": a.dtype,
        "official_dtype": "fp32" if autocast is None else f"fp32 weights, autocast {a.dtype}",
        "build_seconds": build_s + o_build_s,
        "size": size, "frames": n, "steps": steps, "frame_batch": fb, "cfg": a.cfg, "seed": a.seed,
        "official_frames": k_off, "official_runs": n_tr, "peak_memory_resettable": mem.resettable,
        "ours": {"seconds_per_frame": s_ours, "seconds": ours_s,
                 "seconds_per_frame_median_step": med(us) * steps / n if one_chunk else None,
                 "split_per_frame": scaled(split_of(u_secs, ours_s), 1 / n),
                 "calls": u_calls, "acm_calls": u_calls.get("acm", 0), "step_seconds": us,
                 "peak_rss_mib": peaks["ours"][0] / MIB, "peak_gpu_mib": peaks["ours"][1] / MIB if gpu else None,
                 "flops_per_frame": flops_ours_frame, "tflops_per_s": flops_ours_frame / s_ours / 1e12},
        "official": {"seconds_per_frame": s_off, "frame_seconds": off_frame_s,
                     "seconds_per_frame_median_step": med(off_step) * steps,
                     "split_per_frame": scaled(split_of(o_secs, sum(off_frame_s)), 1 / n_tr),
                     "calls": o_calls, "acm_calls_per_frame": o_calls.get("acm", 0) // n_tr,
                     "acm_calls_for_frames": o_calls.get("acm", 0) // n_tr * n,
                     "step_seconds": [tr.seconds for tr in all_trajs],
                     "peak_rss_mib": peaks["official"][0] / MIB,
                     "peak_gpu_mib": peaks["official"][1] / MIB if gpu else None,
                     "flops_per_frame": flops_official_frame, "tflops_per_s": flops_official_frame / s_off / 1e12},
        "ratio_run": s_ours / s_off, "ratio_steps": med(step_ratios) if step_ratios else None,
        "ratio": med(step_ratios) if step_ratios else s_ours / s_off, "step_ratios": step_ratios,
        "flop_ratio": flops_ours_frame / flops_official_frame,
        "bare": {"at_steps": sorted(bare), "passes": {str(i): b for i, b in bare.items()},
                 "seconds_per_frame": bare_frame, "ours_over_bare_run": s_ours / bare_frame,
                 "ours_over_bare_steps": med(bare_ratios.values()) if bare_ratios else None,
                 "ours_over_bare": med(bare_ratios.values()) if bare_ratios else s_ours / bare_frame},
        "flops_per_pass_batch1": flops,
        "max_abs_diff": max(diffs), "max_abs_diff_per_frame": diffs, "floor_ulp": floor,
        "max_abs_diff_before_step": clock["diff"], "floor_before_step": clock["floor"],
        "max_abs_latent": float(max(tr.x.abs().max() for tr in trajs)),
        "maxrss_mib": maxrss_bytes() / MIB,
        "ours_final": [ours_out[k].tolist() for k in range(k_off)],   # for the reference check (not in the report)
        **extra,
    }


def extra_runs(a, pack, unet, bundle, ctx, poses, z_raw, out, dev) -> dict:
    """The single-image case and the precision table (same weights, x_T and inputs as the main run)."""
    from support.magicpose_env import conditioning

    E = sys.modules["bench_env"]
    P = pack.nodes.patch.model_patch
    res: dict = {"single": None, "precision": []}

    def ours(frames: int, steps: int, autocast: str = "off"):
        with E.timed(dev.type) as t:
            lat = pack.nodes.patch.run_sampling.magicpose_sample(
                unet, bundle, {"samples": z_raw}, poses[:frames], conditioning(ctx), conditioning(ctx),
                official_settings(pack, a, steps, frames), options=P.MagicPoseOptions(autocast=autocast))["samples"]
        return lat.float(), t[0]

    if not a.skip_single:
        log("single image: ours on 1 frame (no batching, no amortisation)")
        lat, secs = ours(1, a.steps)
        res["single"] = {"seconds_per_frame": secs, "max_abs_diff_vs_batched": float((lat[0] - out[0].float()).abs()
                                                                                       .max())}
    if a.skip_precision:
        return res
    k = max(1, min(a.precision_frames, a.frames))
    block, choice, reason = E.autocast_probe(pack, dev.type)   # ~1 s: what autocast="auto" chooses here, and why
    precision = pack.magicpose_core.model.precision
    res["autocast_auto"] = {"choice": choice, "reason": reason, "probe": block.to_json(),
                            "speedup": {n: block.speedup(n) for n in precision.HALF},
                            "cpu": vars(precision.cpu_features()) if dev.type == "cpu" else None,
                            "min_speedup": precision.MIN_SPEEDUP, "max_deviation": precision.MAX_DEVIATION}
    log(f"autocast auto -> {choice}: {reason}; {block.summary()}")
    base = None
    for name in [p.strip() for p in a.precisions.split(",") if p.strip()]:
        row = {"precision": name, "frames": k}
        try:
            if name != "fp32" and base is not None:
                slow = 1 / max(block.speedup(name), 1e-9)   # the probe's block: time under autocast / fp32 time
                row["micro_slowdown"] = slow
                if slow > 4:
                    row["skipped"] = f"a UNet-like block ran {slow:.0f}x slower than fp32 under autocast {name}"
                    res["precision"].append(row)
                    log(f"precision {name}: skipped ({row['skipped']})")
                    continue
                _, probe = ours(1, 1, name)   # one step of one frame: skip what is far slower than fp32
                row["probe_seconds_per_step"] = probe
                if probe > 4 * base["seconds_per_frame_step"]:
                    row["skipped"] = (f"one step took {probe:.1f} s, over 4x fp32's "
                                      f"{base['seconds_per_frame_step']:.1f} s")
                    res["precision"].append(row)
                    log(f"precision {name}: skipped ({row['skipped']})")
                    continue
            log(f"precision {name}: ours on {k} frame(s), {a.steps} steps, autocast {name}")
            lat, secs = ours(k, a.steps, "off" if name == "fp32" else name)
        except (RuntimeError, ValueError) as e:   # no autocast of this dtype on this device / torch
            row["skipped"] = str(e).splitlines()[0][:160]
            res["precision"].append(row)
            continue
        row.update(seconds_per_frame=secs / k, seconds_per_frame_step=secs / k / a.steps)
        if name == "fp32":
            base = dict(row, latent=lat)
        if base is not None:
            ref = base["latent"]
            row["max_abs_dev"] = float((lat - ref).abs().max())
            row["max_rel_dev"] = row["max_abs_dev"] / float(ref.abs().max())
            row["speedup"] = base["seconds_per_frame"] / row["seconds_per_frame"]
        res["precision"].append(row)
    return res


def worker_reference(a: argparse.Namespace) -> dict:
    """The independent reference implementation (tests/parity/reference_impl.py) on the same weights and inputs:
    final latents (official space) of the frames the official structure ran."""
    import bench_env as E

    E.start_comfy("cpu" if a.device == "cpu" else "cuda")
    import comfy.sample
    import torch
    from parity.reference_impl import OfficialMagicPose
    from support import factories
    from support.magicpose_env import pose_maps, reference_latent, text_context

    from magicpose_core.weights import layout as L

    cfg = factories.TINY_UNET if a.tiny else L.SD15_UNET
    t0 = time.perf_counter()
    log("independent reference: building the diffusers UNets and ControlNet from the same weights")
    ref = OfficialMagicPose(lambda: E._part(L.MAIN_PREFIX, L.unet_layout(cfg)),
                            lambda: E._part(L.ACM_PREFIX, L.appearance_layout(cfg, with_hint_block=False)),
                            lambda: E._part(L.POSE_PREFIX, L.controlnet_layout(cfg)))
    build = time.perf_counter() - t0
    size, k = a.size, a.official_frames
    ctx, poses, z_raw = text_context(0), pose_maps(a.frames, size), reference_latent(size)
    noise = comfy.sample.prepare_noise(torch.zeros((1, 4, size // 8, size // 8)), a.seed)
    finals = []
    t0 = time.perf_counter()
    for i in range(k):
        finals.append(ref.ddim(noise, a.steps, ctx, z_raw * 0.18215, poses[i:i + 1].movedim(-1, 1), a.cfg)[0].tolist())
    return {"finals": finals, "build_seconds": build, "seconds_per_frame": (time.perf_counter() - t0) / k}


def _acm_call(P, acm, z, t, ctx, sink: dict, full: bool):
    writer = P.BankWriter(sink, last=None) if full else P.BankWriter(sink)
    return acm(z, t, context=ctx, control=None,
               transformer_options={"patches": {"attn1_patch": [writer]}, "cond_or_uncond": [0]})


def count_flops(E, P, pack, m: dict, ctx, z, pose1, dev) -> dict:
    """FLOPs of one call of each pass at batch 1: ACM (full and stopped after its last site), ControlNet, main UNet
    with the bank (cond) and plain (uncond)."""
    import torch

    dtype = m["dtype"]
    t = torch.full((1,), 501.0, device=dev, dtype=dtype)
    c, zz = ctx.to(dev, dtype), z.to(dev, dtype)
    x = torch.randn((1, 4) + tuple(z.shape[-2:])).to(dev, dtype)
    hint = pose1.movedim(-1, 1).to(dev, dtype)   # (1, H, W, 3) -> (1, 3, H, W)
    bank: dict = {}
    out = {"acm_full": E.flops_of(lambda: _acm_call(P, m["acm"], zz, t, c, {}, True)),
           "acm_truncated": E.flops_of(lambda: _acm_call(P, m["acm"], zz, t, c, bank, False)),
           "controlnet": E.flops_of(lambda: m["cn"](x=x, hint=hint, timesteps=t, context=c))}
    with torch.no_grad():
        control = m["cn"](x=x, hint=hint, timesteps=t, context=c)
    stats = pack.magicpose_core.model.attention_bank.BankStats()
    state = P.CallState([bank], torch.ones(1, dtype=torch.bool), 1.0, stats)
    out["main_cond"] = E.flops_of(lambda: m["unet"](x, t, context=c, control=control, transformer_options={
        "patches": {"attn1_patch": [P.BankReader()]}, P.CALL_KEY: state, "cond_or_uncond": [0]}))
    out["main_uncond"] = E.flops_of(lambda: m["unet"](x, t, context=c, transformer_options={"cond_or_uncond": [1]}))
    return out


def bare_passes(E, P, pack, m: dict, ctx, z, poses, x_in, t, dev, timer) -> dict:
    """Seconds of the network passes ours needs for one step of a frame batch, called directly on that step's
    inputs (x_in: the UNet input, t: the model timestep; no sampler, no wrappers, no CFG): the ACM once (stopped
    after its last site, as ours), then at the batch the ControlNet, the main UNet with the bank and the plain main
    UNet. step = all four; frame_step = (ControlNet + cond + uncond) / batch."""
    import torch

    b = poses.shape[0]
    dtype = m["dtype"]
    x = x_in.to(dev, dtype)
    tb = t.to(dev, dtype).expand(b)
    c1, zz = ctx.to(dev, dtype), z.to(dev, dtype)
    cb = c1.expand(b, -1, -1)
    hint = poses.movedim(-1, 1).to(dev, dtype)   # (B, H, W, 3) -> (B, 3, H, W)
    res = {}
    timer.enabled = False
    with torch.no_grad():
        bank: dict = {}
        with E.timed(dev.type) as s:
            try:
                _acm_call(P, m["acm"], zz, tb[:1], c1, bank, False)
            except Exception as e:
                if type(e).__name__ != "_BankComplete":
                    raise
        res["acm"] = s[0]
        with E.timed(dev.type) as s:
            control = m["cn"](x=x, hint=hint, timesteps=tb, context=cb)
        res["controlnet_batch"] = s[0]
        state = P.CallState([bank], torch.ones(b, dtype=torch.bool), 1.0,
                            pack.magicpose_core.model.attention_bank.BankStats())
        with E.timed(dev.type) as s:
            m["unet"](x, tb, context=cb, control=control, transformer_options={
                "patches": {"attn1_patch": [P.BankReader()]}, P.CALL_KEY: state, "cond_or_uncond": [0]})
        res["main_cond_batch"] = s[0]
        with E.timed(dev.type) as s:
            m["unet"](x, tb, context=cb, transformer_options={"cond_or_uncond": [1]})
        res["main_uncond_batch"] = s[0]
    timer.enabled = True
    res["batch"] = b
    res["frame_step"] = (res["controlnet_batch"] + res["main_cond_batch"] + res["main_uncond_batch"]) / b
    res["step"] = res["acm"] + res["frame_step"] * b
    log(f"bare passes at batch {b}: ACM {res['acm']:.2f} s, ControlNet {res['controlnet_batch']:.2f} s, "
        f"main cond {res['main_cond_batch']:.2f} s, main uncond {res['main_uncond_batch']:.2f} s")
    return res


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"cpu ({os.cpu_count()} cores)"


def attention_name() -> str:
    from comfy.ldm.modules import attention

    return getattr(attention.optimized_attention, "__name__", str(attention.optimized_attention))


# ---------------------------------------------------------------------------------------------------------------
# worker: long videos (peak memory per configuration, in a process of their own)


def worker_long(a: argparse.Namespace) -> dict:
    import bench_env as E

    pack = E.start_comfy("cpu" if a.device == "cpu" else "cuda")
    import comfy.model_management
    import comfy.utils
    from support.magicpose_env import conditioning, pose_maps, reference_latent, text_context

    comfy.utils.PROGRESS_BAR_ENABLED = False
    dev = comfy.model_management.get_torch_device()
    gpu = dev.type == "cuda"
    unet, bundle, build_s = E.build_models(pack, a.tiny, a.dtype)
    E.load_on_device(unet, bundle.appearance, bundle.pose_controlnet.control_model_wrapped)
    size, fb, steps = a.long_size, a.long_chunk, a.long_steps
    ctx, z_raw = text_context(0), reference_latent(size)
    mem, trim = E.PeakMemory(gpu), E.malloc_trim()
    exact = E.exact_malloc()   # RSS follows live tensors, not freed heap (bench_env.exact_malloc)
    res = {"build_seconds": build_s, "peak_memory_resettable": mem.resettable, "exact_malloc": exact, "runs": []}
    made = []
    apply = pack.nodes.patch.run_sampling.apply_magicpose

    def spy(*args, **kw):   # the patched model, to read its bank statistics
        made.append(apply(*args, **kw))
        return made[-1]

    pack.nodes.patch.run_sampling.apply_magicpose = spy
    for n in (a.long_chunk, a.long_frames):
        poses = pose_maps(n, size)
        trim()   # freed heap back to the OS: the weights' build left gigabytes a reset peak would hide
        base = E.rss_bytes()
        mem.take()
        with E.timed(dev.type) as t:
            out = pack.nodes.patch.run_sampling.magicpose_sample(
                unet, bundle, {"samples": z_raw}, poses, conditioning(ctx), conditioning(ctx),
                official_settings(pack, a, steps, fb))["samples"]
        peak, peak_gpu = mem.take()
        assert out.shape == (n, 4, size // 8, size // 8)
        r = {"frames": n, "frame_batch": fb, "size": size, "steps": steps, "seconds": t[0],
             "rss_before_mib": base / MIB, "peak_rss_mib": peak / MIB, "extra_rss_mib": (peak - base) / MIB,
             "poses_mib": poses.numel() * poses.element_size() / MIB,
             "peak_gpu_mib": peak_gpu / MIB if gpu else None, "loadavg": os.getloadavg()}
        stats = pack.nodes.patch.model_patch.magicpose_run(made[-1]).stats
        r.update(acm_calls=stats.acm_calls, bank_mib=stats.bank_bytes / MIB,
                 peak_cache_mib=stats.peak_cache_bytes / MIB)
        res["runs"].append(r)
        log(f"long video: {n} frames in chunks of {fb} at {size}x{size}, {steps} step(s): {t[0]:.1f} s, peak RSS "
            f"{r['peak_rss_mib']:.0f} MiB (+{r['extra_rss_mib']:.0f} MiB over the loaded weights)")
        del out, poses
    return res


# ---------------------------------------------------------------------------------------------------------------
# orchestration


def run_worker(a: argparse.Namespace, kind: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--result", str(result)]
        for k in ("device", "dtype", "size", "frames", "steps", "frame_batch", "official_frames", "bare_steps", "cfg",
                  "seed", "long_frames", "long_chunk", "long_size", "long_steps"):
            cmd += [f"--{k.replace('_', '-')}", str(getattr(a, k))]
        cmd += (["--tiny"] if a.tiny else []) + (["--no-floor"] if a.no_floor else [])
        cmd += ["--precisions", a.precisions, "--precision-frames", str(a.precision_frames)]
        cmd += (["--skip-precision"] if a.skip_precision else []) + (["--skip-single"] if a.skip_single else [])
        subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        return json.loads(result.read_text())


def run_pose(a: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "pose.json"
        env = {**os.environ, "GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "3"}  # MediaPipe's log noise
        proc = subprocess.run([sys.executable, str(HERE / "bench_pose.py"), "--frames", str(a.pose_frames), "--size",
                               str(a.pose_size), "--json", str(result)], cwd=ROOT, env=env, capture_output=True,
                              text=True)
        if proc.returncode:
            sys.stderr.write(proc.stderr)
            raise RuntimeError(f"scripts/bench_pose.py failed with exit status {proc.returncode}")
        print(proc.stdout, end="", flush=True)
        return json.loads(result.read_text())


def main(argv=None) -> None:
    a = parse_args(argv)
    if a.worker:
        res = {"compare": worker_compare, "long": worker_long, "reference": worker_reference}[a.worker](a)
        a.result.write_text(json.dumps(res, indent=1, default=str))
        return
    t0 = time.perf_counter()
    log(f"ours vs official structure: {a.size}x{a.size}, {a.frames} frames (batches of {a.frame_batch}), {a.steps} "
        f"steps, {a.dtype}, {a.device}; official structure on {a.official_frames} frame(s)"
        + ("" if a.no_floor else " + 1 floor run"))
    waited = wait_quiet(a.wait_quiet, a.quiet_load)
    report: dict = {"args": {k: str(v) for k, v in vars(a).items()},
                    "started": datetime.now().isoformat(timespec="seconds"), "loadavg_start": os.getloadavg(),
                    "waited_for_quiet_seconds": waited, "cpu_count": os.cpu_count()}
    sampler = LoadSampler()
    sampler.start()
    if not a.skip_pose:
        log(f"pose extraction: {a.pose_frames} frames of {a.pose_size}x{a.pose_size} (scripts/bench_pose.py)")
        report["pose"] = run_pose(a)
    report["compare"] = run_worker(a, "compare")
    ours_final = report["compare"].pop("ours_final")
    if not a.skip_reference:
        log(f"independent reference implementation (tests/parity/reference_impl.py) on {a.official_frames} frame(s), "
            "in a process of its own")
        ref = run_worker(a, "reference")
        diffs = [max_abs(o, r) for o, r in zip(ours_final, ref.pop("finals"))]
        report["reference"] = {**ref, "max_abs_diff": max(diffs), "max_abs_diff_per_frame": diffs}
    if not a.skip_long:
        log(f"long video: {a.long_chunk} then {a.long_frames} frames in chunks of {a.long_chunk}, "
            f"{a.long_size}x{a.long_size}, {a.long_steps} step(s), in a process of their own")
        report["long"] = run_worker(a, "long")
    report["loadavg_end"] = os.getloadavg()
    report["load"] = sampler.stop()
    report["loaded"] = loaded_verdict(report)
    report["wall_seconds"] = time.perf_counter() - t0
    print_report(report, a)
    a.out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=1, default=str)
    (a.out_dir / "bench.json").write_text(text)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    (a.out_dir / f"bench-{stamp}.json").write_text(text)
    log(f"wrote {a.out_dir / 'bench.json'} and bench-{stamp}.json ({report['wall_seconds']:.0f} s in all)")


def max_abs(a, b) -> float:
    """max |a - b| of two nested lists of floats (same shape)."""
    if isinstance(a, list):
        return max(max_abs(x, y) for x, y in zip(a, b))
    return abs(a - b)


class LoadSampler:
    """The 1-minute load average and the runnable-task count (/proc/loadavg), sampled every 5 s during the run."""

    def __init__(self, interval: float = 5.0):
        import threading

        self.interval, self.samples = interval, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                parts = Path("/proc/loadavg").read_text().split()
                self.samples.append((float(parts[0]), int(parts[3].split("/")[0])))
            except (OSError, ValueError, IndexError):
                pass
            self._stop.wait(self.interval)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        load = [s[0] for s in self.samples] or [0.0]
        running = [s[1] for s in self.samples] or [0]
        return {"max_1min": max(load), "median_1min": statistics.median(load), "max_running": max(running),
                "samples": len(self.samples)}


def loaded_verdict(r: dict) -> str | None:
    """Why the run counts as made on a loaded machine, or None. The bench keeps up to one busy task per core
    (torch threads = cores), so other work shows as load above the core count, or load before it started."""
    cores = r.get("cpu_count") or 1
    why = []
    if r["loadavg_start"][0] > 0.5:
        why.append(f"load {r['loadavg_start'][0]:.1f} before the start")
    if r["load"]["median_1min"] > cores + 0.5:
        why.append(f"median load {r['load']['median_1min']:.1f} during the run on {cores} cores")
    return "; ".join(why) or None


def wait_quiet(limit: float, threshold: float) -> float:
    """Wait up to `limit` seconds for the 1-minute load average to fall below `threshold`; seconds waited."""
    t0 = time.perf_counter()
    if limit > 0 and os.getloadavg()[0] >= threshold:
        log(f"waiting up to {limit:.0f} s for a quiet machine (load {os.getloadavg()[0]:.1f}, want < {threshold})")
        while os.getloadavg()[0] >= threshold and time.perf_counter() - t0 < limit:
            time.sleep(10)
    return time.perf_counter() - t0


def _ok(flag: bool) -> str:
    return "met" if flag else "NOT met"


def print_report(r: dict, a: argparse.Namespace) -> None:
    c = r["compare"]
    o, u, b = c["official"], c["ours"], c["bare"]
    print()
    print(f"MagicPose benchmark: {c['device_name']}, torch threads {c['torch_threads']}, attention {c['attention']}; "
          f"load average {r['loadavg_start'][0]:.1f} -> {r['loadavg_end'][0]:.1f} (max {r['load']['max_1min']:.1f}, "
          f"median {r['load']['median_1min']:.1f} during the run)")
    if r.get("loaded"):
        print(f"  *** LOADED MACHINE: {r['loaded']}: timings and ratios are not comparable with a quiet run ***")
    else:
        print("  machine quiet during the run (no other load seen)")
    print(f"  weights: {c['weights']}; ours {c['dtype']}, official structure {c['official_dtype']}; built in "
          f"{c['build_seconds']:.0f} s")
    print(f"  {c['size']}x{c['size']}, {c['steps']} DDIM steps (eta 0, magicpose_official schedule), CFG {c['cfg']}, "
          f"seed {c['seed']}, identical weights, x_T, reference, text context and pose maps")
    print(f"  ours: MagicPoseSample on {c['frames']} frames in batches of {c['frame_batch']}; official structure: "
          f"{c['official_frames']} frame(s) + {c['official_runs'] - c['official_frames']} floor run, batch 1, one "
          f"step of each after every step of ours (its cost per frame does not depend on the frame count)")
    print()
    print(f"  {'seconds per frame':24}{'run':>7}{'median':>8}{'ACM':>7}{'CN':>7}{'UNet':>7}{'=cond':>7}"
          f"{'+uncond':>8}{'other':>7}{'ACM calls':>10}{'peak RSS':>10}{'TFLOP/frame':>12}{'TFLOP/s':>8}")
    for name, d, calls in (("official structure", o, f"{o['acm_calls_per_frame']}/frame"),
                           ("ours (MagicPoseSample)", u, f"{u['acm_calls']}")):
        s = d["split_per_frame"]
        m = d["seconds_per_frame_median_step"]
        print(f"  {name:24}{d['seconds_per_frame']:7.2f}{'n/a' if m is None else f'{m:.2f}':>8}{s['acm']:7.2f}"
              f"{s['controlnet']:7.2f}{s['main_unet']:7.2f}{s['main_cond']:7.2f}{s['main_uncond']:8.2f}"
              f"{s['other']:7.2f}{calls:>10}{d['peak_rss_mib'] / 1024:8.2f} G{d['flops_per_frame'] / 1e12:12.3f}"
              f"{d['tflops_per_s']:8.3f}")
    passes = list(b["passes"].values())
    if passes:
        p0 = passes[0]
        print(f"  {'bare passes ours needs':24}{b['seconds_per_frame']:7.2f}   (per step, on that step's inputs: ACM "
              f"{p0['acm']:.2f} s; at batch {p0['batch']}: ControlNet {p0['controlnet_batch']:.2f}, main cond "
              f"{p0['main_cond_batch']:.2f}, main uncond {p0['main_uncond_batch']:.2f} s)")
    print("  (run = whole run / frames; median = median step time x steps / frames; split from the whole run)")
    print()
    rs = c["ratio_steps"]
    print(f"  ours / official structure, per frame: {c['ratio']:.3f}  (target <= {RATIO_TARGET}: "
          f"{_ok(c['ratio'] <= RATIO_TARGET)}); {'median of the per-step ratios; ' if rs is not None else ''}"
          f"whole runs {c['ratio_run']:.3f}; FLOP ratio {c['flop_ratio']:.3f}")
    bs = b["ours_over_bare_steps"]
    print(f"  ours / bare network passes:           {b['ours_over_bare']:.3f}  (target <= {BARE_TARGET}: "
          f"{_ok(b['ours_over_bare'] <= BARE_TARGET)}); {'median over the paired steps; ' if bs is not None else ''}"
          f"whole run vs the bare passes x steps {b['ours_over_bare_run']:.3f}")
    fl = c["floor_ulp"]
    target = f"  (target <= {DIFF_TARGET:.0e} in fp32: {_ok(c['max_abs_diff'] <= DIFF_TARGET)})" \
        if c["dtype"] == "fp32" else f"  (ours {c['dtype']}: no target)"
    print(f"  max |ours - official|, final latents x0.18215 ({len(c['max_abs_diff_per_frame'])} frame(s)): "
          f"{c['max_abs_diff']:.2e}{target}")
    if fl is not None:
        print(f"    fp32 floor, official structure vs itself with x_T +-1 ulp: {fl:.2e} (difference / floor "
              f"{c['max_abs_diff'] / fl:.2f}); max |latent| {c['max_abs_latent']:.1f}: random weights do not denoise")
    if c["max_abs_diff_before_step"]:
        print("    before each step, ours vs official: " + " ".join(f"{x:.0e}" for x in c["max_abs_diff_before_step"])
              + f"; final {c['max_abs_diff']:.0e}")
    if c["floor_before_step"]:
        print("    before each step, the floor:         " + " ".join(f"{x:.0e}" for x in c["floor_before_step"])
              + f"; final {fl:.0e}")
    if "reference" in r:
        ref = r["reference"]
        target = f"target <= {DIFF_TARGET:.0e} in fp32: {_ok(ref['max_abs_diff'] <= DIFF_TARGET)}" \
            if c["dtype"] == "fp32" else f"ours {c['dtype']}: no target"
        print(f"  max |ours - independent reference implementation| (tests/parity/reference_impl.py, diffusers; "
              f"{len(ref['max_abs_diff_per_frame'])} frame(s)): {ref['max_abs_diff']:.2e} ({target}"
              + (f"; fp32 floor {fl:.2e}" if fl is not None else "") + ")")
    s1 = c.get("single")
    if s1:
        print(f"  single image (1 frame, no batching, no amortisation): ours {s1['seconds_per_frame']:.2f} s/frame, "
              f"official structure {o['seconds_per_frame']:.2f} s/frame: ratio "
              f"{s1['seconds_per_frame'] / o['seconds_per_frame']:.3f}"
              f" (same latent as in the batch to {s1['max_abs_diff_vs_batched']:.0e})")
    if c.get("precision"):
        print(f"  precision (ours, autocast, {c['precision'][0]['frames']} frame(s) in one batch, {c['steps']} steps; "
              f"deviation from fp32 in max |diff| / max |latent|):")
        auto = c.get("autocast_auto")
        chosen = {"off": "fp32"}.get(auto["choice"], auto["choice"]) if auto else None
        print(f"    {'precision':10}{'s/frame':>9}{'speed-up':>10}{'max dev':>10}{'block speed-up':>16}"
              f"{'block dev':>11}")
        for row in c["precision"]:
            name = row["precision"]
            block = ""
            if auto and name != "fp32":
                sp, dev = auto["speedup"].get(name, 0.0), auto["probe"]["deviation"].get(name)
                block = f"{sp:15.2f}x" + (f"{dev:11.1e}" if dev is not None else f"{'n/a':>11}")
            mark = "  <- auto" if name == chosen else ""
            if "skipped" in row:
                print(f"    {name:10}  skipped: {row['skipped']}{block}{mark}")
            else:
                print(f"    {name:10}{row['seconds_per_frame']:9.2f}{row.get('speedup', 1.0):9.2f}x"
                      f"{row.get('max_rel_dev', 0.0):10.1e}{block}{mark}")
        if auto:
            p = auto["probe"]
            print(f"    autocast auto -> {auto['choice']} on this machine: {auto['reason']} (probe: block "
                  f"{tuple(p['shape'])}, fp32 {p['seconds'].get('off', float('nan')) * 1e3:.1f} ms, "
                  f"{p['wall_seconds']:.1f} s in all; rule: >= {auto['min_speedup']}x and deviation <= "
                  f"{auto['max_deviation']})")
    print(f"  ACM calls for {c['frames']} frames: ours {u['acm_calls']} (= steps), official structure "
          f"{o['acm_calls_for_frames']} (= steps x frames)")
    if c["device"].startswith("cuda"):
        ok = c["size"] == 512 and c["steps"] == 25
        print(f"  GPU: ours {u['seconds_per_frame']:.3f} s/frame, {u['tflops_per_s']:.1f} TFLOP/s achieved"
              + (f" (target <= {GPU_TARGET_S_PER_FRAME} s/frame on an H100: "
                 f"{_ok(u['seconds_per_frame'] <= GPU_TARGET_S_PER_FRAME)})" if ok else ""))
        print(f"  peak GPU memory: ours {u['peak_gpu_mib']:.0f} MiB, official structure {o['peak_gpu_mib']:.0f} MiB")
    else:
        print("  GPU: no accelerator in this run, so no GPU figure")
    if "long" in r:
        print()
        print("  long video (one process; peak RSS while sampling, loaded weights included):")
        for v in r["long"]["runs"]:
            gpu = f", peak GPU {v['peak_gpu_mib']:.0f} MiB" if v.get("peak_gpu_mib") else ""
            print(f"    {v['frames']:4d} frames in chunks of {v['frame_batch']} at {v['size']}x{v['size']}, "
                  f"{v['steps']} step(s): peak RSS {v['peak_rss_mib'] / 1024:.2f} GiB "
                  f"(+{v['extra_rss_mib']:.0f} MiB over the loaded weights), {v['seconds']:.0f} s{gpu}; bank cache "
                  f"peak {v['peak_cache_mib']:.1f} MiB = {v['peak_cache_mib'] / max(v['bank_mib'], 1e-9):.0f} bank(s) "
                  f"of {v['bank_mib']:.1f} MiB")
    if "pose" in r:
        p = r["pose"]
        print()
        print(f"  pose extraction ({p['frames']} frames {p['size']}x{p['size']}, MediaPipe Holistic, CPU): detect "
              f"{p['detect_tracking_fps']:.1f} fps tracking / {p['detect_static_fps']:.1f} fps static; "
              f"extraction + rendering {p['total_fps']:.1f} fps")
    print()


if __name__ == "__main__":
    main()
