"""The shipped workflows on a real ComfyUI server with the factory checkpoints (random weights: the pictures are
noise, the plumbing is real).

Checked: the generator's node tables and every UI and API workflow against `/object_info` (node types, input
names and order, required inputs, links, option values); the real frontend (headless Chromium) exports each UI
file to exactly its API twin and saves it back unchanged; the template browser serves the UI files; every API
workflow runs to success on sample inputs made by scripts/make_sample_inputs.py (the `make demo` path for
video_dance_retarget: the headless client as a subprocess), with outputs of the expected frame count, size,
frame rate and sound, pose maps that show the detected people, and `progress` events of frames x steps;
`/interrupt` mid-run is honoured and the next prompt succeeds; 5 prompts queued back to back all succeed; the
client's exit codes and messages on broken MagicPose workflows; scripts/demo.sh (`make demo`) without weights
(exit 2, what to put where) and with DEMO_WEIGHTS=tiny (a playable video, the server stopped).

The shipped files keep the official settings (512x512, 50 steps); the tests shrink them (64x64, 2 steps, a few
frames) with the client's `--set` or by editing the loaded API JSON, as a user would.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from PIL import Image
from support import figures
from support.video_probe import fraction_close, probe
from support.workflows import (
    NAMES,
    frontend_widgets,
    load_api,
    load_script,
    load_ui,
    of_type,
    ordered_inputs,
    titled,
    ui_to_api,
    validate_api,
)

pytestmark = [pytest.mark.comfy, pytest.mark.server]

ROOT = Path(__file__).resolve().parents[2]
SIZE, STEPS = 64, 2                      # model size and steps the tests run at
FRAMES, FPS, POSES = 4, 8.0, 2           # sample inputs: 4-frame driving videos at 8 fps, 2 target poses
FILE_INPUTS = {"Reference.image", "Driving video.file", "Driving poses.image", "Checkpoint.ckpt_name",
               "MagicPose model.ckpt_name"}

gen = load_script("build_workflows")


@pytest.fixture(scope="module")
def object_info(server) -> dict:
    return server.get_json("/object_info")


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> dict[str, Path]:
    """reference.png, driving.mp4, driving_poses.png (animated), face_driving.mp4: small, made at run time."""
    mk = load_script("make_sample_inputs")
    t0 = time.perf_counter()
    files = mk.make_all(tmp_path_factory.mktemp("samples"), frames=FRAMES, fps=FPS, height=128, poses=POSES)
    figures.record("workflows: sample inputs made (s)", round(time.perf_counter() - t0, 2))
    return files


@pytest.fixture(scope="module")
def uploaded(server, samples) -> dict[str, str]:
    return {k: server.upload_image(p) for k, p in samples.items()}


def small(api: dict, factory_files: dict, uploaded: dict, seed: int = 42, steps: int = STEPS,
          one_pose: bool = False) -> dict:
    """The shipped API workflow shrunk for the tests and pointed at the factory checkpoints and the samples
    (`one_pose`: the reference photo itself as the only target pose, for quick runs)."""
    wf = copy.deepcopy(api)
    wf[titled(wf, "Checkpoint")[0]]["inputs"]["ckpt_name"] = factory_files["sd15"].name
    wf[titled(wf, "MagicPose model")[0]]["inputs"]["ckpt_name"] = factory_files["magicpose"].name
    wf[titled(wf, "Reference")[0]]["inputs"]["image"] = uploaded["reference"]
    for nid in titled(wf, "Driving video"):
        is_face = wf[nid]["inputs"]["file"] == "face_driving.mp4"
        wf[nid]["inputs"]["file"] = uploaded["face" if is_face else "driving"]
    for nid in titled(wf, "Driving poses"):
        wf[nid]["inputs"]["image"] = uploaded["reference" if one_pose else "poses"]
    for nid in of_type(wf, "MagicPoseLoadReference") + of_type(wf, "MagicPoseExtractPose"):
        wf[nid]["inputs"].update(width=SIZE, height=SIZE)
    sampler = wf[titled(wf, "Sampler")[0]]["inputs"]
    sampler.update(steps=steps, seed=seed)
    return wf


def _png_size(server, item: dict) -> tuple[int, int]:
    with Image.open(server.output_path(item)) as im:
        return im.size


def _preview_has_strokes(server, result, node: str) -> bool:
    """The Extract Pose preview (pose maps on black) shows something: the samples' people were detected."""
    items = result.outputs.get(node, {}).get("images", [])
    for item in items:
        with Image.open(server.output_path(item)) as im:
            if np.asarray(im.convert("RGB")).max() > 100:
                return True
    return False


# --- schemas and files -------------------------------------------------------------------------------------

def test_generator_node_tables_match_object_info(object_info):
    """The generator writes widgets_values and slots from its own tables: they must be the server's schemas
    (names, order, socket vs widget, control_after_generate, upload button, defaults, outputs, display names)."""
    for node_type, d in gen.NODE_DEFS.items():
        assert node_type in object_info, node_type
        info = object_info[node_type]
        assert info["display_name"] == d.display_name, node_type
        server_inputs = ordered_inputs(info)
        assert [(n, o) for n, _, o in server_inputs] == [(s.name, s.optional) for s in d.inputs], node_type
        sockets, widgets, control, upload = frontend_widgets(info)
        ours_sockets, ours_widgets = gen.ordered_slots(d)
        assert [s.name for s in ours_sockets] == sockets and [s.name for s in ours_widgets] == widgets, node_type
        assert {s.name for s in d.inputs if s.control} == control, node_type
        assert d.upload == upload, node_type
        for name, spec, _ in server_inputs:
            slot = next(s for s in d.inputs if s.name == name)
            t = spec[0]
            if isinstance(t, list):
                t = "COMBO"
            assert slot.type == t, f"{node_type}.{name}: {slot.type} != {t}"
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            assert slot.default == opts.get("default"), f"{node_type}.{name} default"
        assert list(zip(info["output_name"], info["output"])) == list(d.outputs), node_type


@pytest.mark.parametrize("name", NAMES)
def test_api_workflow_validates_against_object_info(object_info, name):
    problems = validate_api(load_api(name), object_info, FILE_INPUTS)
    assert not problems, "\n".join(problems)


def test_validator_catches_what_the_server_would_reject(object_info):
    """The check above can fail: a broken copy of a shipped workflow yields each kind of problem."""
    api = load_api("video_dance_retarget")
    s = titled(api, "Sampler")[0]
    del api[s]["inputs"]["poses"]
    api[s]["inputs"]["stepz"] = 3
    api[s]["inputs"]["sampler_name"] = "nope"
    api[s]["inputs"]["cfg"] = 1000.0
    api[s]["inputs"]["positive"] = ["99", 0]
    api[s]["inputs"]["negative"] = ["1", 7]
    api[s]["inputs"]["model"] = ["1", 1]
    api["40"] = {"class_type": "NoSuchNode", "inputs": {}, "_meta": {"title": "x"}}
    text = "\n".join(validate_api(api, object_info, FILE_INPUTS))
    for expected in ("'poses' missing", "unknown input 'stepz'", "sampler_name='nope'", "cfg=1000.0 outside",
                     "missing node ['99', 0]", "output 7 of CheckpointLoaderSimple", "linked to CLIP",
                     "NoSuchNode"):
        assert expected in text, (expected, text)


@pytest.mark.parametrize("name", NAMES)
def test_ui_workflow_exports_to_its_api_twin(object_info, name):
    """The UI file, exported as the frontend exports it with the server's schemas, is the API twin."""
    def layout(node_type):
        _, widgets, control, upload = frontend_widgets(object_info[node_type])
        return widgets, control, upload

    ui = load_ui(name)
    assert ui_to_api(ui, layout, lambda t: object_info[t]["display_name"]) == load_api(name)
    for node in ui["nodes"]:
        if node["type"] in object_info:
            sockets, widgets, _, upload = frontend_widgets(object_info[node["type"]])
            names = sockets + widgets + (["upload"] if upload else [])
            assert [i["name"] for i in node["inputs"]] == names, node["type"]


@pytest.fixture(scope="module")
def frontend(server):
    """The real ComfyUI frontend (the one the server serves) in headless Chromium."""
    from support.cdp import Chromium, ensure_chromium

    logs = ROOT / ".cache" / "test-logs"
    browser = Chromium(ensure_chromium(logs / "chromium-apt.log"), logs / "chromium_workflows.log").start()
    page = None
    try:
        page = browser.new_page()
        page.navigate(server.url + "/")
        page.wait_for("!!(window.app && window.app.canvas && window.LiteGraph && window.LiteGraph.registered_node_types"
                      " && window.LiteGraph.registered_node_types.MagicPoseSample)", timeout=120)
        yield page
    finally:
        if page is not None:
            page.close()
        browser.stop()


@pytest.mark.browser
@pytest.mark.parametrize("name", NAMES)
def test_frontend_exports_the_api_twin_and_saves_the_ui_file_unchanged(frontend, name):
    """Loaded by the frontend itself: "Export (API)" (`app.graphToPrompt`) gives the API twin exactly, and saving
    (`app.graph.serialize`) gives back the same nodes (slots, links, widget values, order, titles) and links."""
    ui = load_ui(name)
    frontend.evaluate(f"app.loadGraphData({json.dumps(ui)}, true, true, {json.dumps(name)}).then(() => true)")
    assert frontend.evaluate("app.graphToPrompt().then((p) => p.output)") == load_api(name)
    saved = frontend.evaluate("app.graph.serialize()")

    def strip(slots):
        return [{k: v for k, v in slot.items() if k != "localized_name"} for slot in slots]

    ours = {n["id"]: n for n in ui["nodes"]}
    assert sorted(ours) == sorted(n["id"] for n in saved["nodes"])
    for n in saved["nodes"]:
        mine = ours[n["id"]]
        for key in ("type", "title", "order", "mode", "pos", "size", "properties", "widgets_values"):
            assert n.get(key) == mine.get(key), (name, n["id"], key)
        assert strip(n["inputs"]) == strip(mine["inputs"]) and strip(n["outputs"]) == strip(mine["outputs"]), n["id"]
    assert sorted(map(list, saved["links"])) == sorted(ui["links"])


def test_template_browser_serves_the_ui_workflows(server):
    listed = server.get_json("/workflow_templates")
    assert sorted(listed.get("magicpose", [])) == sorted(NAMES)
    for name in NAMES:
        status, body = server.request("GET", f"/api/workflow_templates/magicpose/{name}.json")
        assert status == 200 and json.loads(body) == load_ui(name)


# --- runs --------------------------------------------------------------------------------------------------

def run_client(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "magicpose_core.client", "run", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def client_sets(factory_files) -> list[str]:
    """The --set overrides `make demo` uses with DEMO_WEIGHTS=tiny (sizes via the untitled node ids)."""
    api = load_api("video_dance_retarget")
    sets = [f"Checkpoint.ckpt_name={factory_files['sd15'].name}",
            f"MagicPose model.ckpt_name={factory_files['magicpose'].name}", f"Sampler.steps={STEPS}"]
    for nid in of_type(api, "MagicPoseLoadReference") + of_type(api, "MagicPoseExtractPose"):
        sets += [f"{nid}.width={SIZE}", f"{nid}.height={SIZE}"]
    return sets


def test_video_dance_retarget_through_the_headless_client(server, factory_files, samples, tmp_path):
    """The `make demo` path: client subprocess, uploads by title, --set overrides, the mp4 downloaded."""
    out = tmp_path / "dance.mp4"
    args = [str(ROOT / "workflows/api/video_dance_retarget_api.json"), "--server", server.url,
            "--reference", str(samples["reference"]), "--driving", str(samples["driving"]), "--out", str(out)]
    for s in client_sets(factory_files):
        args += ["--set", s]
    t0 = time.perf_counter()
    r = run_client(*args)
    figures.record("workflows: video_dance_retarget via client, 4 frames 64x64 2 steps (s)",
                   round(time.perf_counter() - t0, 1))
    assert r.returncode == 0, r.stderr + "\n" + server.log_tail()
    assert r.stdout.strip().splitlines()[-1] == str(out)
    p = probe(out)
    assert p.frames == FRAMES and (p.width, p.height) == (SIZE, SIZE)
    assert fraction_close(p.fps, FPS)                               # the driver's frame rate
    assert p.audio is not None and abs(p.audio_seconds - FRAMES / FPS) < 1 / FPS   # and its sound, trimmed
    assert np.ptp(p.images) > 0
    bars = [ln for ln in r.stderr.splitlines() if '"Sampler" (MagicPoseSample):' in ln]   # the client's tqdm lines
    total = FRAMES * STEPS
    assert bars and "100%" in bars[-1] and f"| {total}/{total} [" in bars[-1], r.stderr   # frames x steps
    assert '"Driving pose" (MagicPoseExtractPose)' in r.stderr


@pytest.mark.parametrize("name", ["image_pose_retarget", "face_expression_retarget", "stylised_reference"])
def test_workflow_runs_with_expected_outputs_and_progress(server, factory_files, uploaded, name):
    api = small(load_api(name), factory_files, uploaded)
    t0 = time.perf_counter()
    result = server.run(api, timeout=600)
    figures.record(f"workflows: {name} run, 64x64 {STEPS} steps (s)", round(time.perf_counter() - t0, 1))
    assert result.status == "success", result.error_message() + "\n" + server.log_tail()
    out = titled(api, "Output")[0]
    sampler = titled(api, "Sampler")[0]
    if api[out]["class_type"] == "SaveImage":
        images = result.outputs[out]["images"]
        assert len(images) == POSES                                   # one image per target pose
        assert all(_png_size(server, i) == (SIZE, SIZE) for i in images)
        frames = POSES
    else:
        p = probe(server.output_path(result.outputs[out]["images"][0]))
        assert p.frames == FRAMES and (p.width, p.height) == (SIZE, SIZE) and fraction_close(p.fps, FPS)
        assert p.audio is not None
        frames = FRAMES
    ticks = [(v, m) for node, v, m in result.progress() if node == sampler]
    per_run = frames * STEPS if api[sampler]["class_type"] == "MagicPoseSample" else STEPS
    assert ticks and ticks[-1] == (per_run, per_run), ticks
    assert [v for v, _ in ticks] == sorted(v for v, _ in ticks)
    for nid in of_type(api, "MagicPoseExtractPose"):
        assert _preview_has_strokes(server, result, nid), f"empty pose maps from node {nid}"


def test_interrupt_mid_run_then_next_prompt_succeeds(server, factory_files, uploaded):
    api = load_api("image_pose_retarget")
    long = small(api, factory_files, uploaded, seed=1001, steps=40)
    sampler = titled(api, "Sampler")[0]
    sent = threading.Event()

    def on_event(srv, ev):
        if ev["type"] == "progress" and ev["data"].get("node") == sampler and not sent.is_set():
            sent.set()
            srv.post_json("/interrupt", {"prompt_id": ev["data"]["prompt_id"]})

    t0 = time.perf_counter()
    result = server.run(long, timeout=600, on_event=on_event)
    assert sent.is_set()
    assert result.status == "interrupted", result.error_message()
    ticks = [v for node, v, _ in result.progress() if node == sampler]
    # sent at the first tick: the sampler stops within a few steps, far from the end (80 ticks; a run that ignored
    # the interrupt, or honoured it only at the next image, would reach 40 or more)
    assert ticks and max(ticks) < POSES * 40 // 2, ticks
    assert not result.outputs.get(titled(api, "Output")[0])
    figures.record("workflows: interrupt honoured after (s)", round(time.perf_counter() - t0, 1))
    after = server.run(small(api, factory_files, uploaded, seed=1002, steps=1, one_pose=True), timeout=600)
    assert after.status == "success", after.error_message()
    assert len(after.outputs[titled(api, "Output")[0]]["images"]) == 1


def test_five_prompts_queued_back_to_back_all_succeed(server, factory_files, uploaded):
    api = load_api("image_pose_retarget")
    out = titled(api, "Output")[0]
    ids = []
    t0 = time.perf_counter()
    for seed in range(2001, 2006):                                    # different seeds: nothing is cached
        status, body = server.queue(small(api, factory_files, uploaded, seed=seed, steps=1, one_pose=True))
        assert status == 200 and not body.get("node_errors"), body
        ids.append(body["prompt_id"])
    q = server.get_json("/queue")
    waiting = {item[1] for item in q["queue_running"] + q["queue_pending"]} & set(ids)
    assert len(waiting) >= 2, q                                       # they really were queued together
    done: dict[str, dict] = {}
    deadline = time.monotonic() + 600
    while len(done) < len(ids) and time.monotonic() < deadline:
        for pid in ids:
            if pid not in done:
                h = server.get_json(f"/history/{pid}").get(pid)
                if h and h.get("status", {}).get("completed") is not None:
                    done[pid] = h
        time.sleep(0.25)
    figures.record("workflows: 5 queued image_pose_retarget prompts, 1 pose 1 step (s)",
                   round(time.perf_counter() - t0, 1))
    assert len(done) == len(ids), f"only {len(done)} of {len(ids)} finished"
    for pid in ids:
        h = done[pid]
        assert h["status"]["status_str"] == "success", h["status"]
        assert len(h["outputs"][out]["images"]) == 1
    files = {i["filename"] for pid in ids for i in done[pid]["outputs"][out]["images"]}
    assert len(files) == len(ids)                                     # every prompt wrote its own image


@pytest.mark.parametrize("kind, code, expected", [
    ("wrong ckpt_name", 2, ['node 2 "MagicPose model" (MagicPoseLoadModel)', "ckpt_name", "no_such_file.th"]),
    ("missing link", 2, ['node 10 "Sampler" (MagicPoseSample)', "poses", "Required input is missing"]),
    ("bad size", 2, ['node 6 "MagicPose Load Reference"', "multiples of 8", "use 96x64"]),   # rejected at validation
])
def test_client_exit_codes_and_messages_on_broken_workflows(server, factory_files, samples, tmp_path, kind, code,
                                                            expected):
    api = load_api("video_dance_retarget")
    sets = client_sets(factory_files)
    if kind == "wrong ckpt_name":
        sets.append("MagicPose model.ckpt_name=no_such_file.th")
    elif kind == "missing link":
        del api[titled(api, "Sampler")[0]]["inputs"]["poses"]
    else:
        sets.append(f"{of_type(api, 'MagicPoseLoadReference')[0]}.width=100")   # not a multiple of 8
    wf = tmp_path / "broken_api.json"
    wf.write_text(json.dumps(api))
    args = [str(wf), "--server", server.url, "--reference", str(samples["reference"]),
            "--driving", str(samples["driving"]), "--out", str(tmp_path / "out.mp4"), "--quiet"]
    for s in sets:
        args += ["--set", s]
    r = run_client(*args)
    assert r.returncode == code, r.stderr
    for text in expected:
        assert text in r.stderr, (text, r.stderr)
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "out.mp4").exists()


# --- make demo ---------------------------------------------------------------------------------------------

def run_demo(comfy_root: Path, base: Path, out: Path, **env: str) -> subprocess.CompletedProcess:
    """scripts/demo.sh as `make demo` runs it (COMFYUI_PATH exported), in a throw-away base folder."""
    clean = {k: v for k, v in os.environ.items()
             if k not in ("MAGICPOSE_MODELS", "COMFYUI_MODELS") and not k.startswith("DEMO_")}
    clean.update(COMFYUI_PATH=str(comfy_root), DEMO_BASE=str(base), DEMO_OUT=str(out), **env)
    return subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh")], cwd=ROOT, env=clean, capture_output=True,
                          text=True, timeout=900)


def _servers_using(base: Path) -> list[int]:
    return [p.pid for p in psutil.process_iter(["cmdline"]) if str(base) in " ".join(p.info["cmdline"] or [])]


def test_demo_without_weights_says_what_to_put_where_and_exits_2(comfy_root, tmp_path):
    base, out = tmp_path / "demo", tmp_path / "out.mp4"
    r = run_demo(comfy_root, base, out)
    assert r.returncode == 2, r.stderr
    for text in ("model_state-110000.th", f"in {base}/models/magicpose", "huggingface.co/Boese0601/MagicDance",
                 "model_state-110000.pth", "python -m magicpose_core.checkpoint convert", "--with-sd15",
                 "MAGICPOSE_MODELS",
                 "DEMO_WEIGHTS=tiny"):
        assert text in r.stderr, (text, r.stderr)
    assert "starting ComfyUI" not in r.stderr and not out.exists()


def test_demo_with_tiny_weights_writes_a_playable_video_and_stops_the_server(comfy_root, factory_files, tmp_path):
    base, out = tmp_path / "demo", tmp_path / "outputs" / "demo.mp4"
    t0 = time.perf_counter()
    r = run_demo(comfy_root, base, out, DEMO_WEIGHTS="tiny", DEMO_FRAMES="3", DEMO_STEPS="1", DEMO_SIZE="64")
    figures.record("workflows: make demo (tiny, 3 frames 64x64 1 step, checkpoints cached) (s)",
                   round(time.perf_counter() - t0, 1))
    try:
        assert r.returncode == 0, r.stderr[-3000:]
        p = probe(out)
        assert p.frames == 3 and (p.width, p.height) == (64, 64) and fraction_close(p.fps, 8)
        assert p.audio is not None
        assert "the output video will be NOISE" in r.stderr and "the video is noise" in r.stderr
        assert "server stopped" in r.stderr
        assert not _servers_using(base), "the demo left its ComfyUI server running"
        assert (base / "server.log").is_file()
    finally:
        shutil.rmtree(base, ignore_errors=True)        # the converted tiny checkpoint (~320 MB)
