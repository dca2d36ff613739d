"""The shipped workflows (workflows/*.json UI format, workflows/api/*_api.json API format), without a server:
the committed files are exactly the generator's output (scripts/build_workflows.py), every UI file is a
well-formed frontend 0.4 workflow whose links agree from both ends, the UI and API twins describe the same
graph (converted as the frontend converts), titles follow the client's convention, the graphs are the ones the
issue describes, and the official defaults are in place. The same files run on a real server in
tests/e2e/test_workflows.py.
"""
from __future__ import annotations

import copy
import json

import pytest
from support.workflows import (
    API_DIR,
    NAMES,
    VIRTUAL,
    WORKFLOWS,
    load_api,
    load_script,
    load_ui,
    of_type,
    titled,
    ui_to_api,
)

from magicpose_core import client as mc

gen = load_script("build_workflows")


def _layout(node_type: str):
    d = gen.NODE_DEFS[node_type]
    _, widgets = gen.ordered_slots(d)
    return [s.name for s in widgets], {s.name for s in widgets if s.control}, d.upload


def _display(node_type: str) -> str:
    return gen.NODE_DEFS[node_type].display_name


def test_committed_files_are_the_generators_output():
    files = gen.render_all()
    assert sorted(p.name for p in files) == sorted([f"{n}.json" for n in NAMES] + [f"{n}_api.json" for n in NAMES])
    for path, text in files.items():
        assert path.is_file(), f"{path} missing: run scripts/build_workflows.py"
        assert path.read_text(encoding="utf-8") == text, f"{path} differs from the generator: run " \
                                                         "scripts/build_workflows.py"
    # nothing else in the folders: no stale workflow; one small thumbnail per workflow (scripts/build_thumbnails.py)
    assert sorted(p.name for p in WORKFLOWS.iterdir() if p.is_file()) == sorted(
        [f"{n}.json" for n in NAMES] + [f"{n}.jpg" for n in NAMES])
    for n in NAMES:
        assert (WORKFLOWS / f"{n}.jpg").stat().st_size < 64 << 10, f"{n}.jpg: thumbnails stay small"
    assert sorted(p.name for p in API_DIR.iterdir()) == sorted(f"{n}_api.json" for n in NAMES)
    assert gen.main(["--check"]) == 0


def test_generator_refuses_unknown_or_missing_inputs():
    g = gen.Graph("t")
    with pytest.raises(ValueError, match="has no input"):
        g.add(1, "VAEDecode", (0, 0), samples=gen.Out(2, 0), vae=gen.Out(3, 0), strength=1)
    with pytest.raises(ValueError, match="lacks"):
        g.add(2, "MagicPoseSample", (0, 0), seed=1)
    g.add(3, "LoadImage", (0, 0), image="a.png")
    with pytest.raises(ValueError, match="used twice"):
        g.add(3, "LoadImage", (0, 0), image="b.png")


@pytest.mark.parametrize("name", NAMES)
def test_ui_file_is_a_well_formed_frontend_workflow(name):
    ui = load_ui(name)
    assert ui["version"] == 0.4 and isinstance(ui["extra"], dict) and isinstance(ui["groups"], list)
    nodes = {n["id"]: n for n in ui["nodes"]}
    assert len(nodes) == len(ui["nodes"]), "duplicate node ids"
    assert ui["last_node_id"] >= max(nodes) and ui["last_link_id"] >= max(r[0] for r in ui["links"])
    for n in ui["nodes"]:
        for key in ("id", "type", "pos", "size", "flags", "order", "mode", "inputs", "outputs", "properties",
                    "widgets_values"):
            assert key in n, f"node {n['id']} lacks {key}"
        assert len(n["pos"]) == 2 and len(n["size"]) == 2 and n["mode"] == 0
    rows = {r[0]: r for r in ui["links"]}
    assert len(rows) == len(ui["links"]), "duplicate link ids"
    for lid, origin, oslot, target, tslot, ltype in ui["links"]:
        src, dst = nodes[origin], nodes[target]
        assert lid in src["outputs"][oslot]["links"], f"link {lid} not listed on its origin output"
        assert dst["inputs"][tslot]["link"] == lid, f"link {lid} is not on input slot {tslot} of node {target}"
        assert ltype == dst["inputs"][tslot]["type"]                     # the frontend types a link by its input
        assert set(src["outputs"][oslot]["type"].split(",")) & set(ltype.split(","))
        assert src["order"] < dst["order"], "order is not an execution order"
    # every link reference on a slot is a row of `links`, and every row is referenced from both ends
    on_inputs = [i["link"] for n in ui["nodes"] for i in n["inputs"] if i.get("link") is not None]
    on_outputs = [lid for n in ui["nodes"] for o in n["outputs"] for lid in o["links"]]
    assert sorted(on_inputs) == sorted(on_outputs) == sorted(rows)
    # groups hold their nodes and never overlap (moving a group moves whatever lies in its box)
    boxes = [g["bounding"] for g in ui["groups"]]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            overlap = a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]
            assert not overlap, f"groups {a} and {b} overlap"


@pytest.mark.parametrize("name", NAMES)
def test_ui_and_api_twins_describe_the_same_graph(name):
    ui, api = load_ui(name), load_api(name)
    assert ui_to_api(ui, _layout, _display) == api
    # the UI's slot lists are the frontend's: sockets, then one slot per widget, in the schema's order
    for n in ui["nodes"]:
        if n["type"] in VIRTUAL:
            continue
        d = gen.NODE_DEFS[n["type"]]
        sockets, widgets = gen.ordered_slots(d)
        upload = ["upload"] if d.upload else []
        assert [i["name"] for i in n["inputs"]] == [s.name for s in sockets + widgets] + upload
        assert [i["name"] for i in n["inputs"] if "widget" in i] == [s.name for s in widgets] + upload
        assert [o["name"] for o in n["outputs"]] == [o for o, _ in gen.NODE_DEFS[n["type"]].outputs]


def _sampler_title(api: dict) -> str:
    """MagicPose Render Video (video_dance_long) samples and writes the result in one node titled Output."""
    out = titled(api, "Output")
    return "Output" if out and api[out[0]]["class_type"] == "MagicPoseRenderVideo" else "Sampler"


@pytest.mark.parametrize("name", NAMES)
def test_titles_follow_the_client_convention(name):
    api = load_api(name)
    titles = [n["_meta"]["title"] for n in api.values()]
    renamed = [t for t, n in zip(titles, api.values()) if t != gen.NODE_DEFS[n["class_type"]].display_name]
    assert len(renamed) == len(set(renamed)), f"titles must be unique for --set: {renamed}"
    sampler = _sampler_title(api)
    for title in ("Reference", "Output", sampler, "Checkpoint", "MagicPose model", "Negative prompt"):
        assert len(titled(api, title)) == 1, title
    assert api[titled(api, "Reference")[0]]["class_type"] == "LoadImage"
    assert api[titled(api, "Checkpoint")[0]]["class_type"] == "CheckpointLoaderSimple"
    assert api[titled(api, "MagicPose model")[0]]["class_type"] == "MagicPoseLoadModel"
    assert api[titled(api, "Output")[0]]["class_type"] in ("SaveImage", "MagicPoseFramesToVideo",
                                                           "MagicPoseRenderVideo")
    driving = titled(api, "Driving video") + titled(api, "Driving poses")
    assert len(driving) == 1
    assert api[driving[0]]["class_type"] == ("LoadVideo" if titled(api, "Driving video") else "LoadImage")
    # what the client does with them: the files land in the upload inputs, --set reaches the sampler
    wf = mc.fill_workflow(copy.deepcopy(api), {"Reference": "me.png", api[driving[0]]["_meta"]["title"]: "d.mp4"},
                          [f"{sampler}.steps=20", "Output.filename_prefix=007"])
    assert wf[titled(api, "Reference")[0]]["inputs"]["image"] == "me.png"
    assert "d.mp4" in wf[driving[0]]["inputs"].values()
    assert wf[titled(api, sampler)[0]]["inputs"]["steps"] == 20
    assert wf[titled(api, "Output")[0]]["inputs"]["filename_prefix"] == "007"


@pytest.mark.parametrize("name", NAMES)
def test_official_defaults(name):
    api, ui = load_api(name), load_ui(name)
    sampler = api[titled(api, _sampler_title(api))[0]]["inputs"]
    assert (sampler["steps"], sampler["cfg"], sampler["sampler_name"], sampler["scheduler"], sampler["seed"],
            sampler["denoise"]) == (50, 7.0, "ddim", "ddim_uniform", 42, 1.0)
    if api[titled(api, _sampler_title(api))[0]]["class_type"] in ("MagicPoseSample", "MagicPoseRenderVideo"):
        assert sampler["shared_noise"] is True
    for nid in of_type(api, "MagicPoseLoadReference") + of_type(api, "MagicPoseExtractPose"):
        i = api[nid]["inputs"]
        assert (i["width"], i["height"], i["fit"]) == (512, 512, "center_crop"), nid
    assert api[titled(api, "Checkpoint")[0]]["inputs"]["ckpt_name"] == "model_state-110000.sd15.fp16.safetensors"
    assert api[titled(api, "MagicPose model")[0]]["inputs"]["ckpt_name"] == "model_state-110000.pth"
    assert api[titled(api, "MagicPose model")[0]]["inputs"]["download"] is False   # never touches the network
    assert api[titled(api, "Negative prompt")[0]]["inputs"]["text"] == ""
    if name != "stylised_reference":
        assert api[titled(api, "Positive prompt")[0]]["inputs"]["text"] == ""
    else:
        assert api[titled(api, "Prompt")[0]]["inputs"]["text"].strip()        # the style is the point
    # seeds stay at 42 in the UI (control_after_generate "fixed"), uploads keep their button value
    for n in ui["nodes"]:
        if n["type"] in ("MagicPoseSample", "KSampler"):
            assert n["widgets_values"][:2] == [42, "fixed"]
        if n["type"] == "MagicPoseRenderVideo":
            seed = [s.name for s in gen.ordered_slots(gen.NODE_DEFS[n["type"]])[1]].index("seed")
            assert n["widgets_values"][seed:seed + 2] == [42, "fixed"]
        if n["type"] in ("LoadImage", "LoadVideo"):
            assert n["widgets_values"][-1] == "image"


def _source(api: dict, nid: str, name: str) -> tuple[str, int]:
    link = api[nid]["inputs"][name]
    assert isinstance(link, list), f"node {nid} input {name} is not linked"
    return str(link[0]), link[1]


def _chain_to_sampler(api: dict) -> dict[str, str]:
    """{role: node id} along Output <- VAEDecode <- Sampler, with the sampler's reference and checkpoint."""
    out = titled(api, "Output")[0]
    decode, _ = _source(api, out, "images")
    sampler, _ = _source(api, decode, "samples")
    assert api[decode]["class_type"] == "VAEDecode" and sampler == titled(api, "Sampler")[0]
    return {"output": out, "decode": decode, "sampler": sampler}


def test_video_dance_retarget_is_the_issues_graph():
    """driving video -> LoadVideo -> MagicPoseSelectFrames (whole video by default) -> ExtractPose (per-bone
    retargeting to the reference, smoothing on) -> MagicPoseSample -> VAEDecode -> FramesToVideo with the driver's
    fps and audio."""
    api = load_api("video_dance_retarget")
    c = _chain_to_sampler(api)
    assert api[c["sampler"]]["class_type"] == "MagicPoseSample"
    assert api[c["output"]]["class_type"] == "MagicPoseFramesToVideo"
    pose, _ = _source(api, c["sampler"], "poses")
    assert api[pose]["class_type"] == "MagicPoseExtractPose"
    p = api[pose]["inputs"]
    assert p["retarget"] == "per_bone" and p["smoothing"] != "off" and p["strength"] == 1.0
    comps, slot = _source(api, pose, "images")
    assert api[comps]["class_type"] == "MagicPoseSelectFrames" and slot == 0
    assert {k: api[comps]["inputs"][k] for k in ("frame_load_cap", "skip_first_frames", "select_every_nth",
                                                 "force_rate")} == {"frame_load_cap": 0, "skip_first_frames": 0,
                                                                    "select_every_nth": 1, "force_rate": 0.0}
    assert comps == titled(api, "Frames")[0]
    assert _source(api, pose, "fps") == (comps, 2)                   # smoothing runs on the driver's time base
    load, _ = _source(api, comps, "video")
    assert api[load]["class_type"] == "LoadVideo" and load == titled(api, "Driving video")[0]
    ref, _ = _source(api, pose, "reference")
    assert api[ref]["class_type"] == "MagicPoseLoadReference" and _source(api, c["sampler"], "reference")[0] == ref
    assert _source(api, ref, "image")[0] == titled(api, "Reference")[0]
    assert api[ref]["inputs"]["detector"] != "none"                   # reference keypoints for the retargeting
    assert _source(api, c["output"], "fps") == (comps, 2)
    assert _source(api, c["output"], "audio") == (comps, 1)
    assert api[c["output"]]["inputs"]["format"] == "mp4"
    assert _source(api, c["sampler"], "model")[0] == _source(api, c["decode"], "vae")[0] == \
        titled(api, "Checkpoint")[0]


def test_image_pose_retarget_is_reference_plus_pose_photos_to_images():
    api = load_api("image_pose_retarget")
    c = _chain_to_sampler(api)
    assert api[c["output"]]["class_type"] == "SaveImage"
    pose, _ = _source(api, c["sampler"], "poses")
    assert api[pose]["class_type"] == "MagicPoseExtractPose"
    assert api[pose]["inputs"]["smoothing"] == "off"                   # independent photos, not a video
    assert api[pose]["inputs"]["retarget"] == "per_bone"
    assert _source(api, pose, "images")[0] == titled(api, "Driving poses")[0]


def test_face_expression_retarget_drives_the_face_only():
    api = load_api("face_expression_retarget")
    c = _chain_to_sampler(api)
    blend, _ = _source(api, c["sampler"], "poses")
    assert api[blend]["class_type"] == "ImageBlend"
    assert api[blend]["inputs"]["blend_mode"] == "screen" and api[blend]["inputs"]["blend_factor"] == 1.0
    face, _ = _source(api, blend, "image1")
    body, _ = _source(api, blend, "image2")
    f, b = api[face]["inputs"], api[body]["inputs"]
    assert (f["body"], f["hands"], f["face"], f["face_transfer"]) == (False, False, True, True)
    assert f["retarget"] != "none"                                    # expression placed on the reference's face
    assert api[_source(api, face, "images")[0]]["class_type"] == "MagicPoseSelectFrames"
    assert (b["body"], b["hands"], b["face"], b["retarget"]) == (True, True, False, "none")
    assert _source(api, body, "images")[0] == titled(api, "Reference")[0]   # the body kept is the reference's
    assert api[c["output"]]["class_type"] == "MagicPoseFramesToVideo"
    assert api[_source(api, c["output"], "audio")[0]]["class_type"] == "MagicPoseSelectFrames"


def test_stylised_reference_goes_through_apply_and_core_ksampler():
    api = load_api("stylised_reference")
    c = _chain_to_sampler(api)
    assert api[c["sampler"]]["class_type"] == "KSampler"
    apply, _ = _source(api, c["sampler"], "model")
    assert api[apply]["class_type"] == "MagicPoseApply"
    assert [_source(api, c["sampler"], k) for k in ("positive", "negative")] == [(apply, 1), (apply, 2)]
    assert _source(api, apply, "positive")[0] == titled(api, "Prompt")[0]
    assert _source(api, apply, "model")[0] == titled(api, "Checkpoint")[0]
    latent, _ = _source(api, c["sampler"], "latent_image")
    size, _ = _source(api, latent, "batch_size")                      # one latent per target pose
    assert api[size]["class_type"] == "GetImageSize"
    assert _source(api, size, "image") == _source(api, apply, "poses")


def test_ui_workflow_given_to_the_client_is_refused_with_the_api_twin_named():
    with pytest.raises(mc.UsageError, match="workflows/api"):
        mc.load_workflow(WORKFLOWS / "video_dance_retarget.json")
    assert mc.load_workflow(API_DIR / "video_dance_retarget_api.json") == load_api("video_dance_retarget")


def test_notes_name_the_weights_and_the_headless_command():
    for name in NAMES:
        notes = [n for n in load_ui(name)["nodes"] if n["type"] == "MarkdownNote"]
        assert len(notes) == 1
        text = notes[0]["widgets_values"][0]
        assert "model_state-110000.th" in text and "model_state-110000.pth" in text
        assert "`python -m magicpose_core.checkpoint convert` run in the pack" in text
        assert f"workflows/api/{name}_api.json" in text
        json.dumps(text)


# The rules of ComfyUI_frontend 1.47 (missingModelDownload: isModelDownloadable; settingStore: isModelFileName)
DOWNLOAD_HOSTS = ("https://civitai.com/", "https://civitai.red/", "https://huggingface.co/", "http://localhost:")
DOWNLOAD_SUFFIXES = (".safetensors", ".sft", ".ckpt", ".pth", ".pt")
MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft", ".onnx", ".gguf")


@pytest.mark.parametrize("name", NAMES)
def test_model_metadata_lets_the_frontend_flag_and_offer_the_weights(name):
    from magicpose_core.weights import hub

    ui = load_ui(name)
    found = {}
    for node in ui["nodes"]:
        for m in node.get("properties", {}).get("models", []):
            assert set(m) == {"name", "url", "directory"}
            assert m["name"] in node["widgets_values"]     # the frontend keeps only entries naming a widget value
            assert m["name"].lower().endswith(MODEL_SUFFIXES)  # else its missing-models scan skips the widget
            found[node["type"]] = m
    mp, sd15 = found["MagicPoseLoadModel"], found["CheckpointLoaderSimple"]
    assert (mp["name"], mp["directory"], mp["url"]) == (hub.LOCAL_FILENAME, "magicpose", hub.DOWNLOAD_URL)
    assert mp["url"].startswith(DOWNLOAD_HOSTS) and mp["name"].endswith(DOWNLOAD_SUFFIXES)   # offered for download
    assert (sd15["name"], sd15["directory"]) == (hub.SD15_FILENAME, "checkpoints")
    assert not sd15["url"].startswith(DOWNLOAD_HOSTS)   # not hosted anywhere: the dialog shows where to read how
    assert sd15["url"].endswith("#weights")
