"""What a clip's length costs in memory and time: the step-by-step workflow vs the streaming node (issue 27).

Two paths run the same clip on the random-weight test checkpoints (tests/support/factories.py: SD1.5 widths at
the top level, 1 step by default):
- `step`: the shipped `video_dance_retarget` API workflow (Load Video -> Select Frames -> Extract Pose -> MagicPose
  Sampler -> VAE Decode -> Frames to Video; every stage holds the whole clip);
- `stream`: the shipped `video_dance_long` API workflow (MagicPose Render Video, one window at a time), when it is
  in workflows/api/.
Both are shrunk the same way (model size, steps, mediapipe detector, the bench's inputs), as the tests do.

Measured (docs/performance.md §10 says how to read them):
1. **Tracked bytes** (`track` phase, one child process): ComfyUI's execution engine in-process
   (scripts/inprocess_comfy.py) under scripts/frame_memory_tracker.py: the peak bytes of torch storages of at
   least one frame (size x size x 3 bytes, a uint8 RGB frame at the model size) allocated during the run, the
   peak number of pixel frames they held, and the tracemalloc peak (numpy + Python). A warm-up run of each path
   first, so models and the reference are loaded and cached before anything is counted.
2. **Time per frame**: untracked runs, the paths interleaved for each clip length (order alternating), in the
   same process; the ratio stream / step is reported.
3. **Smallest memory cap** (`cap` phase, optional, root only): a real ComfyUI server (tests/support/server.py)
   in a memory cgroup (v2 `memory.max` + `memory.swap.max=0`, or v1 `memory.limit_in_bytes`), fresh for each
   try; a try passes when the prompt succeeds within its time limit. The cap is bisected (geometric midpoints)
   between an uncapped run's peak and a floor, until the bracket is within `--cap-tol`.

Output: a table on stdout and `.cache/bench/long_video.json`. Per-frame bytes are the slope between the shortest
and the longest clip; RAM per minute of video = slope x (W x H / size^2) x fps x 60 (frame-sized tensors scale
with the pixel count; the numpy part's slope is not scaled), at 512^2 and 768^2 and 30 fps; and from the pixel
frames held: held-frame slope x W x H x 3 x 4 bytes x fps x 60 (the VAE workspace, sized by the free RAM, left out).

    .venv/bin/python scripts/bench_long_video.py [--frames 32 128 512] [--size 64] [--steps 1] [--paths step stream]
        [--cap-frames 32 128] [--cap-size 128] [--cap-tol 0.05] [--no-time] [--json PATH]
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for p in (ROOT, ROOT / "tests", HERE):        # appended, never prepended (our nodes/ must not shadow ComfyUI's)
    if str(p) not in sys.path:
        sys.path.append(str(p))

MIB = 1024 * 1024
WORKFLOWS = {"step": "video_dance_retarget", "stream": "video_dance_long"}
FPS = 30.0
MINUTE_FRAMES = int(FPS * 60)
CACHE = ROOT / ".cache" / "bench"
WARM_FRAMES = 4                 # the warm-up clip of each path (loads and caches models and the reference)


def comfy_path() -> Path:
    return Path(os.environ.get("COMFYUI_PATH") or ROOT / ".cache" / "ComfyUI")


def api_file(path: str) -> Path:
    return ROOT / "workflows" / "api" / f"{WORKFLOWS[path]}_api.json"


def available_paths(wanted: list[str]) -> list[str]:
    out = []
    for p in wanted:
        if api_file(p).is_file():
            out.append(p)
        else:
            print(f"[long-video] {p}: {api_file(p).relative_to(ROOT)} not found, skipped", flush=True)
    return out


# --- inputs and workflows ----------------------------------------------------------------------------------

def make_inputs(folder: Path, frame_counts: list[int], size: int) -> dict[str, Path]:
    """reference.png and one driving clip per length (the sample dancer, `size` pixels high, 30 fps, sound)."""
    from support.workflows import load_script

    mk = load_script("make_sample_inputs")
    folder.mkdir(parents=True, exist_ok=True)
    width = 2 * round(size * 512 / 600 / 2)
    files = {"reference": folder / "reference.png"}
    if not files["reference"].is_file():
        mk.write_png(files["reference"], mk.reference_photo())
    for n in frame_counts:
        path = folder / f"driving_{size}_{n}.mp4"
        if not path.is_file():
            mk.write_video(path, mk.dance_frames(n, width, size), FPS)
        files[f"driving_{n}"] = path
    return files


def shrink(api: dict, size: int, steps: int, reference: str, video: str, prefix: str,
           window: int | None = None) -> dict:
    """The shipped workflow at the bench's settings, as a user would set it: factory checkpoints, model size,
    steps, the offline mediapipe detector, the bench's reference and driving clip, an output prefix per run."""
    from support import factories
    from support.workflows import titled

    wf = copy.deepcopy(api)
    wf[titled(wf, "Checkpoint")[0]]["inputs"]["ckpt_name"] = factories.sd15_checkpoint().name
    wf[titled(wf, "MagicPose model")[0]]["inputs"]["ckpt_name"] = factories.magicpose_checkpoint().name
    wf[titled(wf, "Reference")[0]]["inputs"]["image"] = reference
    for nid in titled(wf, "Driving video"):
        wf[nid]["inputs"]["file"] = video
    for node in wf.values():
        inputs = node["inputs"]
        for key in ("width", "height"):
            if isinstance(inputs.get(key), int) and node["class_type"].startswith("MagicPose"):
                inputs[key] = size
        if isinstance(inputs.get("steps"), int):
            inputs["steps"] = steps
        if isinstance(inputs.get("detector"), str):
            inputs["detector"] = "mediapipe"
        if isinstance(inputs.get("filename_prefix"), str):
            inputs["filename_prefix"] = prefix
        if window and isinstance(inputs.get("window"), int):
            inputs["window"] = window
    return wf


def prepare_base(base: Path) -> None:
    from support import factories
    from support.server import ComfyServer

    srv = ComfyServer(comfy_path(), base, base / "unused.log")
    srv.prepare_base({"checkpoints": [factories.sd15_checkpoint()],
                      "magicpose": [factories.magicpose_checkpoint()]})


def copy_to_input(base: Path, src: Path, name: str) -> str:
    dst = base / "input" / name
    if not dst.exists():
        shutil.copyfile(src, dst)
    return name


# --- phase 1 and 2: tracked bytes and time, in-process -----------------------------------------------------

def track_phase(a: argparse.Namespace, paths: list[str], base: Path, files: dict[str, Path]) -> list[dict]:
    from frame_memory_tracker import FrameMemoryTracker
    from inprocess_comfy import InProcessComfy

    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    comfy = InProcessComfy(comfy_path(), base, a.free_ram_gib)
    import comfy.utils as cu

    cu.PROGRESS_BAR_ENABLED = False
    apis = {p: json.loads(api_file(p).read_text()) for p in paths}
    ref = copy_to_input(base, files["reference"], "reference.png")
    runs = 0

    def prompt(path: str, n: int) -> dict:
        nonlocal runs
        runs += 1
        # no resume across runs; a new file name per run, so nothing below Load Video comes from ComfyUI's cache
        shutil.rmtree(base / "output" / "magicpose_render_parts", ignore_errors=True)
        video = copy_to_input(base, files[f"driving_{n}"], f"driving_{n}_{runs}.mp4")
        return shrink(apis[path], a.size, a.steps, ref, video, f"bench_long/{path}_{n}_{runs}", a.window)

    for p in paths:                                          # warm-up: models loaded, reference cached
        t0 = time.perf_counter()
        comfy.run(prompt(p, WARM_FRAMES))
        print(f"[long-video] warm-up {p}: {time.perf_counter() - t0:.1f} s", flush=True)
    tracker = FrameMemoryTracker(min_bytes=a.size * a.size * 3, describe=a.describe)
    rows = []

    def save() -> None:
        if a.rows_out:
            a.rows_out.write_text(json.dumps(rows))          # a run cut short keeps what it measured

    for i, n in enumerate(a.frames):                         # per length: tracked runs, then timed runs
        order = paths if i % 2 == 0 else paths[::-1]
        for p in order:
            wf = prompt(p, n)
            tracker.start()
            t0 = time.perf_counter()
            with tracker:
                comfy.run(wf)
            seconds = time.perf_counter() - t0
            r = tracker.result()
            rows.append({"path": p, "frames": n, "size": a.size, "steps": a.steps,
                         "torch_peak_bytes": r.torch_peak_bytes, "peak_frames": round(r.torch_peak_frames, 1),
                         "numpy_peak_bytes": r.numpy_peak_bytes, "tracked_peak_bytes": r.peak_bytes,
                         "storages": r.storages, "allocated_bytes": r.allocated_bytes,
                         "tracked_run_s": round(seconds, 2), "at_peak": r.at_peak})
            print(f"[long-video] tracked {p} {n} frames: {r.peak_bytes / MIB:.1f} MiB "
                  f"(torch {r.torch_peak_bytes / MIB:.1f}, numpy {r.numpy_peak_bytes / MIB:.1f}), "
                  f"{r.torch_peak_frames:.1f} frames, {seconds:.1f} s", flush=True)
            for desc, nbytes in r.at_peak.items():
                print(f"    {nbytes / MIB:8.2f} MiB  {desc}", flush=True)
            save()
        if a.no_time or n not in (a.time_frames or a.frames):
            continue
        for p in order[::-1]:
            wf = prompt(p, n)
            t0 = time.perf_counter()
            comfy.run(wf)
            seconds = time.perf_counter() - t0
            row = next(r for r in rows if r["path"] == p and r["frames"] == n)
            row.update(run_s=round(seconds, 2), s_per_frame=round(seconds / n, 4), load_avg=os.getloadavg()[0])
            print(f"[long-video] timed {p} {n} frames: {seconds:.1f} s ({seconds / n:.3f} s/frame)", flush=True)
            save()
    return rows


# --- phase 3: smallest memory cap, real servers -----------------------------------------------------------

def cap_phase(a: argparse.Namespace, paths: list[str], base: Path, files: dict[str, Path]) -> list[dict]:
    from memory_cap import CapRunner

    apis = {p: json.loads(api_file(p).read_text()) for p in paths}
    runner = CapRunner(comfy_path(), base, a.work / "logs")
    rows = []
    try:
        for n in a.cap_frames:
            for p in paths:
                def workflow(server, tag, p=p, n=n):
                    ref = server.upload_image(files["reference"])
                    video = server.upload_image(files[f"driving_{n}"])
                    return shrink(apis[p], a.cap_size, a.steps, ref, video, f"bench_long_cap/{p}_{n}_{tag}",
                                  a.window)

                res = runner.smallest_cap(workflow, tol=a.cap_tol, label=f"{p} {n} frames")
                rows.append({"path": p, "frames": n, "size": a.cap_size, "steps": a.steps, **res})
    finally:
        runner.close()
    return rows


# --- report ------------------------------------------------------------------------------------------------

def derive(rows: list[dict], key: str, size: int) -> dict:
    """Per-frame bytes (slope between the shortest and longest clip), growth, RAM per minute at 512^2 / 768^2:
    from the slope of `key` scaled by the pixel count, and (tracked rows) from the slope of the pixel frames held,
    as fp32 IMAGE frames (S x S x 3 x 4 bytes)."""
    out = {}
    for p in sorted({r["path"] for r in rows}):
        mine = sorted((r for r in rows if r["path"] == p and r.get(key) is not None), key=lambda r: r["frames"])
        if len(mine) < 2:
            continue
        lo, hi = mine[0], mine[-1]
        slope = (hi[key] - lo[key]) / (hi["frames"] - lo["frames"])
        growth = hi[key] / lo[key] - 1.0 if lo[key] else float("nan")
        fixed = 0.0     # numpy / Python bytes (keypoints, objects) do not scale with the pixel count
        if key == "tracked_peak_bytes" and "numpy_peak_bytes" in lo:
            fixed = (hi["numpy_peak_bytes"] - lo["numpy_peak_bytes"]) / (hi["frames"] - lo["frames"])
        d = {"from_frames": lo["frames"], "to_frames": hi["frames"], "bytes_per_frame": slope, "growth": growth,
             "ram_per_minute_bytes": {f"{s}": ((slope - fixed) * (s * s) / (size * size) + fixed) * MINUTE_FRAMES
                                      for s in (512, 768)}}
        if "peak_frames" in lo:
            held = (hi["peak_frames"] - lo["peak_frames"]) / (hi["frames"] - lo["frames"])
            d["held_frames_per_frame"] = held
            d["held_ram_per_minute_bytes"] = {f"{s}": held * s * s * 3 * 4 * MINUTE_FRAMES for s in (512, 768)}
        out[p] = d
    return out


def print_table(rows: list[dict], caps: list[dict], derived: dict, cap_derived: dict) -> None:
    print("\npath    frames  size  tracked peak MiB (torch + numpy)  peak frames  s/frame")
    for r in rows:
        spf = f"{r['s_per_frame']:.3f}" if "s_per_frame" in r else "-"
        print(f"{r['path']:7s} {r['frames']:6d} {r['size']:5d}  {r['tracked_peak_bytes'] / MIB:10.1f} "
              f"({r['torch_peak_bytes'] / MIB:.1f} + {r['numpy_peak_bytes'] / MIB:.1f}){'':8s} "
              f"{r['peak_frames']:10.1f}  {spf}")
    for p, d in derived.items():
        print(f"{p}: {d['bytes_per_frame'] / 1024:.1f} KiB per frame at this size, growth {d['from_frames']}->"
              f"{d['to_frames']} frames {d['growth'] * 100:+.1f} %, RAM per minute (30 fps) "
              f"{d['ram_per_minute_bytes']['512'] / MIB:.0f} MiB at 512^2, "
              f"{d['ram_per_minute_bytes']['768'] / MIB:.0f} MiB at 768^2")
        if "held_frames_per_frame" in d:
            print(f"{p}: {d['held_frames_per_frame']:.2f} frames held per clip frame: "
                  f"{d['held_ram_per_minute_bytes']['512'] / MIB:.0f} MiB per minute at 512^2, "
                  f"{d['held_ram_per_minute_bytes']['768'] / MIB:.0f} MiB at 768^2 (fp32 IMAGE frames)")
    if caps:
        print("\npath    frames  size  smallest cap MiB  (bracket)        tries")
        for c in caps:
            print(f"{c['path']:7s} {c['frames']:6d} {c['size']:5d}  {c['cap_mib']:14.0f}  "
                  f"({c['fail_mib']:.0f} fails .. {c['cap_mib']:.0f} ok)  {len(c['tries'])}")
        for p, d in cap_derived.items():
            print(f"{p} caps: {d['bytes_per_frame'] / 1024:.1f} KiB per frame, growth {d['growth'] * 100:+.1f} %")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, nargs="+", default=[32, 128, 512])
    ap.add_argument("--size", type=int, default=64, help="model size of the tracked and timed runs (default 64)")
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--paths", nargs="+", choices=sorted(WORKFLOWS), default=["step", "stream"])
    ap.add_argument("--no-time", action="store_true", help="skip the untracked timed runs")
    ap.add_argument("--time-frames", type=int, nargs="*", default=None,
                    help="clip lengths of the timed runs (default: --frames; each must be one of them)")
    ap.add_argument("--free-ram-gib", type=float, default=8.0,
                    help="free RAM ComfyUI sees in the tracked/timed process (sizes its VAE batches; default 8)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch CPU threads in the tracked/timed process (default: torch's choice; 1 is steadier "
                         "on a loaded machine)")
    ap.add_argument("--describe", action="store_true", help="print what the tracked bytes were near each peak")
    ap.add_argument("--window", type=int, default=None, help="streaming window (default: the workflow's)")
    ap.add_argument("--no-track", action="store_true", help="skip the in-process phase (caps only)")
    ap.add_argument("--cap-frames", type=int, nargs="*", default=[], help="clip lengths for the cap search")
    ap.add_argument("--cap-size", type=int, default=128)
    ap.add_argument("--cap-tol", type=float, default=0.05, help="bisect until hi/lo <= 1 + tol")
    ap.add_argument("--json", type=Path, default=CACHE / "long_video.json")
    ap.add_argument("--work", type=Path, default=CACHE / "long_video",
                    help="inputs, ComfyUI base folder and logs (one per concurrent run)")
    ap.add_argument("--phase", choices=("all", "track"), default="all", help=argparse.SUPPRESS)
    ap.add_argument("--rows-out", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if min(a.frames) < 2 or a.size % 8 or a.cap_size % 8:
        ap.error("need --frames >= 2 and sizes that are multiples of 8")
    if a.time_frames and not set(a.time_frames) <= set(a.frames):
        ap.error("every --time-frames length must be one of --frames")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))     # `finally` blocks run: servers, cgroup removed
    paths = available_paths(a.paths)
    if not paths:
        ap.error("no workflow to measure")
    work = a.work
    base = work / "base"
    prepare_base(base)
    files = make_inputs(work / "inputs", sorted(set(a.frames) | {WARM_FRAMES}), a.size)
    if a.phase == "track":                       # the child: one process, one ComfyUI, both paths interleaved
        a.rows_out.write_text(json.dumps(track_phase(a, paths, base, files)))
        return 0
    rows: list[dict] = []
    if not a.no_track:
        rows_file = work / "track_rows.json"
        cmd = [sys.executable, __file__, "--phase", "track", "--rows-out", str(rows_file), "--work", str(work),
               "--frames", *map(str, a.frames), "--size", str(a.size), "--steps", str(a.steps),
               "--paths", *paths, *(["--no-time"] if a.no_time else []),
               *(["--time-frames", *map(str, a.time_frames)] if a.time_frames else []),
               "--free-ram-gib", str(a.free_ram_gib), "--threads", str(a.threads),
               *(["--describe"] if a.describe else []),
               *(["--window", str(a.window)] if a.window else [])]
        rows_file.unlink(missing_ok=True)
        done = subprocess.run(cmd)
        rows = json.loads(rows_file.read_text()) if rows_file.is_file() else []
        if done.returncode:
            print(f"[long-video] the tracked phase exited with {done.returncode}; reporting its {len(rows)} rows",
                  flush=True)
    caps = []
    if a.cap_frames:
        cap_files = make_inputs(work / "inputs", a.cap_frames, a.cap_size)
        caps = cap_phase(a, paths, base, cap_files)
    derived, cap_derived = derive(rows, "tracked_peak_bytes", a.size), derive(caps, "cap_bytes", a.cap_size)
    times = {p: sum(r.get("run_s", 0) for r in rows if r["path"] == p) /
             max(1, sum(r["frames"] for r in rows if r["path"] == p and "run_s" in r)) for p in paths}
    ratio = times["stream"] / times["step"] if {"step", "stream"} <= set(paths) and times["step"] else None
    print_table(rows, caps, derived, cap_derived)
    if ratio is not None:
        print(f"time per frame, stream / step: {ratio:.3f}")
    result = {"rows": rows, "caps": caps, "tracked": derived, "cap_slopes": cap_derived,
              "s_per_frame": times, "stream_over_step_time": ratio,
              "settings": {"frames": a.frames, "size": a.size, "steps": a.steps, "cap_size": a.cap_size,
                           "cap_tol": a.cap_tol, "frame_bytes_threshold": a.size * a.size * 3,
                           "free_ram_gib_seen_by_comfyui": a.free_ram_gib,
                           "torch_threads": a.threads or "default",
                           "load_avg": os.getloadavg(), "cpus": os.cpu_count()},
              "formula": "RAM per minute = bytes_per_frame * (S*S)/(size*size) * 30 fps * 60 s; held: "
                         "held_frames_per_frame * S*S*3*4 bytes * 30 fps * 60 s"}
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(result, indent=1))
    print(f"\nwrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
