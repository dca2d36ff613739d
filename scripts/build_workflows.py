"""Generate the shipped workflows from one Python description of each graph, in both formats:

- ``workflows/<name>.json``: UI format (ComfyUI frontend workflow schema 0.4), shown in the template browser
  and loaded by drag and drop;
- ``workflows/api/<name>_api.json``: API format, for ``POST /prompt`` and the headless client
  (``python -m magicpose_core.client run workflows/api/<name>_api.json ...``).

Both are written from the same ``Graph`` objects, so they cannot drift; ``tests/core/test_workflow_files.py``
checks that the committed files equal this script's output, and ``tests/e2e/test_workflows.py`` checks the node
tables below against a real server's ``/object_info``, loads every UI file in the real frontend (its "Export
(API)" must give the API twin, its save the same UI file) and runs every API workflow.

    .venv/bin/python scripts/build_workflows.py           # (re)write workflows/*.json and workflows/api/*.json
    .venv/bin/python scripts/build_workflows.py --check   # exit 1 if a committed file differs

How the frontend (ComfyUI_frontend 1.47, bundled with ComfyUI 0.30.0) serialises a node, which the UI format
here reproduces: input slots are the node's socket inputs in the server's ``input_order`` (required, then
optional), then one slot per widget input in the same order (``{"widget": {"name": ...}}``; the upload button of
a file loader is a last ``upload`` slot); ``widgets_values`` lists the widget values in that order, with the
extra ``control_after_generate`` value right after a seed that has it, and the extra upload-button value
(``"image"``) last on nodes with ``image_upload`` / ``video_upload``. A link's type is its input's type; ``order``
is LiteGraph's execution order. The API format (``app.graphToPrompt``) has every widget value except those
two extras, a ``[node_id, output_index]`` pair per linked input, and ``_meta.title`` = the node's title (its
display name unless renamed). Notes exist only in the UI format.

Title convention (``magicpose_core/client/workflow.py``): ``Reference`` (LoadImage of the identity photo), ``Driving
video`` (LoadVideo), ``Driving poses`` (LoadImage of target-pose photos), ``Output`` (the node whose files are
the result), plus ``Sampler``, ``Checkpoint``, ``MagicPose model``, ``Positive prompt`` / ``Prompt`` and
``Negative prompt`` for ``--set "Title.input=value"``.

Defaults are the official inference settings (docs/method.md §8): 512x512, centre crop, ddim +
ddim_uniform, 50 steps, cfg 7, seed 42 (fixed), empty prompts, the same noise for every frame.
"""
from __future__ import annotations

import argparse
import json
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # appended, never prepended (our nodes/ must not shadow ComfyUI's)

from magicpose_core.model.constants import (  # noqa: E402  (no torch, no ComfyUI)
    OFFICIAL_CFG,
    OFFICIAL_SAMPLER,
    OFFICIAL_SCHEDULER,
    OFFICIAL_SEED,
    OFFICIAL_SIZE,
    OFFICIAL_STEPS,
)
from magicpose_core.weights import hub  # noqa: E402  (standard library only at import)

WORKFLOWS = ROOT / "workflows"
API_DIR = WORKFLOWS / "api"

SD15_CKPT = "model_state-110000.sd15.fp16.safetensors"   # written by `python -m magicpose_core.checkpoint convert`
MAGICPOSE_CKPT = "model_state-110000.pth"                  # the official .th under a name the frontend knows
# ComfyUI's model metadata (node `properties.models`, read by the frontend's missing-models dialog, which offers a
# download only for huggingface.co/civitai URLs and .safetensors/.sft/.ckpt/.pth/.pt names). The SD1.5 part is
# not hosted anywhere (the converter writes it), so its URL is the README section that says how.
MODELS = {
    MAGICPOSE_CKPT: {"name": MAGICPOSE_CKPT, "url": hub.DOWNLOAD_URL, "directory": "magicpose"},
    SD15_CKPT: {"name": SD15_CKPT, "url": "https://github.com/magicpose-comfyui/magicpose#weights",
                "directory": "checkpoints"},
}
PACK_ID = "magicpose"                                      # pyproject [project] name (registry id)
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
UPLOAD_VALUE = "image"                                     # what the frontend stores for the upload button
CONTROL_VALUE = "fixed"                                    # seed 42 stays 42 (official); "randomize" in the UI
VIRTUAL = ("MarkdownNote", "Note")                         # frontend-only node types


# --- node tables (checked against /object_info by tests/e2e/test_workflows.py) --------------------------

@dataclass(frozen=True)
class Slot:
    """One input of a node type, as the server lists it."""

    name: str
    type: str                      # socket type, or a widget type (WIDGET_TYPES)
    optional: bool = False
    default: Any = None            # the server's default (None: none); graphs give every other value
    control: bool = False          # INT with control_after_generate (an extra UI widget value)

    @property
    def widget(self) -> bool:
        return self.type in WIDGET_TYPES


@dataclass(frozen=True)
class NodeDef:
    display_name: str
    inputs: tuple[Slot, ...]       # required then optional, each in the server's input_order
    outputs: tuple[tuple[str, str], ...] = ()   # (name, type)
    upload: bool = False           # image_upload / video_upload: the frontend adds an upload widget
    cnr_id: str = "comfy-core"


def S(name: str, type: str, default: Any = None, optional: bool = False, control: bool = False) -> Slot:
    return Slot(name, type, optional, default, control)


REF_TYPES = "MAGICPOSE_REFERENCE,LATENT"
# temporal sources on MagicPose Sampler / Apply (nodes/patch/temporal_sources.py): advanced, off by default
_TEMPORAL_SLOTS = (S("temporal_mode", "COMBO", "off", True), S("temporal_strength", "FLOAT", 1.0, True),
                   S("temporal_start", "FLOAT", 0.0, True), S("temporal_end", "FLOAT", 1.0, True))
NODE_DEFS: dict[str, NodeDef] = {
    "CheckpointLoaderSimple": NodeDef("Load Checkpoint", (S("ckpt_name", "COMBO"),),
                                      (("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE"))),
    "CLIPTextEncode": NodeDef("CLIP Text Encode (Prompt)", (S("text", "STRING"), S("clip", "CLIP")),
                              (("CONDITIONING", "CONDITIONING"),)),
    "LoadImage": NodeDef("Load Image", (S("image", "COMBO"),), (("IMAGE", "IMAGE"), ("MASK", "MASK")), upload=True),
    "LoadVideo": NodeDef("Load Video", (S("file", "COMBO"),), (("VIDEO", "VIDEO"),), upload=True),
    "GetVideoComponents": NodeDef("Get Video Components", (S("video", "VIDEO"),),
                                  (("images", "IMAGE"), ("audio", "AUDIO"), ("fps", "FLOAT"), ("bit_depth", "INT"))),
    "VAEDecode": NodeDef("VAE Decode", (S("samples", "LATENT"), S("vae", "VAE")), (("IMAGE", "IMAGE"),)),
    "SaveImage": NodeDef("Save Image", (S("images", "IMAGE"), S("filename_prefix", "STRING", "ComfyUI")),
                         (("images", "IMAGE"),)),
    "ImageBlend": NodeDef("Blend Images", (S("image1", "IMAGE"), S("image2", "IMAGE"),
                                           S("blend_factor", "FLOAT", 0.5), S("blend_mode", "COMBO")),
                          (("IMAGE", "IMAGE"),)),
    "GetImageSize": NodeDef("Get Image Size", (S("image", "IMAGE"),),
                            (("width", "INT"), ("height", "INT"), ("batch_size", "INT"))),
    "EmptyLatentImage": NodeDef("Empty Latent Image", (S("width", "INT", 512), S("height", "INT", 512),
                                                       S("batch_size", "INT", 1)), (("LATENT", "LATENT"),)),
    "KSampler": NodeDef("KSampler", (
        S("model", "MODEL"), S("seed", "INT", 0, control=True), S("steps", "INT", 20), S("cfg", "FLOAT", 8.0),
        S("sampler_name", "COMBO"), S("scheduler", "COMBO"), S("positive", "CONDITIONING"),
        S("negative", "CONDITIONING"), S("latent_image", "LATENT"), S("denoise", "FLOAT", 1.0)),
        (("LATENT", "LATENT"),)),
    "MagicPoseLoadModel": NodeDef("MagicPose Load Model", (
        S("ckpt_name", "COMBO"), S("weight_dtype", "COMBO", "default"),
        S("download", "BOOLEAN", False)), (("MAGICPOSE_MODEL", "MAGICPOSE_MODEL"),), cnr_id=PACK_ID),
    "MagicPoseLoadReference": NodeDef("MagicPose Load Reference", (
        S("image", "IMAGE"), S("vae", "VAE"), S("width", "INT", OFFICIAL_SIZE), S("height", "INT", OFFICIAL_SIZE),
        S("fit", "COMBO", "center_crop"), S("pad", "COMBO", "black"), S("encode", "COMBO", "mode (deterministic)"),
        S("seed", "INT", OFFICIAL_SEED), S("detector", "COMBO", "none"), S("allow_download", "BOOLEAN", False, True)),
        (("reference", "MAGICPOSE_REFERENCE"), ("image", "IMAGE")), cnr_id=PACK_ID),
    "MagicPoseExtractPose": NodeDef("MagicPose Extract Pose", (
        S("detector", "COMBO", "auto"), S("body", "BOOLEAN", True), S("hands", "BOOLEAN", True),
        S("face", "BOOLEAN", True), S("person", "COMBO", "largest"), S("smoothing", "COMBO", "medium"),
        S("fps", "FLOAT", 30.0), S("retarget", "COMBO", "none"), S("strength", "FLOAT", 1.0),
        S("face_transfer", "BOOLEAN", True), S("width", "INT", OFFICIAL_SIZE), S("height", "INT", OFFICIAL_SIZE),
        S("fit", "COMBO", "center_crop"),
        S("images", "IMAGE", optional=True), S("pose_keypoint", "POSE_KEYPOINT", optional=True),
        S("person_index", "INT", 0, True), S("reference", "MAGICPOSE_REFERENCE,IMAGE", optional=True),
        S("render_canvas", "COMBO", "source", True), S("allow_download", "BOOLEAN", False, True),
        S("on_missing", "COMBO", "warn", True), S("coordinates", "COMBO", "auto", True),
        S("output_coordinates", "COMBO", "pixels", True)),
        (("pose_maps", "IMAGE"), ("pose_keypoint", "POSE_KEYPOINT")), cnr_id=PACK_ID),
    "MagicPoseSample": NodeDef("MagicPose Sampler", (
        S("model", "MODEL"), S("magicpose", "MAGICPOSE_MODEL"), S("reference", REF_TYPES), S("poses", "IMAGE"),
        S("positive", "CONDITIONING"), S("negative", "CONDITIONING"), S("seed", "INT", OFFICIAL_SEED, control=True),
        S("steps", "INT", OFFICIAL_STEPS), S("cfg", "FLOAT", OFFICIAL_CFG),
        S("sampler_name", "COMBO", OFFICIAL_SAMPLER), S("scheduler", "COMBO", OFFICIAL_SCHEDULER),
        S("denoise", "FLOAT", 1.0), S("frame_batch", "INT", 4),
        S("shared_noise", "BOOLEAN", True), S("reference_strength", "FLOAT", 1.0, True),
        S("pose_strength", "FLOAT", 1.0, True), S("park_bank_on_cpu", "BOOLEAN", False, True),
        S("autocast", "COMBO", "off", True), S("noise", "NOISE", optional=True),
        *_TEMPORAL_SLOTS, S("anchor_pose", "IMAGE", optional=True)),
        (("LATENT", "LATENT"),), cnr_id=PACK_ID),
    "MagicPoseApply": NodeDef("MagicPose Apply", (
        S("model", "MODEL"), S("magicpose", "MAGICPOSE_MODEL"), S("reference", REF_TYPES), S("poses", "IMAGE"),
        S("positive", "CONDITIONING"), S("negative", "CONDITIONING"), S("reference_strength", "FLOAT", 1.0),
        S("pose_strength", "FLOAT", 1.0), S("reference_start", "FLOAT", 0.0, True),
        S("reference_end", "FLOAT", 1.0, True), S("pose_start", "FLOAT", 0.0, True),
        S("pose_end", "FLOAT", 1.0, True), S("frame_batch", "INT", 0, True), S("autocast", "COMBO", "off", True),
        *_TEMPORAL_SLOTS),
        (("MODEL", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING")), cnr_id=PACK_ID),
    "MagicPoseSelectFrames": NodeDef("MagicPose Select Frames", (
        S("frame_load_cap", "INT", 0), S("skip_first_frames", "INT", 0), S("select_every_nth", "INT", 1),
        S("force_rate", "FLOAT", 0.0), S("video", "VIDEO", optional=True), S("images", "IMAGE", optional=True),
        S("fps", "FLOAT", 30.0, True)),
        (("images", "IMAGE"), ("audio", "AUDIO"), ("fps", "FLOAT"), ("frame_count", "INT")), cnr_id=PACK_ID),
    "MagicPoseFramesToVideo": NodeDef("MagicPose Frames to Video", (
        S("images", "IMAGE"), S("fps", "FLOAT", 24.0), S("format", "COMBO", "mp4"), S("crf", "INT", 19),
        S("filename_prefix", "STRING", "MagicPose/video"), S("save_output", "BOOLEAN", True),
        S("audio", "AUDIO", optional=True), S("reference", "MAGICPOSE_REFERENCE", optional=True),
        S("crop_back", "COMBO", "off", True), S("watermark", "BOOLEAN", True, True)),
        (("video", "VIDEO"),), cnr_id=PACK_ID),
    "MagicPoseRenderVideo": NodeDef("MagicPose Render Video", (
        S("model", "MODEL"), S("magicpose", "MAGICPOSE_MODEL"), S("reference", REF_TYPES),
        S("positive", "CONDITIONING"), S("negative", "CONDITIONING"), S("vae", "VAE"), S("video", "VIDEO"),
        S("frame_load_cap", "INT", 0), S("skip_first_frames", "INT", 0), S("select_every_nth", "INT", 1),
        S("force_rate", "FLOAT", 0.0), S("detector", "COMBO", "auto"), S("body", "BOOLEAN", True),
        S("hands", "BOOLEAN", True), S("face", "BOOLEAN", True), S("person", "COMBO", "largest"),
        S("smoothing", "COMBO", "medium"), S("retarget", "COMBO", "per_bone"), S("strength", "FLOAT", 1.0),
        S("face_transfer", "BOOLEAN", True), S("fit", "COMBO", "center_crop"),
        S("seed", "INT", OFFICIAL_SEED, control=True), S("steps", "INT", OFFICIAL_STEPS),
        S("cfg", "FLOAT", OFFICIAL_CFG), S("sampler_name", "COMBO", OFFICIAL_SAMPLER),
        S("scheduler", "COMBO", OFFICIAL_SCHEDULER), S("denoise", "FLOAT", 1.0), S("frame_batch", "INT", 4),
        S("shared_noise", "BOOLEAN", True), S("window", "INT", 16), S("format", "COMBO", "mp4"),
        S("crf", "INT", 19), S("filename_prefix", "STRING", "MagicPose/video_long"),
        S("save_output", "BOOLEAN", True), S("watermark", "BOOLEAN", True, True),
        S("person_index", "INT", 0, True), S("render_canvas", "COMBO", "source", True),
        S("on_missing", "COMBO", "warn", True), S("allow_download", "BOOLEAN", False, True),
        S("reference_strength", "FLOAT", 1.0, True), S("pose_strength", "FLOAT", 1.0, True),
        S("autocast", "COMBO", "off", True), S("short_side_limit", "INT", 1080, True)),
        (("path", "STRING"), ("video", "VIDEO")), cnr_id=PACK_ID),
}


def ordered_slots(d: NodeDef) -> tuple[list[Slot], list[Slot]]:
    """(socket inputs, widget inputs), each in the order the frontend creates them."""
    return [s for s in d.inputs if not s.widget], [s for s in d.inputs if s.widget]


# --- graph description ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Out:
    """Output `slot` of node `node` (a link source)."""

    node: int
    slot: int


@dataclass
class Node:
    id: int
    type: str
    pos: tuple[int, int]
    title: str | None = None
    values: dict[str, Any] = field(default_factory=dict)   # input name -> literal or Out
    size: tuple[int, int] | None = None
    text: str = ""                                          # MarkdownNote only
    color: str | None = None

    def out(self, name: str) -> Out:
        names = [n for n, _ in NODE_DEFS[self.type].outputs]
        return Out(self.id, names.index(name))


@dataclass
class Group:
    title: str
    members: tuple[int, ...]
    color: str


@dataclass
class Graph:
    name: str
    nodes: dict[int, Node] = field(default_factory=dict)
    groups: list[Group] = field(default_factory=list)

    def add(self, id: int, type: str, pos: tuple[int, int], title: str | None = None, size=None,
            **values: Any) -> Node:
        if id in self.nodes:
            raise ValueError(f"{self.name}: node id {id} used twice")
        if type not in VIRTUAL:
            d = NODE_DEFS[type]
            known = {s.name for s in d.inputs}
            unknown = set(values) - known
            if unknown:
                raise ValueError(f"{self.name}: {type} has no input(s) {sorted(unknown)}")
            missing = [s.name for s in d.inputs if s.name not in values and not s.optional
                       and (not s.widget or s.default is None)]
            if missing:
                raise ValueError(f"{self.name}: node {id} ({type}) lacks {missing}")
        node = Node(id, type, pos, title, dict(values), size)
        self.nodes[id] = node
        return node

    def note(self, id: int, pos: tuple[int, int], size: tuple[int, int], text: str) -> Node:
        node = Node(id, "MarkdownNote", pos, "About this workflow", size=size, text=text, color="#432")
        self.nodes[id] = node
        return node

    def group(self, title: str, members: tuple[int, ...], color: str) -> None:
        self.groups.append(Group(title, members, color))

    # --- derived views --------------------------------------------------------------------------------
    def value(self, node: Node, slot: Slot) -> Any:
        return node.values.get(slot.name, slot.default)

    def links(self) -> list[tuple[int, Out, int, str]]:
        """(link id, source, target node id, input name), numbered in target-node order, then input order."""
        out, n = [], 0
        for nid in sorted(self.nodes):
            node = self.nodes[nid]
            if node.type in VIRTUAL:
                continue
            for slot in NODE_DEFS[node.type].inputs:
                v = node.values.get(slot.name)
                if isinstance(v, Out):
                    n += 1
                    out.append((n, v, nid, slot.name))
        return out

    def execution_order(self) -> list[int]:
        """The frontend's `order` field (LiteGraph `computeExecutionOrder`): nodes without inputs by id, then a
        first-in first-out walk that queues a node once all its input links are done."""
        links = self.links()
        pending = {nid: 0 for nid in self.nodes}
        for _, _, target, _ in links:
            pending[target] += 1
        queue = [nid for nid in sorted(self.nodes) if pending[nid] == 0]
        order: list[int] = []
        while queue:
            nid = queue.pop(0)
            order.append(nid)
            for _, src, target, _ in sorted(links, key=lambda r: (r[1].slot, r[0])):
                if src.node == nid:
                    pending[target] -= 1
                    if pending[target] == 0:
                        queue.append(target)
        if len(order) != len(self.nodes):
            raise ValueError(f"{self.name}: the graph has a cycle")
        return order


# --- formats ----------------------------------------------------------------------------------------------

def node_size(node: Node) -> list[int]:
    if node.size is not None:
        return list(node.size)
    d = NODE_DEFS[node.type]
    sockets, widgets = ordered_slots(d)
    rows = max(len(sockets), len(d.outputs))
    extra = sum(1 for s in widgets if s.control) + (1 if d.upload else 0)
    return [340, 46 + 22 * rows + 26 * (len(widgets) + extra)]


def api_format(g: Graph) -> dict:
    """The API-format prompt (what ComfyUI's "Export (API)" writes)."""
    api = {}
    for nid in sorted(g.nodes):
        node = g.nodes[nid]
        if node.type in VIRTUAL:
            continue
        d = NODE_DEFS[node.type]
        inputs = {}
        for slot in d.inputs:
            v = g.value(node, slot)
            if isinstance(v, Out):
                inputs[slot.name] = [str(v.node), v.slot]
            elif slot.widget:
                inputs[slot.name] = v
        api[str(nid)] = {"inputs": inputs, "class_type": node.type,
                         "_meta": {"title": node.title or d.display_name}}
    return api


def ui_format(g: Graph) -> dict:
    """The UI-format workflow (frontend schema 0.4)."""
    links = g.links()
    link_in = {(target, name): lid for lid, _, target, name in links}
    link_out: dict[tuple[int, int], list[int]] = {}
    for lid, src, _, _ in links:
        link_out.setdefault((src.node, src.slot), []).append(lid)
    order = {nid: i for i, nid in enumerate(g.execution_order())}
    nodes, slot_index = [], {}
    for nid in sorted(g.nodes):
        node = g.nodes[nid]
        entry: dict[str, Any] = {"id": nid, "type": node.type, "pos": list(node.pos)}
        if node.type in VIRTUAL:
            entry.update({"size": list(node.size), "flags": {}, "order": order[nid], "mode": 0, "inputs": [],
                          "outputs": [], "title": node.title, "properties": {}, "widgets_values": [node.text],
                          "color": node.color, "bgcolor": "#653"})
            nodes.append(entry)
            continue
        d = NODE_DEFS[node.type]
        sockets, widgets = ordered_slots(d)
        inputs = []
        for slot in sockets + widgets:
            item: dict[str, Any] = {"name": slot.name, "type": slot.type}
            if slot.optional:
                item["shape"] = 7                         # LiteGraph RenderShape.HollowCircle
            if slot.widget:
                item["widget"] = {"name": slot.name}
            item["link"] = link_in.get((nid, slot.name))
            slot_index[(nid, slot.name)] = len(inputs)
            inputs.append(item)
        if d.upload:
            inputs.append({"name": "upload", "type": "IMAGEUPLOAD", "widget": {"name": "upload"}, "link": None})
        outputs = [{"name": name, "type": type, "links": link_out.get((nid, i), [])}
                   for i, (name, type) in enumerate(d.outputs)]
        values = []
        for slot in widgets:
            v = g.value(node, slot)
            values.append(slot.default if isinstance(v, Out) else v)   # a linked widget keeps an unused value
            if slot.control:
                values.append(CONTROL_VALUE)
        if d.upload:
            values.append(UPLOAD_VALUE)
        entry.update({"size": node_size(node), "flags": {}, "order": order[nid], "mode": 0, "inputs": inputs,
                      "outputs": outputs})
        if node.title:
            entry["title"] = node.title
        entry["properties"] = {"Node name for S&R": node.type, "cnr_id": d.cnr_id}
        if models := [MODELS[v] for v in values if isinstance(v, str) and v in MODELS]:
            entry["properties"]["models"] = models
        entry["widgets_values"] = values
        if node.color:
            entry["color"] = node.color
        nodes.append(entry)
    link_rows = []
    for lid, src, target, name in links:
        tnode = g.nodes[target]
        slot = next(s for s in NODE_DEFS[tnode.type].inputs if s.name == name)
        link_rows.append([lid, src.node, src.slot, target, slot_index[(target, name)], slot.type])
    groups = []
    for i, grp in enumerate(g.groups, 1):
        boxes = [(g.nodes[m].pos, node_size(g.nodes[m]) if g.nodes[m].type not in VIRTUAL else g.nodes[m].size)
                 for m in grp.members]
        x0 = min(p[0] for p, _ in boxes) - 20
        y0 = min(p[1] for p, _ in boxes) - 60
        x1 = max(p[0] + s[0] for p, s in boxes) + 20
        y1 = max(p[1] + s[1] for p, s in boxes) + 20
        groups.append({"id": i, "title": grp.title, "bounding": [x0, y0, x1 - x0, y1 - y0], "color": grp.color,
                       "font_size": 24, "flags": {}})
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"magicpose/workflows/{g.name}")),
        "revision": 0,
        "last_node_id": max(g.nodes),
        "last_link_id": len(links),
        "nodes": nodes,
        "links": link_rows,
        "groups": groups,
        "config": {},
        "extra": {"ds": {"scale": 0.75, "offset": [60, 120]}},
        "version": 0.4,
    }


# --- the four graphs --------------------------------------------------------------------------------------
# Layout: models top left, inputs down the left edge, MagicPose in the middle, the result on the right; groups
# never overlap (moving a group in the UI moves the nodes inside its box).

C0, C1, C2, C3, C4, C5 = 0, 400, 800, 1200, 1600, 2000   # column x positions
ROW = 420                                                  # y of the main row, under the models
BLUE, GREEN, PURPLE, ORANGE = "#335", "#3f789e", "#a1309b", "#b58b2a"


def _models(g: Graph, prompt: str = "", prompt_title: str = "Positive prompt") -> None:
    """Checkpoint (1), MagicPose model (2), positive (3) and negative (4) prompts; the note (20) beside them."""
    g.add(1, "CheckpointLoaderSimple", (C0, 0), "Checkpoint", ckpt_name=SD15_CKPT)
    g.add(2, "MagicPoseLoadModel", (C0, 140), "MagicPose model", ckpt_name=MAGICPOSE_CKPT)
    g.add(3, "CLIPTextEncode", (C1, 0), prompt_title, size=(340, 120), text=prompt, clip=Out(1, 1))
    g.add(4, "CLIPTextEncode", (C1, 160), "Negative prompt", size=(340, 120), text="", clip=Out(1, 1))
    g.group("Models (official: the SD1.5 bundled with MagicPose)", (1, 2, 3, 4), BLUE)
    g.note(20, (C2, -40), (760, 340), NOTES[g.name])


def _reference(g: Graph) -> None:
    """Reference photo (5) and its preparation (6)."""
    g.add(5, "LoadImage", (C0, ROW), "Reference", size=(340, 360), image="reference.png")
    g.add(6, "MagicPoseLoadReference", (C1, ROW), image=Out(5, 0), vae=Out(1, 2), detector="auto")


def _driving_video(g: Graph, file: str) -> None:
    """Driving video (7) and the frames used, with their sound and frame rate (8: cap/skip/nth/force_rate; the
    client's `--set "Frames.skip_first_frames=S"` + `"Frames.frame_load_cap=N"` renders a range)."""
    g.add(7, "LoadVideo", (C0, ROW + 420), "Driving video", size=(340, 400), file=file)
    g.add(8, "MagicPoseSelectFrames", (C1, ROW + 420), "Frames", video=Out(7, 0))


def _driving_poses(g: Graph) -> None:
    g.add(7, "LoadImage", (C0, ROW + 420), "Driving poses", size=(340, 360), image="driving_poses.png")


def _result(g: Graph, x: int, output_type: str, title: str, **output: Any) -> None:
    """VAE Decode (11) of the sampler (10) and the Output node (12)."""
    g.add(11, "VAEDecode", (x, ROW), samples=Out(10, 0), vae=Out(1, 2))
    g.add(12, output_type, (x, ROW + 130), "Output", size=(420, 560), images=Out(11, 0), **output)
    g.group(title, (11, 12), ORANGE)


def _sampler(g: Graph, poses: Out) -> None:
    g.add(10, "MagicPoseSample", (C3, ROW), "Sampler", model=Out(1, 0), magicpose=Out(2, 0), reference=Out(6, 0),
          poses=poses, positive=Out(3, 0), negative=Out(4, 0))


def video_dance_retarget() -> Graph:
    g = Graph("video_dance_retarget")
    _models(g)
    _reference(g)
    _driving_video(g, "driving.mp4")
    g.add(9, "MagicPoseExtractPose", (C2, ROW), "Driving pose", images=Out(8, 0), fps=Out(8, 2),
          reference=Out(6, 0), retarget="per_bone", smoothing="medium")
    _sampler(g, Out(9, 0))
    _result(g, C4, "MagicPoseFramesToVideo", "Result: the video, with the driver's frame rate and sound",
            fps=Out(8, 2), audio=Out(8, 1), reference=Out(6, 0), filename_prefix="MagicPose/video_dance_retarget")
    g.group("Inputs", (5, 7), GREEN)
    g.group("MagicPose: pose per frame, retargeted to the reference; one frame per pose", (6, 8, 9, 10), PURPLE)
    return g


def video_dance_long() -> Graph:
    g = Graph("video_dance_long")
    _models(g)
    _reference(g)
    g.add(7, "LoadVideo", (C0, ROW + 420), "Driving video", size=(340, 400), file="driving.mp4")
    g.add(12, "MagicPoseRenderVideo", (C2, ROW), "Output", size=(440, 1100), model=Out(1, 0), magicpose=Out(2, 0),
          reference=Out(6, 0), positive=Out(3, 0), negative=Out(4, 0), vae=Out(1, 2), video=Out(7, 0),
          seed=OFFICIAL_SEED, steps=OFFICIAL_STEPS, cfg=OFFICIAL_CFG, sampler_name=OFFICIAL_SAMPLER,
          scheduler=OFFICIAL_SCHEDULER, filename_prefix="MagicPose/video_dance_long")
    g.group("Inputs", (5, 7), GREEN)
    g.group("MagicPose: the whole video, window by window (flat memory); resumes after Cancel", (6, 12), PURPLE)
    return g


def image_pose_retarget() -> Graph:
    g = Graph("image_pose_retarget")
    _models(g)
    _reference(g)
    _driving_poses(g)
    g.add(9, "MagicPoseExtractPose", (C2, ROW), "Target poses", images=Out(7, 0), reference=Out(6, 0),
          retarget="per_bone", smoothing="off")
    _sampler(g, Out(9, 0))
    _result(g, C4, "SaveImage", "Result: one image per target pose", filename_prefix="MagicPose/image_pose_retarget")
    g.group("Inputs", (5, 7), GREEN)
    g.group("MagicPose: each target pose, retargeted to the reference", (6, 9, 10), PURPLE)
    return g


def face_expression_retarget() -> Graph:
    g = Graph("face_expression_retarget")
    _models(g)
    _reference(g)
    _driving_video(g, "face_driving.mp4")
    g.add(13, "MagicPoseExtractPose", (C2, ROW), "Body (reference)", images=Out(5, 0), body=True, hands=True,
          face=False, retarget="none", smoothing="off")
    g.add(9, "MagicPoseExtractPose", (C2, ROW + 600), "Face (driving)", images=Out(8, 0), fps=Out(8, 2),
          reference=Out(6, 0), body=False, hands=False, face=True, retarget="per_bone", face_transfer=True,
          smoothing="medium")
    g.add(14, "ImageBlend", (C3, ROW + 600), "Face on body", image1=Out(9, 0), image2=Out(13, 0),
          blend_factor=1.0, blend_mode="screen")
    _sampler(g, Out(14, 0))
    _result(g, C4, "MagicPoseFramesToVideo", "Result: the video, with the driver's frame rate and sound",
            fps=Out(8, 2), audio=Out(8, 1), reference=Out(6, 0),
            filename_prefix="MagicPose/face_expression_retarget")
    g.group("Inputs", (5, 7), GREEN)
    g.group("MagicPose: the reference's own body + the driver's expression on the reference's face",
            (6, 8, 9, 10, 13, 14), PURPLE)
    return g


def stylised_reference() -> Graph:
    g = Graph("stylised_reference")
    _models(g, prompt=STYLE_PROMPT, prompt_title="Prompt")
    _reference(g)
    _driving_poses(g)
    g.add(9, "MagicPoseExtractPose", (C2, ROW), "Target poses", images=Out(7, 0), reference=Out(6, 0),
          retarget="per_bone", smoothing="off")
    g.add(15, "MagicPoseApply", (C3, ROW), model=Out(1, 0), magicpose=Out(2, 0), reference=Out(6, 0),
          poses=Out(9, 0), positive=Out(3, 0), negative=Out(4, 0))
    g.add(16, "GetImageSize", (C2, ROW + 600), image=Out(9, 0))
    g.add(17, "EmptyLatentImage", (C3, ROW + 400), width=Out(16, 0), height=Out(16, 1), batch_size=Out(16, 2))
    g.add(10, "KSampler", (C4, ROW), "Sampler", model=Out(15, 0), positive=Out(15, 1), negative=Out(15, 2),
          latent_image=Out(17, 0), seed=OFFICIAL_SEED, steps=OFFICIAL_STEPS, cfg=OFFICIAL_CFG,
          sampler_name=OFFICIAL_SAMPLER, scheduler=OFFICIAL_SCHEDULER)
    _result(g, C5, "SaveImage", "Result: one image per target pose", filename_prefix="MagicPose/stylised_reference")
    g.group("Inputs", (5, 7), GREEN)
    g.group("MagicPose as a MODEL patch: any SD1.5 checkpoint, core KSampler", (6, 9, 15, 16, 17, 10), PURPLE)
    return g


STYLE_PROMPT = "an oil painting, impressionist brush strokes, warm colours"
_WEIGHTS = (f"**Weights**: `{MAGICPOSE_CKPT}` in `models/magicpose/` (MagicPose model: the official "
            "`model_state-110000.th` from Hugging Face Boese0601/MagicDance, saved under this name; the "
            f"missing-models dialog offers it) and `{SD15_CKPT}` in `models/checkpoints/` (Checkpoint: the SD1.5 "
            "bundled in the same file), written by `python -m magicpose_core.checkpoint convert` run in the pack's "
            "folder (ComfyUI/custom_nodes/...) with the Python that runs ComfyUI (see the README).")
_HEADLESS = ("**Headless**: `python -m magicpose_core.client run workflows/api/{name}_api.json {args} --out {out}` "
             "fills the nodes titled *Reference*, *Driving video* / *Driving poses* and downloads *Output*; "
             "`--set \"Sampler.steps=20\"` changes any input.")
NOTES = {
    "video_dance_retarget": (
        "## MagicPose: video dance retarget\n\n"
        "The person of the **Reference** photo performs the motion of the **Driving video**. Extract Pose detects "
        "the dancer in every frame, smooths the track and retargets it bone by bone to the reference's body "
        "proportions; the sampler renders one frame per pose; Frames to Video writes an mp4 with the driving "
        "video's frame rate and sound.\n\n"
        "**Frames** chooses the driving frames (frame_load_cap, skip_first_frames, select_every_nth, force_rate, as "
        "in VideoHelperSuite); fps and sound follow. Try a few frames first, e.g. frame_load_cap 16.\n\n"
        f"Official settings: {OFFICIAL_SIZE}x{OFFICIAL_SIZE}, centre crop, {OFFICIAL_SAMPLER} / {OFFICIAL_SCHEDULER}, "
        f"{OFFICIAL_STEPS} steps, cfg {OFFICIAL_CFG:g}, seed {OFFICIAL_SEED}, empty prompts, "
        "the same noise for every frame. Fewer steps (20-30) are usually enough.\n\n"
        + _WEIGHTS + "\n\n"
        + _HEADLESS.format(name="video_dance_retarget", args="--reference ref.png --driving dance.mp4",
                           out="out.mp4")),
    "video_dance_long": (
        "## MagicPose: long video dance (flat memory)\n\n"
        "The same job as *video_dance_retarget*, for clips of any length: **MagicPose Render Video** reads the "
        "**Driving video** from its file, finds the dancer's pose in every frame (smoothed and retargeted over the "
        "whole clip), then renders `window` frames at a time (pose maps, sampling, VAE decode) and keeps each "
        "finished window on disk as a lossless part; the parts become one video with the driver's frame rate and "
        "sound. Memory follows the window, not the clip, and the frames are the same as the node-by-node "
        "workflow's. **Cancel** keeps the finished windows: queue it again with the same settings and only the "
        "missing windows are rendered.\n\n"
        "Use *video_dance_retarget* to look at the pose maps and frames of a short clip node by node; use this "
        "one for whole songs. frame_load_cap / skip_first_frames / select_every_nth / force_rate choose the "
        "frames as in Select Frames.\n\n"
        + _WEIGHTS + "\n\n"
        + _HEADLESS.format(name="video_dance_long", args="--reference ref.png --driving dance.mp4", out="out.mp4")
        .replace("`--set \"Sampler.steps=20\"`", "`--set \"Output.steps=20\"`")),
    "image_pose_retarget": (
        "## MagicPose: image pose retarget\n\n"
        "The person of the **Reference** photo is drawn in each target pose. **Driving poses** is a photo of "
        "someone in the target pose, or an animated PNG / GIF with one pose per frame (Load Image reads every "
        "frame as a batch); Extract Pose detects each pose (no smoothing: the photos are independent) and "
        "retargets it to the reference's proportions. To use ready-made pose maps instead, connect an IMAGE "
        "batch of openpose_full maps to the sampler's `poses`. One image per pose is saved.\n\n"
        + _WEIGHTS + "\n\n"
        + _HEADLESS.format(name="image_pose_retarget", args="--reference ref.png --poses poses.png",
                           out="out/")),
    "face_expression_retarget": (
        "## MagicPose: face expression retarget\n\n"
        "Only the face is driven: the **Driving video** is a talking face. *Face (driving)* draws the driver's "
        "expression (eyes, brows, mouth) on the reference's own face shape (face transfer, per-bone retarget); "
        "*Body (reference)* draws the reference's body and hands as they are in the photo; *Face on body* "
        "combines the two maps (screen blend of black-background maps), so the body stays still while the "
        "expression changes. The video keeps the driver's frame rate and sound.\n\n"
        + _WEIGHTS + "\n\n"
        + _HEADLESS.format(name="face_expression_retarget", args="--reference ref.png --driving face.mp4",
                           out="out.mp4")),
    "stylised_reference": (
        "## MagicPose: stylised reference (composability)\n\n"
        "MagicPose Apply patches any SD1.5 **Checkpoint** (pick your own fine-tune here) with the appearance "
        "bank and puts the pose ControlNet on the positive conditioning; core **KSampler** samples it with the "
        "text **Prompt** (a style). Get Image Size makes one latent per target pose. Note that KSampler draws "
        "different noise per latent (MagicPose Sampler shares it, as the official code).\n\n"
        + _WEIGHTS + "\n\n"
        + _HEADLESS.format(name="stylised_reference", args="--reference ref.png --poses poses.png", out="out/")),
}

GRAPHS = (video_dance_retarget, video_dance_long, image_pose_retarget, face_expression_retarget, stylised_reference)


def dump(data: dict) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def render_all() -> dict[Path, str]:
    """{path: file text} for every workflow file."""
    files = {}
    for build in GRAPHS:
        g = build()
        files[WORKFLOWS / f"{g.name}.json"] = dump(ui_format(g))
        files[API_DIR / f"{g.name}_api.json"] = dump(api_format(g))
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write workflows/*.json (UI) and workflows/api/*_api.json (API).")
    parser.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 on a difference")
    args = parser.parse_args(argv)
    files = render_all()
    stale = [p for p, text in files.items() if not p.is_file() or p.read_text(encoding="utf-8") != text]
    if args.check:
        for p in stale:
            print(f"out of date: {p.relative_to(ROOT)} (run scripts/build_workflows.py)", file=sys.stderr)
        return 1 if stale else 0
    for p in stale:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(files[p], encoding="utf-8")
        print(f"wrote {p.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
