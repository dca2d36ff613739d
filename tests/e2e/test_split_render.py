"""One driving video over several real ComfyUI servers on 127.0.0.1 (magicpose_core.client.split via the client),
with the factory checkpoints and the shipped video_dance_retarget workflow shrunk (64x64, few steps, 12 frames).

Checked: the merged video has exactly the frames and the sound of a single-server render of the same workflow
(bit-for-bit after decoding; same fps); a server unreachable at the start is skipped; a server killed in the middle
of a range has its range re-queued on another server and the result is still identical; a server that stays up but
fails in the middle of a range (the test-only fault node on server b) has that range re-rendered on the other, still
identical; SIGTERM stops every range on every server before the client exits (nothing of ours queued or running) and
keeps the finished parts, and `--resume` renders only the missing ranges; Ctrl-C pressed twice does the same
(exit 130; the second one does not cut the stop short); temporal_mode first splits bit-exactly and
previous is refused; a run whose ranges fail everywhere lists them and exits 1. The per-range overhead (time outside
the sampler), the upload and the merge are recorded as figures.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from support import figures
from support.workflows import load_api, load_script, of_type

from magicpose_core.client import split as sr
from magicpose_core.media.video import iter_video_frames, probe_video, read_audio

pytestmark = [pytest.mark.comfy, pytest.mark.server]

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / "workflows" / "api" / "video_dance_retarget_api.json"
FRAMES, FPS, SIZE, STEPS = 12, 8.0, 64, 3
SKIP, CAP = 1, 10                         # the Frames node keeps source frames 1..10
BATCH, RANGE = 2, 2                       # sampler frame_batch; frames per range: 5 ranges


FAULT_NODE = ROOT / "tests" / "support" / "fault_node"


def start_server(comfy_root, factory_files, base: Path, name: str, fault: bool = False):
    """A real server with the factory checkpoints; `fault`: it also loads the test-only fault node
    (tests/support/fault_node), armed by creating the file `srv.fault_trigger`."""
    from support.server import PACK_DIR_NAME, ComfyServer

    trigger = base / "fault_once"
    # One thread per server: two or three servers share this machine's cores, and OpenMP threads of processes
    # that oversubscribe the cores spin against each other (2-frame ranges went from 1.5 s to 50 s). Every server
    # of this module runs the same thread count, so the single render and the ranges stay bit-comparable.
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    srv = ComfyServer(comfy_root, base, ROOT / ".cache" / "test-logs" / f"split-{name}-{os.getpid()}.log",
                      extra_args=["--whitelist-custom-nodes", PACK_DIR_NAME, "magicpose_test_fault"] if fault else None,
                      env={**env, "MAGICPOSE_TEST_FAULT": str(trigger)} if fault else env)
    srv.prepare_base({"checkpoints": [factory_files["sd15"]], "magicpose": [factory_files["magicpose"]]})
    if fault:
        (base / "custom_nodes" / "magicpose_test_fault").symlink_to(FAULT_NODE, target_is_directory=True)
    srv.fault_trigger = trigger
    return srv.start()


@pytest.fixture(scope="module")
def servers(comfy_root, factory_files, tmp_path_factory):
    """Servers a and b; b loads the test-only fault node (disarmed unless a test creates b.fault_trigger)."""
    started = []
    try:
        for name in ("a", "b"):
            started.append(start_server(comfy_root, factory_files, tmp_path_factory.mktemp(f"split_{name}"), name,
                                        fault=name == "b"))
        yield started
    finally:
        for srv in started:
            srv.stop()


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> dict[str, Path]:
    mk = load_script("make_sample_inputs")
    return mk.make_all(tmp_path_factory.mktemp("split_samples"), frames=FRAMES, fps=FPS, height=128, poses=1)


@pytest.fixture(scope="module")
def sets(factory_files) -> list[str]:
    api = load_api("video_dance_retarget")
    out = [f"Checkpoint.ckpt_name={factory_files['sd15'].name}",
           f"MagicPose model.ckpt_name={factory_files['magicpose'].name}", f"Sampler.steps={STEPS}",
           f"Sampler.frame_batch={BATCH}", f"Frames.skip_first_frames={SKIP}", f"Frames.frame_load_cap={CAP}"]
    for nid in of_type(api, "MagicPoseLoadReference") + of_type(api, "MagicPoseExtractPose"):
        out += [f"{nid}.width={SIZE}", f"{nid}.height={SIZE}"]
    return out


def client(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "magicpose_core.client", "run", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def base_args(samples, sets, out: Path, *servers: str) -> list[str]:
    args = [str(WORKFLOW), "--reference", str(samples["reference"]), "--driving", str(samples["driving"]),
            "--out", str(out)]
    for s in sets:
        args += ["--set", s]
    for url in servers:
        args += ["--server", url]
    return args


def decoded(path: Path) -> tuple[np.ndarray, tuple[np.ndarray, int] | None, float]:
    info = probe_video(str(path))
    return np.stack(list(iter_video_frames(str(path)))), read_audio(str(path)), float(info.fps)


def assert_same_video(got: Path, want: tuple) -> None:
    frames, audio, fps = decoded(got)
    assert frames.shape == want[0].shape and fps == want[2]
    assert np.array_equal(frames, want[0]), f"max pixel difference {np.abs(frames.astype(int) - want[0]).max()}"
    assert audio is not None and want[1] is not None and audio[1] == want[1][1]
    assert np.array_equal(audio[0], want[1][0])


@pytest.fixture(scope="module")
def single(servers, samples, sets, tmp_path_factory) -> tuple:
    """The reference: the same workflow rendered whole on one server."""
    out = tmp_path_factory.mktemp("split_single") / "single.mp4"
    t0 = time.perf_counter()
    r = client(*base_args(samples, sets, out, servers[0].url))
    assert r.returncode == 0, r.stderr + servers[0].log_tail()
    figures.record(f"split: single-server render, {CAP} frames {SIZE}x{SIZE} {STEPS} steps, cold (s)",
                   round(time.perf_counter() - t0, 1))
    return decoded(out)


def test_split_over_two_servers_equals_the_single_render(servers, samples, sets, single, tmp_path):
    # the single render warmed server a; warm b the same way, so the figures compare warm servers
    warm = client(*base_args(samples, sets, tmp_path / "warm.mp4", servers[1].url))
    assert warm.returncode == 0, warm.stderr
    t0 = time.perf_counter()
    again = client(*base_args(samples, sets + ["Sampler.seed=7"], tmp_path / "warm_single.mp4", servers[0].url))
    single_warm = time.perf_counter() - t0
    assert again.returncode == 0, again.stderr
    lines: list[str] = []
    job = sr.SplitRender([s.url for s in servers], WORKFLOW, {"Reference": samples["reference"],
                                                               "Driving video": samples["driving"]},
                         sets + ["Sampler.seed=7"], tmp_path / "split.mp4", range_frames=RANGE, on_text=lines.append)
    t0 = time.perf_counter()
    result = job.run()
    split_time = time.perf_counter() - t0
    assert result.path == tmp_path / "split.mp4" and result.frames == CAP
    assert [(r.start, r.stop) for r in result.ranges] == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10)]
    assert {s.server for s in result.stats} == {srv.url for srv in servers}      # both servers took ranges
    assert_same_video(result.path, decoded(tmp_path / "warm_single.mp4"))
    assert not (tmp_path / "split.mp4.parts").exists()                          # parts removed after the merge
    assert any("total 100%" in ln for ln in lines) and "merged 5 parts" in lines[-1]
    overhead = [s.seconds - s.sample_seconds for s in result.stats]
    figures.record("split: per-range time outside the sampler (queue, cut, decode, encode mkv, download), mean (s)",
                   round(sum(overhead) / len(overhead), 2))
    figures.record("split: download + check of one 2-frame part, mean (s)",
                   round(sum(s.download_seconds for s in result.stats) / len(result.stats), 3))
    figures.record("split: upload of the inputs per server (s)", round(max(result.upload_seconds.values()), 2))
    figures.record("split: merge per range (s)", round(result.merge_seconds / len(result.ranges), 3))
    figures.record(f"split: {CAP} frames in 5 ranges on 2 servers vs 1 warm server (s)",
                   f"{split_time:.1f} vs {single_warm:.1f}")


def test_the_cli_split_equals_the_single_render(servers, samples, sets, single, tmp_path):
    out = tmp_path / "cli.mp4"
    r = client(*base_args(samples, sets, out, *(s.url for s in servers)), "--range-frames", "4")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == str(out)
    assert "10 frames in 3 ranges on 2 server(s)" in r.stderr and "Traceback" not in r.stderr
    assert_same_video(out, single)


def test_unreachable_server_skipped_and_killed_server_requeued(comfy_root, factory_files, servers, samples, sets,
                                                               single, tmp_path_factory):
    from support.server import free_port

    victim = start_server(comfy_root, factory_files, tmp_path_factory.mktemp("split_victim"), "victim")
    dead = f"http://127.0.0.1:{free_port()}"
    out = tmp_path_factory.mktemp("split_kill") / "killed.mp4"
    proc = subprocess.Popen([sys.executable, "-m", "magicpose_core.client", "run",
                             *base_args(samples, sets, out, dead, servers[0].url, victim.url), "--range-frames", "2"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(600, proc.kill)
    watchdog.start()
    killed = False
    try:
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if not killed and line.startswith(f"[{victim.url}]") and "started" in line:
                os.killpg(victim.proc.pid, signal.SIGKILL)             # mid-range: loading models or sampling
                victim.proc.wait(timeout=30)
                killed = True
        code = proc.wait(timeout=60)
        stdout = proc.stdout.read()
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
        victim.stop()
    err = "".join(lines)
    assert killed, err
    assert code == 0, err
    assert f"server {dead} skipped" in err and f"server {victim.url} is gone" in err, err
    assert "goes back to the queue" in err
    assert stdout.strip().splitlines()[-1] == str(out)
    assert_same_video(out, single)


def signalled_client(args: list[str], on_line) -> tuple[int, str, str]:
    """Run the client CLI, call `on_line(proc, line)` on each stderr line until it returns True (it sends the
    signals), then read the rest and wait. Returns (exit code, stderr up to then, the rest of stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "magicpose_core.client", "run", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(600, proc.kill)
    watchdog.start()
    try:
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if on_line(proc, line):
                break
        rest = proc.stderr.read()
        code = proc.wait(timeout=120)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
    return code, "".join(lines), rest


def assert_nothing_of_ours_left(servers) -> None:
    for srv in servers:                                           # nothing of ours runs or waits on any server
        q = srv.get_json("/queue")
        assert q["queue_running"] == [] and q["queue_pending"] == [], q


def test_sigterm_stops_every_range_keeps_parts_and_resume_renders_the_rest(servers, samples, sets, single,
                                                                           tmp_path):
    out, parts = tmp_path / "resumed.mp4", tmp_path / "parts"
    args = base_args(samples, sets, out, *(s.url for s in servers)) + ["--range-frames", "2", "--parts-dir",
                                                                        str(parts)]
    done = []

    def on_line(proc, line: str) -> bool:
        if ": done |" in line:
            done.append(line)
        if done and "started" in line:                            # a range finished and the next one started
            proc.send_signal(signal.SIGTERM)
            return True
        return False

    code, head, rest = signalled_client(args, on_line)
    err = head + rest
    assert code == 128 + signal.SIGTERM, err
    assert "terminated by SIGTERM" in rest and "Traceback" not in rest, rest
    assert_nothing_of_ours_left(servers)
    kept = sorted(p.name for p in parts.glob("range_*.mkv"))
    manifest = json.loads((parts / "manifest.json").read_text())
    assert len(manifest["ranges"]) == 5 and 1 <= len(kept) < 5, (kept, err)
    assert not list(parts.glob(".*partial"))
    r = client(*args, "--resume")
    assert r.returncode == 0, r.stderr
    assert f"{len(kept)} range(s) already done" in r.stderr
    started = [ln for ln in r.stderr.splitlines() if ln.endswith("started") or ": started |" in ln]
    assert len(started) == 5 - len(kept), r.stderr                # only the missing ranges were rendered
    assert_same_video(out, single)


def test_ctrl_c_twice_stops_every_range_and_exits_130(servers, samples, sets, tmp_path):
    """Ctrl-C, then Ctrl-C again at once (what users do): the second one is ignored with a message instead of
    cutting the stop short, so nothing of ours is left queued or running on any server; exit 130, parts kept."""
    parts = tmp_path / "parts"
    args = base_args(samples, sets, tmp_path / "never.mp4", *(s.url for s in servers)) + [
        "--range-frames", "2", "--parts-dir", str(parts)]
    sent, sampling = [], re.compile(r": [1-9]\d*% \|")

    def on_line(proc, line: str) -> bool:
        if not sent and sampling.search(line):                    # a range is sampling on a server: Ctrl-C
            proc.send_signal(signal.SIGINT)
            sent.append(line)
        elif sent and line.startswith("stopping "):               # the stop is under way: Ctrl-C again
            proc.send_signal(signal.SIGINT)
            return True
        return False

    code, head, rest = signalled_client(args, on_line)
    err = head + rest
    assert code == 130, err
    assert "Ctrl-C again: still stopping our prompts" in rest and "Traceback" not in rest, rest
    assert_nothing_of_ours_left(servers)
    assert (parts / "manifest.json").is_file() and not list(parts.glob(".*partial"))
    assert not (tmp_path / "never.mp4").exists()


def test_an_execution_error_mid_range_is_retried_on_the_other_server(servers, samples, sets, single, tmp_path,
                                                                    caplog):
    """Server b stays up but fails its next sampling run after the second step (the test-only fault node): that
    range is re-queued on server a, b goes on with other ranges, and the merged video is still the single render."""
    a, b = servers
    b.fault_trigger.write_text("once")
    try:
        job = sr.SplitRender([b.url, a.url], WORKFLOW, {"Reference": samples["reference"],
                                                         "Driving video": samples["driving"]},
                             sets, tmp_path / "retried.mp4", range_frames=RANGE)
        with caplog.at_level("WARNING", logger="MagicPose"):
            result = job.run()
    finally:
        armed = b.fault_trigger.exists()
        b.fault_trigger.unlink(missing_ok=True)
    assert not armed, "the fault did not fire: b never sampled"
    failed = [r for r in caplog.records if f"failed on {b.url}" in r.getMessage()]
    assert len(failed) == 1 and "injected test fault at step 2 of 3" in failed[0].getMessage(), caplog.text
    label = failed[0].getMessage().split(" failed on ")[0]
    assert [s.server for s in result.stats if s.range.label == label] == [a.url]       # re-rendered on a
    assert b.url in {s.server for s in result.stats}                                   # b stayed up and rendered
    assert len(result.stats) == 5 and not result.failed
    assert_same_video(result.path, single)


def test_temporal_first_split_over_two_servers_equals_the_single_render(servers, samples, sets, single, tmp_path):
    """temporal_mode first: each range after the first gets the video's first frame_batch pose maps as anchor_pose
    (hidden frames), so the merged frames equal the single render bit-for-bit; previous is refused with the fix."""
    temporal = sets + ["Sampler.temporal_mode=first", "Sampler.temporal_strength=0.8"]
    r = client(*base_args(samples, temporal, tmp_path / "single.mp4", servers[0].url))
    assert r.returncode == 0, r.stderr
    r = client(*base_args(samples, temporal, tmp_path / "split.mp4", *(s.url for s in servers)), "--range-frames", "4")
    assert r.returncode == 0, r.stderr
    assert "10 frames in 3 ranges on 2 server(s)" in r.stderr
    want = decoded(tmp_path / "single.mp4")
    assert_same_video(tmp_path / "split.mp4", want)
    assert not np.array_equal(want[0], single[0])                 # the temporal sources did change the frames
    r = client(*base_args(samples, sets + ["Sampler.temporal_mode=previous"], tmp_path / "x.mp4",
                          *(s.url for s in servers)))
    assert r.returncode == 2 and "each frame's anchor is the previous rendered frame" in r.stderr, r.stderr
    assert "temporal_mode first" in r.stderr and "one --server" in r.stderr


def test_ranges_failing_everywhere_are_listed_and_exit_1(servers, samples, sets, tmp_path):
    out = tmp_path / "failed.mp4"
    bad = [s for s in sets if not s.startswith("Checkpoint.")] + ["Checkpoint.ckpt_name=missing.safetensors"]
    r = client(*base_args(samples, bad, out, *(s.url for s in servers)), "--range-frames", "4")
    assert r.returncode == 1, r.stderr
    assert "3 of 3 ranges failed" in r.stderr and "frames 0-3:" in r.stderr and "frames 8-9:" in r.stderr
    assert "missing.safetensors" in r.stderr and "--resume" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not out.exists()


def test_refusals_name_the_fix(servers, samples, sets, tmp_path):
    r = client(*base_args(samples, sets + ["Sampler.shared_noise=false"], tmp_path / "x.mp4",
                          *(s.url for s in servers)))
    assert r.returncode == 2 and "shared_noise is off" in r.stderr, r.stderr
    r = client(*base_args(samples, sets, tmp_path / "x.mp4", "http://127.0.0.1:9", "http://127.0.0.1:10"))
    assert r.returncode == 3 and "none of the servers answered" in r.stderr, r.stderr
