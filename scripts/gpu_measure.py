"""The in-process measurements of the GPU check (scripts/gpu_check.py runs each as a worker process of its own).

- ``fixture``: the parity fixture (tiny factory layout, random weights, 64x64, fixed x_T): the conditional noise
  prediction eps of one MagicPose step (bank + pose ControlNet) and the final latents of a DDIM run on the
  magicpose_official schedule, in the given weight dtypes. On the CPU it gives the float64 and float32 references;
  on the device float32 (TF32 off), fp16 and bf16.
- ``speed``: MagicPose Sampler's function at full SD1.5 widths (random weights generated on the device), per weight
  dtype, steps and frame_batch: seconds per frame, sampler steps per second, the split between appearance model /
  ControlNet / main UNet / other (exclusive forward-hook time, bench_env.ModuleTimer), the bare network passes of
  the same step (bench.bare_passes: our overhead), peak VRAM (torch.cuda.max_memory_allocated) per frame_batch at
  two sizes, SDPA backend and torch.compile variants.
Each worker writes its result file after every measurement, so a run stopped by its time budget keeps what it has.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_env as E  # noqa: E402

MIB = 1024 * 1024
SIGMA = 5.0


def log(msg: str) -> None:
    print(f"[gpu-check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Result:
    """A result dict written to `path` (atomically) after every update."""

    def __init__(self, path: Path, **init):
        self.path, self.data = path, dict(init)
        self.save()

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        tmp.replace(self.path)

    def __setitem__(self, key, value) -> None:
        self.data[key] = value
        self.save()

    def append(self, key, value) -> None:
        self.data.setdefault(key, []).append(value)
        self.save()


def dtype_of(name: str):
    import torch

    return {"fp64": torch.float64, "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def random_models(pack, full: bool, dtype: str, device):
    """(main UNet ModelPatcher, MAGICPOSE_MODEL) with random weights at the factory layouts (full: SD1.5 widths),
    drawn on `device` (fast on a GPU) with the factories' scales, then handed to ComfyUI."""
    import comfy.sd
    import torch
    from support import factories

    from magicpose_core.weights import layout as L

    if not full:   # the tiny layout: the cached factory checkpoint loads faster than drawing it again
        return fixture_models(pack, dtype)[:2]
    g = torch.Generator(device=device).manual_seed(0)
    cfg = L.SD15_UNET if full else factories.TINY_UNET

    def part(prefix: str, shapes: dict) -> dict:
        out = {}
        for k, s in shapes.items():
            key = prefix + k
            if L.is_integer_key(key) or key.split(".")[-1] in L.DDPM_BUFFERS:
                out[k] = factories.init_tensor(key, s)
                continue
            x = torch.randn(s, generator=g, device=device, dtype=torch.float32)
            if key.endswith(".bias"):
                x.mul_(0.02)
            elif len(s) == 1:
                x.mul_(0.05).add_(1.0)
            else:
                x.mul_(min(0.02, math.prod(s[1:]) ** -0.5))
            out[k] = x.to("cpu", dtype_of(dtype))
        return out

    unet = comfy.sd.load_diffusion_model_state_dict(part(L.MAIN_PREFIX, L.unet_layout(cfg)),
                                                    model_options={"dtype": dtype_of(dtype)})
    parts = types.SimpleNamespace(
        appearance=part(L.ACM_PREFIX, L.appearance_layout(cfg, with_hint_block=False)),
        pose_controlnet={L.CONTROL_PREFIX + k: v for k, v in part(L.POSE_PREFIX, L.controlnet_layout(cfg)).items()})
    bundle = pack.nodes.models.build_magicpose_model(parts, dtype_of(dtype), name="gpu-check")
    return unet, bundle


# ---------------------------------------------------------------------------------------------------------------
# the parity fixture


def fixture_models(pack, dtype: str):
    """The parity tests' weights (the tiny factory checkpoint, tests/support/factories.py; generated once and cached)
    as ComfyUI models in `dtype`: (main UNet ModelPatcher, MAGICPOSE_MODEL, 0.0)."""
    import comfy.sd
    from support import factories
    from support.magicpose_env import factory_parts

    parts = factory_parts(str(factories.magicpose_checkpoint()))
    unet = comfy.sd.load_diffusion_model_state_dict(dict(parts.unet), model_options={"dtype": dtype_of(dtype)})
    return unet, pack.nodes.models.build_magicpose_model(parts, dtype_of(dtype), name="fixture"), 0.0


def fixture_outputs(pack, unet, bundle, size: int, frames: int, steps: int) -> dict:
    """eps of one conditional step at sigma 5 (frame 0) and the final latents of `steps` DDIM steps (all frames)."""
    import comfy.sample
    import torch
    from support.magicpose_env import conditioning, pose_maps, reference_latent, text_context

    P = pack.nodes.patch.model_patch
    R = pack.nodes.patch.run_sampling
    ctx, poses, z = text_context(0), pose_maps(frames, size), reference_latent(size)
    ref = pack.magicpose_core.model.reference.MagicPoseReference.from_latent(z)
    caps = {}

    def capture(args):
        caps["cond"] = args["cond_denoised"].float().cpu()
        return args["uncond"] + (args["cond"] - args["uncond"]) * args["cond_scale"]

    base = unet.clone()
    base.set_model_sampler_cfg_function(capture)
    m = P.apply_magicpose(base, bundle, ref)
    pos = P.attach_pose_control(conditioning(ctx), bundle.pose_controlnet, poses[:1])
    latent = torch.zeros((1, 4, size // 8, size // 8))
    noise = comfy.sample.prepare_noise(latent, 3)
    comfy.sample.sample(m, noise, 1, 7.0, "euler", "simple", pos, conditioning(ctx), latent,
                        sigmas=torch.tensor([SIGMA, 0.0]), disable_pbar=True)
    eps = (noise.double() * SIGMA - caps["cond"].double()) / SIGMA
    settings = R.SamplingSettings(seed=42, steps=steps, scheduler="magicpose_official", frame_batch=frames)
    final = R.magicpose_sample(unet, bundle, {"samples": z}, poses, conditioning(ctx), conditioning(ctx),
                               settings)["samples"]
    return {"eps": eps.double(), "ddim": final.double().cpu()}


def worker_fixture(a: argparse.Namespace, res: Result) -> None:
    """CPU: float64 + float32 references (saved as tensors); device: fp32 / fp16 / bf16 against them."""
    import torch

    pack = E.start_comfy(a.device)
    import comfy.model_management
    import comfy.utils

    comfy.utils.PROGRESS_BAR_ENABLED = False
    dev = comfy.model_management.get_torch_device()
    torch.backends.cuda.matmul.allow_tf32 = False   # fp32 means fp32 (cuDNN convolutions default to TF32)
    torch.backends.cudnn.allow_tf32 = False
    res["device"] = str(dev)
    res["device_name"] = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    out = {}
    for name in a.dtypes.split(","):
        t0 = time.perf_counter()
        unet, bundle, _ = fixture_models(pack, name)
        out[name] = fixture_outputs(pack, unet, bundle, a.size, a.frames, a.steps)
        log(f"fixture {name} on {dev}: {time.perf_counter() - t0:.1f} s")
        res.append("ran", {"dtype": name, "seconds": time.perf_counter() - t0})
        del unet, bundle
        comfy.model_management.soft_empty_cache()
    if a.save:
        torch.save(out, a.save)
    if a.reference:
        ref = torch.load(a.reference)
        res["comparison"] = compare_fixture(ref, out)


def compare_fixture(ref: dict, dev: dict) -> dict:
    """Deviations of the device's results from the CPU float32 result and from float64 (max |diff|), the fp32
    floor (CPU float32 against float64) and the verdict: the device's fp32 error within 4x the CPU's."""
    rows = {}
    for what in ("eps", "ddim"):
        exact, cpu32 = ref["fp64"][what], ref["fp32"][what]
        scale = float(exact.abs().max())
        floor = float((cpu32 - exact).abs().max())
        row = {"max_abs": scale, "floor_cpu_fp32_vs_fp64": floor}
        for name, r in dev.items():
            row[f"{name}_vs_cpu_fp32"] = float((r[what] - cpu32).abs().max())
            row[f"{name}_vs_fp64"] = float((r[what] - exact).abs().max())
        if "fp32" in dev:
            row["fp32_within_floor"] = row["fp32_vs_fp64"] <= 4 * floor + 1e-12 * scale
        rows[what] = row
    return rows


# ---------------------------------------------------------------------------------------------------------------
# speed and memory


def worker_speed(a: argparse.Namespace, res: Result) -> None:
    import bench
    import torch

    pack = E.start_comfy(a.device)
    import comfy.model_management
    import comfy.utils
    from support.magicpose_env import conditioning, pose_maps, reference_latent, text_context

    comfy.utils.PROGRESS_BAR_ENABLED = False
    dev = comfy.model_management.get_torch_device()
    gpu = dev.type == "cuda"
    P, R = pack.nodes.patch.model_patch, pack.nodes.patch.run_sampling
    res["device_name"] = torch.cuda.get_device_name(dev) if gpu else bench.cpu_name()
    res["weights"] = "SD1.5 widths (random)" if a.full else "tiny factory layout (random)"
    res["attention"] = bench.attention_name()
    if gpu:
        free, total = torch.cuda.mem_get_info(dev)
        res["gpu_total_mib"] = total / MIB
    fbs = [int(x) for x in a.frame_batches.split(",")]
    ctx = text_context(0)
    deadline = time.monotonic() + a.budget

    def left() -> float:
        return deadline - time.monotonic()

    def sample(unet, bundle, size, frames, steps, fb, variant=None):
        z = reference_latent(size)
        poses = pose_maps(frames, size)
        settings = R.SamplingSettings(seed=42, steps=steps, scheduler="magicpose_official", frame_batch=fb)
        E.synchronize(dev.type)
        if gpu:
            torch.cuda.reset_peak_memory_stats(dev)
        t0 = time.perf_counter()
        with variant() if variant else _null():
            R.magicpose_sample(unet, bundle, {"samples": z}, poses, conditioning(ctx), conditioning(ctx), settings)
        E.synchronize(dev.type)
        secs = time.perf_counter() - t0
        peak = torch.cuda.max_memory_allocated(dev) / MIB if gpu else None
        return secs, peak

    for dtype in a.dtypes.split(","):
        if left() < 20:
            res.append("skipped", f"{dtype}: time budget spent")
            break
        t0 = time.perf_counter()
        unet, bundle = random_models(pack, a.full, dtype, dev)
        E.load_on_device(unet, bundle.appearance, bundle.pose_controlnet.control_model_wrapped)
        log(f"speed: {res.data['weights']} in {dtype} built in {time.perf_counter() - t0:.1f} s")
        timer = E.ModuleTimer(dev.type)
        timer.attach(unet.model.diffusion_model, E.main_unet_label)
        timer.attach(bundle.appearance.model.diffusion_model, "acm")
        timer.attach(bundle.pose_controlnet.control_model, "controlnet")
        modules = {"unet": unet.model.diffusion_model, "acm": bundle.appearance.model.diffusion_model,
                   "cn": bundle.pose_controlnet.control_model, "dtype": unet.model.get_dtype_inference()}
        for steps in [int(s) for s in a.steps.split(",")]:
            for fb in fbs if steps == int(a.steps.split(",")[0]) else [a.long_fb]:
                if left() < 10:
                    res.append("skipped", f"{dtype} {steps} steps fb {fb}: time budget spent")
                    continue
                timer.enabled = False
                sample(unet, bundle, a.size, fb, 1, fb)                     # warm-up: this batch's shapes
                timer.enabled = True
                timer.reset()
                secs, peak = sample(unet, bundle, a.size, fb, steps, fb)
                split = bench.split_of(timer.of("ours")[0], secs)
                timer.enabled = False
                z = reference_latent(a.size)
                x_in = torch.randn((fb, 4, a.size // 8, a.size // 8), generator=torch.Generator().manual_seed(1))
                bare = bench.bare_passes(E, P, pack, modules, ctx, z * 0.18215, pose_maps(fb, a.size), x_in,
                                         torch.tensor([500.0]), dev, timer)
                timer.enabled = False
                bare_frame = steps * (bare["frame_step"] + bare["acm"] / fb)
                row = {"dtype": dtype, "size": a.size, "steps": steps, "frame_batch": fb, "frames": fb,
                       "seconds": secs, "seconds_per_frame": secs / fb, "it_per_s": steps / secs,
                       "share": {k: split[k] / secs for k in ("acm", "controlnet", "main_unet", "other")},
                       "bare_seconds_per_frame": bare_frame, "overhead": (secs / fb) / bare_frame - 1,
                       "peak_vram_mib": peak}
                res.append("speed", row)
                log(f"speed {dtype} {a.size}px {steps} steps fb {fb}: {secs / fb:.3f} s/frame, "
                    f"{steps / secs:.2f} it/s, overhead {row['overhead'] * 100:+.1f} %, peak "
                    f"{'n/a' if peak is None else f'{peak:.0f} MiB'}")
        if dtype == a.dtypes.split(",")[0]:
            variants(a, res, lambda *x, u=unet, b=bundle, **k: sample(u, b, *x, **k), fbs, left, gpu)
            memory_curve(a, res, lambda *x, u=unet, b=bundle: sample(u, b, *x), fbs, left, gpu, dtype)
        if dtype == a.dtypes.split(",")[-1]:   # last: compiling takes minutes, the speed rows come first
            compile_variant(a, res, unet, lambda *x: sample(*x), bundle, left)
        timer.remove()
        del unet, bundle, modules
        comfy.model_management.unload_all_models()
        comfy.model_management.soft_empty_cache()


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def variants(a, res: Result, sample, fbs: list[int], left, gpu: bool) -> None:
    """SDPA backends (torch.nn.attention.sdpa_kernel) at the middle frame_batch."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    fb = fbs[len(fbs) // 2]
    steps = int(a.steps.split(",")[0])
    names = ["FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH"] if gpu else ["MATH"]
    for name in names:
        if left() < 10:
            res.append("variants", {"variant": f"sdpa {name}", "skipped": "time budget spent"})
            continue
        try:
            secs, _ = sample(a.size, fb, steps, fb, variant=lambda n=name: sdpa_kernel([getattr(SDPBackend, n)]))
            res.append("variants", {"variant": f"sdpa {name}", "frame_batch": fb, "steps": steps,
                                    "seconds_per_frame": secs / fb, "it_per_s": steps / secs})
        except Exception as e:  # a backend this GPU / dtype does not support: recorded, not fatal
            res.append("variants", {"variant": f"sdpa {name}", "skipped": f"{type(e).__name__}: {str(e)[:200]}"})


def memory_curve(a, res: Result, sample, fbs: list[int], left, gpu: bool, dtype: str) -> None:
    """Peak VRAM per frame_batch at the second size (a short run each; the first size comes from the speed rows),
    and the largest frame_batch that fits each card size, from a least-squares line through the points."""
    for fb in fbs:
        if left() < 10:
            res.append("memory", {"size": a.size2, "frame_batch": fb, "skipped": "time budget spent"})
            continue
        secs, peak = sample(a.size2, fb, 2, fb)
        res.append("memory", {"dtype": dtype, "size": a.size2, "frame_batch": fb, "steps": 2, "seconds": secs,
                              "peak_vram_mib": peak})
    curves = {}
    rows = [r for r in res.data.get("speed", []) if r["dtype"] == dtype and r["steps"] == int(a.steps.split(",")[0])]
    rows += [r for r in res.data.get("memory", []) if "peak_vram_mib" in r]
    for size in (a.size, a.size2):
        pts = [(r["frame_batch"], r["peak_vram_mib"]) for r in rows if r["size"] == size and r["peak_vram_mib"]]
        curves[str(size)] = fit_fits(pts)
    res["vram_fit"] = {"dtype": dtype, "by_size": curves, "measured": gpu}


def fit_fits(pts: list[tuple[int, float]]) -> dict:
    """peak MiB = base + per_frame * frame_batch (least squares); the largest frame_batch under 8/12/16/24 GiB."""
    if len(pts) < 2:
        return {"points": pts, "fits": None}
    n = len(pts)
    mx, my = sum(p[0] for p in pts) / n, sum(p[1] for p in pts) / n
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    slope = sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx if sxx else 0.0
    base = my - slope * mx
    fits = {}
    for gib in (8, 12, 16, 24):
        cap = gib * 1024
        fits[f"{gib}GiB"] = 0 if base > cap else (10 ** 6 if slope <= 0 else int((cap - base) // slope))
    return {"points": pts, "base_mib": base, "per_frame_mib": slope, "fits": fits}


def compile_variant(a, res: Result, unet, sample, bundle, left) -> None:
    """torch.compile of the main UNet through ComfyUI's own wrapper (what its TorchCompileModel node does)."""
    if not a.compile:
        res.append("variants", {"variant": "torch.compile (inductor)", "skipped": "not asked for (--compile)"})
        return
    if left() < 120:
        res.append("variants", {"variant": "torch.compile (inductor)", "skipped": "under 120 s of budget left"})
        return
    from comfy_api.torch_helpers import set_torch_compile_wrapper

    fbs = [int(x) for x in a.frame_batches.split(",")]
    fb = fbs[len(fbs) // 2]
    steps = int(a.steps.split(",")[0])
    m = unet.clone()
    try:
        set_torch_compile_wrapper(m, backend="inductor")
        t0 = time.perf_counter()
        sample(m, bundle, a.size, fb, 1, fb)                         # compiles
        compile_s = time.perf_counter() - t0
        secs, _ = sample(m, bundle, a.size, fb, steps, fb)
        res.append("variants", {"variant": "torch.compile (inductor)", "frame_batch": fb, "steps": steps,
                                "compile_seconds": compile_s, "seconds_per_frame": secs / fb, "it_per_s": steps / secs})
    except Exception as e:
        res.append("variants", {"variant": "torch.compile (inductor)",
                                "skipped": f"{type(e).__name__}: {str(e)[:200]}"})


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("worker", choices=("fixture", "speed"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--result", type=Path, required=True)
    ap.add_argument("--dtypes", default="fp32")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--size2", type=int, default=96)
    ap.add_argument("--frames", type=int, default=2)
    ap.add_argument("--steps", default="10")
    ap.add_argument("--frame-batches", default="1,2")
    ap.add_argument("--long-fb", type=int, default=8)
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--budget", type=float, default=300.0)
    ap.add_argument("--save", type=Path)
    ap.add_argument("--reference", type=Path)
    a = ap.parse_args(argv)
    res = Result(a.result, worker=a.worker)
    t0 = time.perf_counter()
    {"fixture": worker_fixture, "speed": worker_speed}[a.worker](a, res)
    res["seconds"] = time.perf_counter() - t0


if __name__ == "__main__":
    main()
