"""The GPU check's driver (scripts/gpu_check.sh runs it): every measurement of the check, within a time budget, as
one JSON (written after each section, so a run cut short still reports) and a printed table (gpu_report.py).

Sections, each in a process of its own (ComfyUI picks its device per process):
1. correctness (gpu_measure.py fixture): the parity fixture on the CPU in float64 and float32, then on the device
   in fp32 (TF32 off), fp16 and bf16; the device's fp32 error must stay within 4x the CPU's fp32 floor;
2. speed and memory (gpu_measure.py speed) at full SD1.5 widths: 512x512, 25 and 50 steps, fp16 and bf16,
   frame_batch 1/4/8/16; SDPA backends and torch.compile; peak VRAM at 512 and 768 and the frame_batch that fits
   8/12/16/24 GiB;
3. the shipped video workflow on real ComfyUI servers (gpu_server.py): default, --lowvram, --novram, and a
   300-frame video's peak system RAM.
On the GPU the CPU reference of section 1 runs beside section 2 (CPU cores vs the GPU). `--dry-run` runs the same
code on the CPU at the smallest sizes (the tiny factory layout, 64x64, a step or two) for `make test`.

    scripts/gpu_check.sh [--out DIR] [--budget 450]          # on the GPU machine, after --prepare here
    scripts/gpu_check.sh --dry-run --out DIR                 # CPU, seconds
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from gpu_report import report_lines, targets  # noqa: E402

SIZES = {   # what each mode measures
    "gpu": {"fixture": dict(size=64, frames=2, steps="10", ref_dtypes="fp64,fp32", dtypes="fp32,fp16,bf16"),
            "speed": dict(full=True, size=512, size2=768, steps="25,50", frame_batches="1,4,8,16", long_fb=8,
                          dtypes="fp16,bf16", compile=True),
            "server": dict(size=512, frames=4, steps=4, frame_batch=4, long_frames=300,
                           flags=["", "--lowvram", "--novram"]),
            "budget": {"fixture": 60, "speed": 270, "server": 130}},
    "dry": {"fixture": dict(size=64, frames=1, steps="2", ref_dtypes="fp64,fp32", dtypes="fp32"),
            "speed": dict(full=False, size=64, size2=64, steps="1,2", frame_batches="1,2", long_fb=2,
                          dtypes="fp32", compile=False),
            "server": dict(size=64, frames=2, steps=1, frame_batch=2, long_frames=4, flags=[""]),
            # generous: the dry run checks code paths, not speed, and a shared 2-core CPU can be 10x slower
            "budget": {"fixture": 600, "speed": 600, "server": 600}},
}


def log(msg: str) -> None:
    print(f"[gpu-check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def worker_cmd(kind: str, device: str, result: Path, **opts) -> list[str]:
    cmd = [sys.executable, str(HERE / "gpu_measure.py"), kind, "--device", device, "--result", str(result)]
    for k, v in opts.items():
        if isinstance(v, bool):
            cmd += [f"--{k.replace('_', '-')}"] if v else []
        elif v is not None:
            cmd += [f"--{k.replace('_', '-')}", str(v)]
    return cmd


def finish(proc: subprocess.Popen, result: Path, timeout: float, what: str) -> dict:
    """Wait for a worker up to `timeout` s; its result file as it stands (partial when it was stopped)."""
    try:
        rc = proc.wait(timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        rc = "timeout"
    data = json.loads(result.read_text()) if result.is_file() else {}
    if rc != 0:
        data["error"] = f"{what} worker stopped: {'time budget spent' if rc == 'timeout' else f'exit status {rc}'}"
        log(data["error"])
    return data


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, smallest sizes (make test)")
    ap.add_argument("--out", type=Path, default=Path(os.environ["OUT"]) if os.environ.get("OUT") else None,
                    help="folder for gpu_check.json (default $OUT)")
    ap.add_argument("--budget", type=float, default=None, help="seconds in all (default 450 on the GPU, 1800 dry)")
    ap.add_argument("--skip", default="", help="comma-separated sections to skip: fixture,speed,server")
    a = ap.parse_args(argv)
    if a.out is None:
        ap.error("--out DIR is needed (or $OUT)")
    a.out.mkdir(parents=True, exist_ok=True)
    work = a.out / "work"
    work.mkdir(exist_ok=True)
    mode = "dry" if a.dry_run else "gpu"
    cfg = SIZES[mode]
    budget = a.budget or (1800.0 if a.dry_run else 450.0)
    deadline = time.monotonic() + budget
    skip = {s for s in a.skip.split(",") if s}
    device = "cpu" if a.dry_run else "cuda"
    t0 = time.perf_counter()
    report: dict = {"meta": {"mode": "dry-run (CPU, smallest sizes)" if a.dry_run else "gpu", "device": device,
                             "budget_seconds": budget, "python": sys.version.split()[0],
                             "started": time.strftime("%Y-%m-%d %H:%M:%S")}}
    path = a.out / "gpu_check.json"

    def save() -> None:
        report["meta"]["seconds"] = time.perf_counter() - t0
        report["targets"] = targets(report)
        path.write_text(json.dumps(report, indent=1, default=str))

    def left(share: float) -> float:
        return min(share, deadline - time.monotonic())

    if not a.dry_run:
        import torch  # the image's torch; only to fail early and clearly

        if not torch.cuda.is_available():
            print("gpu_check: torch sees no CUDA device here; use --dry-run on a CPU machine", file=sys.stderr)
            return 2
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    fx = cfg["fixture"]
    ref = work / "fixture_cpu.pt"
    cpu_proc = None
    if "fixture" not in skip:
        log(f"correctness: CPU float64/float32 reference of the parity fixture ({fx['size']}px, {fx['frames']} "
            f"frame(s), {fx['steps']} DDIM steps)" + ("" if a.dry_run else ", beside the speed section"))
        cpu_env = dict(env, OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 2) - 2))) if not a.dry_run else env
        cpu_proc = subprocess.Popen(worker_cmd("fixture", "cpu", work / "fixture_cpu.json", dtypes=fx["ref_dtypes"],
                                               size=fx["size"], frames=fx["frames"], steps=fx["steps"], save=ref),
                                    env=cpu_env, cwd=ROOT)
        if a.dry_run:
            report["correctness"] = {"cpu": finish(cpu_proc, work / "fixture_cpu.json", left(cfg["budget"]["fixture"]),
                                                   "CPU reference")}
            save()
    if "speed" not in skip:
        sp = cfg["speed"]
        b = left(cfg["budget"]["speed"])
        log(f"speed and memory ({b:.0f} s budget)")
        proc = subprocess.Popen(worker_cmd("speed", device, work / "speed.json", budget=b - 15, **sp), env=env,
                                cwd=ROOT)
        report["speed"] = finish(proc, work / "speed.json", b, "speed")
        save()
    if cpu_proc is not None:
        if not a.dry_run:
            report["correctness"] = {"cpu": finish(cpu_proc, work / "fixture_cpu.json", left(120), "CPU reference")}
        if ref.is_file():
            log("correctness: the fixture on the device in " + fx["dtypes"])
            proc = subprocess.Popen(worker_cmd("fixture", device, work / "fixture_dev.json", dtypes=fx["dtypes"],
                                               size=fx["size"], frames=fx["frames"], steps=fx["steps"], reference=ref),
                                    env=env, cwd=ROOT)
            report["correctness"]["device"] = finish(proc, work / "fixture_dev.json", left(cfg["budget"]["fixture"]),
                                                     "device fixture")
        save()
    if "server" not in skip:
        import gpu_measure
        import gpu_server

        sv = cfg["server"]
        res = gpu_measure.Result(work / "server.json")
        b = left(cfg["budget"]["server"])
        log(f"the video workflow on ComfyUI servers ({', '.join(f or 'default' for f in sv['flags'])}; {b:.0f} s)")
        try:
            gpu_server.run_section(res, work, Path(os.environ.get("COMFYUI_PATH") or ROOT / ".cache" / "ComfyUI"),
                                   cpu=a.dry_run, budget=b, **sv)
        except Exception as e:  # recorded: the JSON still comes back
            res["error"] = f"{type(e).__name__}: {str(e)[:1500]}"
        if a.dry_run:
            res["not_run"] = {f: "dry run on the CPU: ComfyUI ignores it under --cpu (same code path as default)"
                              for f in SIZES["gpu"]["server"]["flags"] if f not in sv["flags"]}
        report["server"] = res.data
        save()
    save()
    print("\n".join(report_lines(report)))
    log(f"wrote {path} ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
