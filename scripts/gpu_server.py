"""The GPU check's server section: the shipped video workflow through a real ComfyUI server on the device.

The shipped `video_dance_retarget` API workflow, unchanged but for what a user sets (file names, size, steps) and one
core SaveLatent node on the sampler's output (to compare runs exactly), runs on the tiny factory checkpoints
(tests/support/factories.py) with a driving video made by scripts/make_sample_inputs.py and stand-in DWPose ONNX files
(tests/support/pose_fakes.py: the `auto` detector finds them in models/magicpose/dwpose) on servers started with the
default flags, `--lowvram` and `--novram`. Each must complete, and its latents must equal the default run's within
the floor (one fp16 ulp relative: 2^-10 of max |latent|). On the default server a long video then runs (300 frames
on the device) and the server process's peak resident memory (VmHWM) is read before and after it. The servers start
with `--front-end-root` at an empty folder: they are driven over the API only.
"""
from __future__ import annotations

import copy
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "tests"):
    if str(p) not in sys.path:
        sys.path.append(str(p))

from support.server import PACK_DIR_NAME, ComfyServer  # noqa: E402
from support.workflows import load_api, load_script, of_type, titled  # noqa: E402

FLOOR_REL = 2.0 ** -10
FPS = 8.0


class DeviceServer(ComfyServer):
    """ComfyServer on the device: `--cpu` only when asked (the test helper always passes it), no frontend files."""

    def __init__(self, *args, cpu: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.cpu = cpu

    def start(self, timeout: float = 180.0) -> "DeviceServer":
        import os
        import subprocess

        from support.server import die_with_parent

        front = self.base_dir / "frontend"
        front.mkdir(parents=True, exist_ok=True)
        (front / "index.html").write_text("<!doctype html><title>API only</title>")
        cmd = [self.python, "main.py", *(["--cpu"] if self.cpu else []), "--listen", "127.0.0.1", "--port",
               str(self.port), "--disable-auto-launch", "--base-directory", str(self.base_dir),
               "--database-url", "sqlite:///:memory:", "--disable-api-nodes", "--use-pytorch-cross-attention",
               "--disable-all-custom-nodes", "--whitelist-custom-nodes", PACK_DIR_NAME, "--preview-method", "none",
               "--front-end-root", str(front), *self.extra_args]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", **self.extra_env)
        self.proc = subprocess.Popen(cmd, cwd=self.comfy_path, stdout=open(self.log_path, "wb"),
                                     stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                     preexec_fn=die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode} while starting; log:\n"
                                   f"{self.log_tail()}")
            try:
                self.get_json("/system_stats", timeout=2)
                return self
            except OSError:
                time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"ComfyUI did not answer within {timeout:.0f} s; log:\n{self.log_tail()}")

    def peak_rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")


def inputs(work: Path, frames: int, height: int) -> dict[str, Path]:
    """reference.png + a driving video of `frames` frames, and the stand-in DWPose folder for its size."""
    from support.pose_fakes import dwpose_folder

    mk = load_script("make_sample_inputs")
    width = 2 * round(height * 512 / 600 / 2)
    d = work / "inputs"
    d.mkdir(parents=True, exist_ok=True)
    files = {"reference": mk.write_png(d / "reference.png", mk.reference_photo()),
             "driving": mk.write_video(d / f"driving_{frames}.mp4", mk.dance_frames(frames, width, height), FPS)}
    ratio = 640 / max(width, height)
    box = (0.2 * width, 0.05 * height, 0.8 * width, 0.95 * height, 0.9, 0)   # one person, most of the frame
    dwpose_folder(work / "dwpose", [box], ratio)
    return files


def workflow(names: dict, size: int, steps: int, frame_batch: int) -> dict:
    wf = copy.deepcopy(load_api("video_dance_retarget"))
    wf[titled(wf, "Checkpoint")[0]]["inputs"]["ckpt_name"] = names["sd15"]
    wf[titled(wf, "MagicPose model")[0]]["inputs"]["ckpt_name"] = names["magicpose"]
    wf[titled(wf, "Reference")[0]]["inputs"]["image"] = names["reference"]
    wf[titled(wf, "Driving video")[0]]["inputs"]["file"] = names["driving"]
    for nid in of_type(wf, "MagicPoseLoadReference") + of_type(wf, "MagicPoseExtractPose"):
        wf[nid]["inputs"].update(width=size, height=size)
    sampler = titled(wf, "Sampler")[0]
    wf[sampler]["inputs"].update(steps=steps, frame_batch=frame_batch)
    wf["gpu_check_latent"] = {"class_type": "SaveLatent", "_meta": {"title": "GPU check latent"},
                              "inputs": {"samples": [sampler, 0], "filename_prefix": "gpu_check/latent"}}
    return wf


def run_one(srv: DeviceServer, wf: dict, timeout: float) -> dict:
    from safetensors.torch import load_file

    t0 = time.perf_counter()
    r = srv.run(wf, timeout=timeout)
    secs = time.perf_counter() - t0
    if r.status != "success":
        raise RuntimeError(f"{r.status}: {r.error_message()}\n{srv.log_tail(30)}")
    item = r.outputs["gpu_check_latent"]["latents"][0]
    latent = load_file(str(srv.output_path(item)))["latent_tensor"].float()
    video = r.outputs[titled(wf, "Output")[0]]["images"][0]
    return {"seconds": secs, "latent": latent, "video_bytes": srv.output_path(video).stat().st_size}


def run_section(res, work: Path, comfy_path: Path, *, cpu: bool, size: int, frames: int, steps: int,
                frame_batch: int, long_frames: int, flags: list[str], budget: float) -> None:
    """Fill `res` (gpu_measure.Result) with the server runs; each failure is recorded, not raised."""
    from support import factories

    deadline = time.monotonic() + budget
    t0 = time.perf_counter()
    ckpts = {"sd15": factories.sd15_checkpoint(), "magicpose": factories.magicpose_checkpoint()}
    res["factory_seconds"] = time.perf_counter() - t0
    short = inputs(work, frames, 128)
    res["settings"] = {"size": size, "frames": frames, "steps": steps, "frame_batch": frame_batch,
                       "weights": "tiny factory checkpoints", "long_frames": long_frames, "cpu": cpu}
    default = None
    for i, flag in enumerate(flags):
        name = flag or "default"
        if time.monotonic() > deadline - 30:
            res.append("runs", {"flags": name, "skipped": "time budget spent"})
            continue
        base = work / f"server-{i}"
        if base.exists():
            shutil.rmtree(base)
        srv = DeviceServer(comfy_path, base, work / f"server-{i}.log", extra_args=[flag] if flag else [], cpu=cpu)
        srv.prepare_base({"checkpoints": [ckpts["sd15"]], "magicpose": [ckpts["magicpose"]]})
        first = work / "server-0" / "models" / "magicpose"
        if i and first.is_dir():  # the parts the first server converted from the .th on first use: converted once
            for f in first.iterdir():
                dst = base / "models" / "magicpose" / f.name
                if f.is_file() and not f.is_symlink() and not dst.exists():
                    dst.symlink_to(f.resolve())
        dw = base / "models" / "magicpose" / "dwpose"
        dw.mkdir(parents=True, exist_ok=True)
        for f in (work / "dwpose").iterdir():
            shutil.copy(f, dw / f.name)
        row: dict = {"flags": name}
        try:
            t1 = time.perf_counter()
            srv.start()
            row["start_seconds"] = time.perf_counter() - t1
            names = {"sd15": ckpts["sd15"].name, "magicpose": ckpts["magicpose"].name,
                     "reference": srv.upload_image(short["reference"]), "driving": srv.upload_image(short["driving"])}
            out = run_one(srv, workflow(names, size, steps, frame_batch), max(30.0, deadline - time.monotonic()))
            lat = out.pop("latent")
            row.update(out, latent_shape=list(lat.shape), max_abs_latent=float(lat.abs().max()))
            if default is None:
                default = lat
            else:
                diff = float((lat - default).abs().max())
                row.update(max_abs_diff_vs_default=diff, floor=FLOOR_REL * float(default.abs().max()),
                           equal_within_floor=diff <= FLOOR_REL * float(default.abs().max()))
            if not flag and long_frames:
                long_row(srv, work, names, size, frame_batch, long_frames, deadline, res)
        except Exception as e:  # recorded; the other variants still run
            row["error"] = f"{type(e).__name__}: {str(e)[:1500]}"
        finally:
            srv.stop()
        res.append("runs", row)
        print(f"[gpu-check] server {name}: {json.dumps({k: v for k, v in row.items() if k != 'error'})}"
              + (f" ERROR {row['error'][:300]}" if "error" in row else ""), flush=True)


def long_row(srv: DeviceServer, work: Path, names: dict, size: int, frame_batch: int, frames: int, deadline: float,
             res) -> None:
    """A `frames`-frame video through the workflow (1 step: memory depends on frames, not steps): peak server RSS."""
    mk_inputs = inputs(work, frames, 128)
    before = srv.peak_rss_mib()
    wf = workflow(dict(names, driving=srv.upload_image(mk_inputs["driving"])), size, 1, frame_batch)
    out = run_one(srv, wf, max(30.0, deadline - time.monotonic()))
    lat = out.pop("latent")
    res["long_video"] = {"frames": frames, "size": size, "steps": 1, "frame_batch": frame_batch,
                         "latent_frames": int(lat.shape[0]), "seconds": out["seconds"],
                         "peak_rss_mib_before": before, "peak_rss_mib": srv.peak_rss_mib()}
