"""The headless client (`python -m magicpose_core.client`) against a real ComfyUI server, with core nodes only.

The server here is started without the factory checkpoints (none of these workflows needs a model): the pack
is loaded, but only core nodes run. Every run goes through a subprocess, as `make demo` runs it, except the
Python API test. Checked: uploads filled in by title, outputs downloaded with the right content, progress
lines, readable validation and execution errors with their exit codes, an unreachable server, a cached re-run,
and Ctrl-C (SIGINT) interrupting the prompt on the server.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from support import figures

from magicpose_core import client as mc

pytestmark = [pytest.mark.comfy, pytest.mark.server]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def comfy_server(comfy_root, tmp_path_factory):
    from support.server import ComfyServer

    base = tmp_path_factory.mktemp("client_server_base")
    srv = ComfyServer(comfy_root, base, ROOT / ".cache" / "test-logs" / f"client_server-{os.getpid()}.log")
    srv.prepare_base({})
    srv.start()
    yield srv
    srv.stop()


def run_client(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """The CLI as a user runs it, from the repo root (the client imports no ComfyUI module)."""
    return subprocess.run([sys.executable, "-m", "magicpose_core.client", "run", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def write_workflow(path: Path, wf: dict) -> Path:
    path.write_text(json.dumps(wf))
    return path


def invert_workflow() -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "placeholder.png"}, "_meta": {"title": "Reference"}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}, "_meta": {"title": "Invert"}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "client/invert"},
              "_meta": {"title": "Output"}},
    }


def color_workflow(frames: int, size: int, chain: int, color: int = 0x336699) -> dict:
    """EmptyImage batch -> `chain` x ColorTransfer (a ProgressBar over the frames) -> SaveImage "Output"."""
    wf = {"1": {"class_type": "EmptyImage", "_meta": {"title": "Frames"},
                "inputs": {"width": size, "height": size, "batch_size": frames, "color": color}},
          "2": {"class_type": "EmptyImage", "_meta": {"title": "Palette"},
                "inputs": {"width": 16, "height": 16, "batch_size": 1, "color": 0xAA5500}}}
    prev = "1"
    for i in range(chain):
        nid = str(10 + i)
        wf[nid] = {"class_type": "ColorTransfer", "_meta": {"title": f"Colour match {i + 1}"},
                   "inputs": {"image_target": [prev, 0], "image_ref": ["2", 0], "method": "histogram",
                              "source_stats": "per_frame", "strength": 1.0}}
        prev = nid
    wf["3"] = {"class_type": "SaveImage", "inputs": {"images": [prev, 0], "filename_prefix": "client/colour"},
               "_meta": {"title": "Output"}}
    return wf


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, np.ndarray]:
    yy, xx = np.meshgrid(np.linspace(0, 1, 48), np.linspace(0, 1, 64), indexing="ij")
    rgb = (np.stack([xx, yy, 0.5 * (xx + yy)], axis=-1) * 255).round().astype(np.uint8)   # (48, 64, 3)
    path = tmp_path_factory.mktemp("client_inputs") / f"ref_{random.randrange(1 << 30)}.png"
    Image.fromarray(rgb).save(path)
    return path, rgb


def test_reference_is_uploaded_inverted_and_downloaded(comfy_server, reference, tmp_path):
    ref, rgb = reference
    wf = write_workflow(tmp_path / "wf.json", invert_workflow())
    out = tmp_path / "result" / "inverted.png"
    t0 = time.perf_counter()
    r = run_client(str(wf), "--reference", str(ref), "--out", str(out), "--server", comfy_server.url)
    figures.record("client: LoadImage->Invert->SaveImage run incl. interpreter start (s)",
                   round(time.perf_counter() - t0, 2))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(out)
    got = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert got.shape == rgb.shape
    assert np.abs(got - (255 - rgb.astype(int))).max() <= 1          # 8-bit round trip through float
    assert 'running node 2 "Invert" (ImageInvert)' in r.stderr
    assert (comfy_server.base_dir / "input" / ref.name).is_file()   # uploaded under its own name


def test_driving_video_goes_into_load_video(comfy_server, tmp_path):
    dance = tmp_path / "dance.mp4"
    with av.open(str(dance), "w") as c:
        s = c.add_stream("libx264", rate=8)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in range(6):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 30 + 40 * i, np.uint8), format="rgb24")
            for packet in s.encode(frame):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    wf = write_workflow(tmp_path / "wf.json", {
        "1": {"class_type": "LoadVideo", "inputs": {"file": "x.mp4"}, "_meta": {"title": "Driving video"}},
        "2": {"class_type": "SaveVideo", "_meta": {"title": "Output"},
              "inputs": {"video": ["1", 0], "filename_prefix": "client/video", "format": "auto", "codec": "auto"}}})
    out = tmp_path / "out.mp4"
    r = run_client(str(wf), "--driving", str(dance), "--out", str(out), "--server", comfy_server.url)
    assert r.returncode == 0, r.stderr
    with av.open(str(out)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 6 and frames[0].shape == (48, 64, 3)
    means = [f.mean() for f in frames]
    assert all(b > a + 20 for a, b in zip(means, means[1:]))      # the driving frames, in order


def test_progress_set_and_numbered_outputs(comfy_server, tmp_path):
    wf = write_workflow(tmp_path / "wf.json", color_workflow(frames=2, size=32, chain=1))
    out = tmp_path / "frames" / "f.png"
    color = random.randrange(1 << 24)                                  # a fresh graph: nothing cached
    r = run_client(str(wf), "--set", "Frames.batch_size=5", "--set", "Frames.width=40", "--set",
                   f"1.color={color}", "--out", str(out), "--server", comfy_server.url)
    assert r.returncode == 0, r.stderr
    files = [out.with_name(f"f_{i:05d}.png") for i in range(1, 6)]    # --set batch_size 2 -> 5
    assert r.stdout.split() == [str(f) for f in files]
    assert all(Image.open(f).size == (40, 32) for f in files)
    bars = [ln for ln in r.stderr.splitlines() if ln.startswith('  node 10 "Colour match 1" (ColorTransfer): ')]
    assert bars and "100%|" in bars[-1] and "| 5/5 [" in bars[-1] and "\r" not in r.stderr, r.stderr   # log lines
    assert "started prompt" in r.stderr and "done in" in r.stderr


def test_cached_rerun_still_downloads(comfy_server, reference, tmp_path):
    ref, rgb = reference
    wf = write_workflow(tmp_path / "wf.json", invert_workflow())
    outs = [tmp_path / "a.png", tmp_path / "b.png"]
    for out in outs:
        r = run_client(str(wf), "--reference", str(ref), "--out", str(out), "--server", comfy_server.url)
        assert r.returncode == 0, r.stderr
    assert "cached:" in r.stderr                                       # the second run executed nothing new
    assert np.array_equal(np.asarray(Image.open(outs[0])), np.asarray(Image.open(outs[1])))


def test_python_api_reports_events_and_files(comfy_server, tmp_path):
    events: list[mc.RunEvent] = []
    wf = color_workflow(frames=3, size=16, chain=1, color=random.randrange(1 << 24))
    result = mc.Client(comfy_server.url).run(wf, sets={"Output.filename_prefix": "client/api"},
                                             out=f"{tmp_path}/api/", on_event=events.append)
    assert result.ok and result.exit_code == 0
    assert [p.name for p in result.files] == [f"api_{i:05d}_.png" for i in range(1, 4)]
    assert all(p.parent == tmp_path / "api" and p.stat().st_size > 0 for p in result.files)
    kinds = [e.type for e in events]
    assert kinds[0] == "execution_start" and kinds[-1] == "execution_success"
    progress = [(e.data["value"], e.data["max"]) for e in events if e.type == "progress"]
    assert progress and progress[-1] == (3, 3)
    assert {e.label for e in events if e.type == "progress"} == {'node 10 "Colour match 1" (ColorTransfer)'}
    assert wf["3"]["inputs"]["filename_prefix"] == "client/colour"      # the caller's workflow is not changed


def broken(kind: str) -> tuple[dict, list[str]]:
    """A broken invert workflow and the extra CLI arguments for each failure kind."""
    wf = invert_workflow()
    extra: list[str] = []
    if kind == "unknown node type":
        wf["2"]["class_type"] = "NoSuchInvert"
    elif kind == "missing required input":
        del wf["2"]["inputs"]["image"]
    elif kind == "wrong input type":
        wf["4"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
        wf["2"]["inputs"]["image"] = ["4", 0]
    elif kind == "value out of range":
        wf["5"] = {"class_type": "EmptyImage", "_meta": {"title": "Blank"},
                   "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}}
        wf["2"]["inputs"]["image"] = ["5", 0]
        extra = ["--set", "Blank.width=0"]
    elif kind == "bad --set node":
        extra = ["--set", "Inverter.image=1"]
    elif kind == "bad --set input":
        extra = ["--set", "Invert.imag=1"]
    elif kind == "missing title":
        wf["1"]["_meta"]["title"] = "Load Image"
    elif kind == "execution error":
        wf["2"]["inputs"]["image"] = 5                  # a number where an IMAGE tensor is expected
    return wf, extra


@pytest.mark.parametrize("kind,code,expected", [
    ("unknown node type", 2, ['node 2 "Invert" (NoSuchInvert)', "'NoSuchInvert' is not installed"]),
    ("missing required input", 2, ["node 2 \"Invert\" (ImageInvert): input 'image': Required input is missing"]),
    ("wrong input type", 2, ["node 2 \"Invert\" (ImageInvert): input 'image': Return type mismatch",
                             "received_type(LATENT) mismatch input_type(IMAGE)"]),
    ("value out of range", 2, ["node 5 \"Blank\" (EmptyImage): input 'width': Value 0 smaller than min of 1"]),
    ("bad --set node", 2, ["no node with id or title 'Inverter'", "Titles present: 'Reference', 'Invert', 'Output'"]),
    ("bad --set input", 2, ["node 2 \"Invert\" (ImageInvert) has no input 'imag'. Its inputs: image"]),
    ("missing title", 2, ["no node with id or title 'Reference'", "Titles present: 'Load Image'"]),
    ("execution error", 1, ["execution error in node 3 \"Output\" (SaveImage)"]),
])
def test_broken_workflow_exit_code_and_message(comfy_server, reference, tmp_path, kind, code, expected):
    wf, extra = broken(kind)
    path = write_workflow(tmp_path / "wf.json", wf)
    r = run_client(str(path), "--reference", str(reference[0]), "--out", str(tmp_path / "o.png"),
                   "--server", comfy_server.url, *extra)
    assert r.returncode == code, r.stderr
    for text in expected:
        assert text in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "o.png").exists()


def test_server_not_running_exits_3(tmp_path, reference):
    from support.server import free_port

    path = write_workflow(tmp_path / "wf.json", invert_workflow())
    r = run_client(str(path), "--reference", str(reference[0]), "--server", f"http://127.0.0.1:{free_port()}")
    assert r.returncode == 3
    assert "cannot reach ComfyUI at http://127.0.0.1:" in r.stderr and "Traceback" not in r.stderr


def test_timeout_interrupts_and_exits_1(comfy_server, tmp_path):
    wf = write_workflow(tmp_path / "wf.json", color_workflow(frames=64, size=512, chain=3,
                                                             color=random.randrange(1 << 24)))
    r = run_client(str(wf), "--timeout", "1", "--out", str(tmp_path / "never.png"), "--server", comfy_server.url)
    assert r.returncode == 1, r.stderr
    assert "did not finish within 1 s; it was interrupted" in r.stderr and "Traceback" not in r.stderr
    assert comfy_server.get_json("/queue")["queue_running"] == []         # nothing left running on the server


def test_sigint_interrupts_the_prompt_on_the_server(comfy_server, tmp_path):
    # 64 frames of 512^2 through 3 colour matches and a PNG save: tens of seconds, ticking a ProgressBar per frame.
    wf = write_workflow(tmp_path / "wf.json", color_workflow(frames=64, size=512, chain=3,
                                                             color=random.randrange(1 << 24)))
    proc = subprocess.Popen([sys.executable, "-m", "magicpose_core.client", "run", str(wf), "--out",
                             str(tmp_path / "never.png"), "--server", comfy_server.url],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(300, proc.kill)
    watchdog.start()
    try:
        seen, prompt_id = [], None
        for line in proc.stderr:
            seen.append(line)
            if line.startswith("started prompt "):
                prompt_id = line.split()[-1]
            if "/64 " in line:                              # the first progress tick: mid-node
                t0 = time.perf_counter()
                proc.send_signal(signal.SIGINT)
                break
        rest = proc.stderr.read()
        code = proc.wait(timeout=120)
        stopped_in = time.perf_counter() - t0
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
    err = "".join(seen) + rest
    assert prompt_id, err
    assert code == 130, err
    assert "interrupted" in rest and "Traceback" not in rest
    figures.record("client: SIGINT to client exit, prompt interrupted on the server (s)", round(stopped_in, 2))
    hist = comfy_server.get_json(f"/history/{prompt_id}")[prompt_id]
    assert hist["status"]["status_str"] == "error"
    assert "execution_interrupted" in [m[0] for m in hist["status"]["messages"]]
    assert not (tmp_path / "never.png").exists()


# --- the client owns its prompt: SIGTERM, SIGHUP and any abnormal exit stop it, and only it ------------------

def start_client(wf_path: Path, server_url: str, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "magicpose_core.client", "run", str(wf_path), "--out", str(out),
                             "--server", server_url], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def wait_history(server, prompt_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hist = server.get_json(f"/history/{prompt_id}").get(prompt_id)
        if hist:
            return hist
        time.sleep(0.2)
    raise AssertionError(f"prompt {prompt_id} did not finish in {timeout} s")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_signal_interrupts_the_running_prompt_and_spares_the_next_clients(comfy_server, tmp_path, sig):
    """The client's prompt runs; another client's prompt waits behind it. The signal interrupts ours only: the
    client exits 128 + signal, its prompt ends interrupted, and the other prompt then runs to success."""
    wf = write_workflow(tmp_path / "wf.json", color_workflow(frames=64, size=512, chain=3,
                                                             color=random.randrange(1 << 24)))
    proc = start_client(wf, comfy_server.url, tmp_path / "never.png")
    watchdog = threading.Timer(300, proc.kill)
    watchdog.start()
    try:
        seen, ours = [], None
        for line in proc.stderr:
            seen.append(line)
            if line.startswith("started prompt "):
                ours = line.split()[-1]
                status, body = comfy_server.queue(color_workflow(frames=2, size=32, chain=1,
                                                                 color=random.randrange(1 << 24)), "someone-else")
                assert status == 200, body
                other = body["prompt_id"]
            if "/64 " in line:
                proc.send_signal(sig)
                break
        rest = proc.stderr.read()
        code = proc.wait(timeout=120)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
    err = "".join(seen) + rest
    assert ours, err
    assert code == 128 + sig, err
    assert f"terminated by {sig.name}" in rest and "Traceback" not in rest, rest
    hist = wait_history(comfy_server, ours)
    assert "execution_interrupted" in [m[0] for m in hist["status"]["messages"]]
    assert wait_history(comfy_server, other)["status"]["status_str"] == "success"   # the other client's prompt ran


def test_sigterm_deletes_a_queued_prompt_and_leaves_the_running_one(comfy_server, tmp_path):
    """Another client's prompt runs; ours waits in the queue. SIGTERM deletes ours from the queue (it never runs)
    and the other prompt is not interrupted."""
    status, body = comfy_server.queue(color_workflow(frames=24, size=512, chain=2, color=random.randrange(1 << 24)),
                                      "someone-else")
    assert status == 200, body
    other = body["prompt_id"]
    wf = write_workflow(tmp_path / "wf.json", color_workflow(frames=2, size=32, chain=1,
                                                             color=random.randrange(1 << 24)))
    proc = start_client(wf, comfy_server.url, tmp_path / "never.png")
    try:
        ours = None
        for line in proc.stderr:
            if "queued prompt " in line:
                ours = line.split("queued prompt ")[1].split()[0]
                break
        assert ours
        running = [item[1] for item in comfy_server.get_json("/queue")["queue_running"]]
        assert running == [other]                              # ours is still waiting behind it
        proc.send_signal(signal.SIGTERM)
        rest = proc.stderr.read()
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 128 + signal.SIGTERM, rest
    assert "removed from the queue" in rest, rest
    queue = comfy_server.get_json("/queue")
    assert ours not in [item[1] for item in queue["queue_pending"] + queue["queue_running"]]
    assert wait_history(comfy_server, other)["status"]["status_str"] == "success"
    assert comfy_server.get_json(f"/history/{ours}") == {}    # never ran


def test_an_exception_in_the_caller_interrupts_the_prompt(comfy_server):
    """Any abnormal exit (here: the caller's progress callback raises) stops the prompt on the server."""
    wf = color_workflow(frames=64, size=512, chain=3, color=random.randrange(1 << 24))
    ids = []

    def on_event(ev: mc.RunEvent) -> None:
        if ev.type == "execution_start":
            ids.append(ev.data["prompt_id"])
        if ev.type == "progress":
            raise RuntimeError("caller bug")

    with pytest.raises(RuntimeError, match="caller bug"):
        mc.Client(comfy_server.url).run(wf, on_event=on_event)
    hist = wait_history(comfy_server, ids[0], timeout=120)
    assert "execution_interrupted" in [m[0] for m in hist["status"]["messages"]]


# --- driving-video controls: MagicPose Select Frames through the client -------------------------------------

@pytest.fixture(scope="module")
def grey_clip(tmp_path_factory) -> Path:
    """24 frames at 12 fps whose grey level is 10 x index, with 2 s of 440 Hz stereo sound at 16 kHz."""
    from magicpose_core.media.video import encode_video

    path = tmp_path_factory.mktemp("clip") / f"grey_{random.randrange(1 << 30)}.mp4"
    t = np.arange(32000) / 16000
    tone = np.stack([np.sin(2 * np.pi * 440 * t)] * 2).astype(np.float32) * 0.5
    encode_video((np.full((32, 48, 3), 10 * i, np.uint8) for i in range(24)), str(path), 12, "mp4", 0,
                 audio=(tone, 16000))
    return path


def frames_workflow() -> dict:
    return {
        "1": {"class_type": "LoadVideo", "inputs": {"file": "x.mp4"}, "_meta": {"title": "Driving video"}},
        "2": {"class_type": "MagicPoseSelectFrames", "_meta": {"title": "Frames"},
              "inputs": {"video": ["1", 0], "frame_load_cap": 0, "skip_first_frames": 0, "select_every_nth": 1,
                         "force_rate": 0.0}},
        "3": {"class_type": "MagicPoseFramesToVideo", "_meta": {"title": "Output"},
              "inputs": {"images": ["2", 0], "fps": ["2", 2], "audio": ["2", 1], "format": "mkv", "crf": 19,
                         "filename_prefix": "client/frames", "save_output": True}}}


@pytest.mark.parametrize("sets,levels,fps,seconds", [
    ([], list(range(24)), 12, 2.0),
    (["Frames.skip_first_frames=3", "Frames.select_every_nth=2", "Frames.frame_load_cap=5"], [3, 5, 7, 9, 11], 6,
     10 / 12),
    (["Frames.force_rate=6"], list(range(0, 24, 2)), 6, 2.0),
    (["Frames.skip_first_frames=20", "Frames.frame_load_cap=2"], [20, 21], 12, 2 / 12),
], ids=["whole", "skip3-nth2-cap5", "force6", "range20-21"])
def test_frame_selection_sets_frames_fps_and_audio(comfy_server, grey_clip, tmp_path, sets, levels, fps, seconds):
    """Load Video -> Select Frames -> Frames to Video on a real server: the kept frames (exact, via lossless mkv),
    the frame rate (source / nth, or the forced rate) and the sound trimmed to the kept span."""
    from magicpose_core.media.video import probe_video, read_audio

    wf = write_workflow(tmp_path / "wf.json", frames_workflow())
    out = tmp_path / "sel.mkv"
    args = [str(wf), "--driving", str(grey_clip), "--out", str(out), "--server", comfy_server.url]
    for s in sets:
        args += ["--set", s]
    r = run_client(*args)
    assert r.returncode == 0, r.stderr
    got = [int(round(f.mean() / 10)) for f in mc_frames(out)]
    assert got == levels
    assert probe_video(str(out)).fps == fps
    wave, rate = read_audio(str(out))
    assert abs(wave.shape[1] / rate - seconds) < 0.01, wave.shape


def mc_frames(path: Path) -> list[np.ndarray]:
    from magicpose_core.media.video import iter_video_frames

    return list(iter_video_frames(str(path)))
