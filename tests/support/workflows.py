"""Helpers for the workflow tests: load the generator and the sample-input script, read the shipped files,
convert a UI workflow to the API format the way the ComfyUI frontend does, and validate an API workflow
against a server's `/object_info`.

The UI -> API conversion follows ComfyUI_frontend 1.47 (`app.graphToPrompt`): virtual nodes (notes) are
dropped; each widget (except the `control_after_generate` and upload-button extras) gives its value from
`widgets_values` in widget order; a linked input (socket or widget) gives `[origin id as str, origin slot]`;
`_meta.title` is the node's title, else the node type's display name.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / "workflows"
API_DIR = WORKFLOWS / "api"
NAMES = ("video_dance_retarget", "video_dance_long", "image_pose_retarget", "face_expression_retarget",
         "stylised_reference")
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
VIRTUAL = {"MarkdownNote", "Note"}


def load_script(name: str) -> ModuleType:
    """A module of scripts/ by file name (scripts/ is not a package)."""
    key = f"magicpose_scripts_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, ROOT / "scripts" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[key] = mod
        spec.loader.exec_module(mod)
    return sys.modules[key]


def ui_path(name: str) -> Path:
    return WORKFLOWS / f"{name}.json"


def api_path(name: str) -> Path:
    return API_DIR / f"{name}_api.json"


def load_ui(name: str) -> dict:
    return json.loads(ui_path(name).read_text())


def load_api(name: str) -> dict:
    return json.loads(api_path(name).read_text())


# --- the frontend's view of a node type, from /object_info -------------------------------------------------

def is_widget(spec: list) -> bool:
    t = spec[0]
    return isinstance(t, list) or t in WIDGET_TYPES


def ordered_inputs(info: dict) -> list[tuple[str, list, bool]]:
    """(name, spec, optional) of a node type in the frontend's order (`getOrderedInputSpecs`): required then
    optional, each by `input_order`, then any input not listed there."""
    inputs = info.get("input") or {}
    order = info.get("input_order") or {}
    out, seen = [], set()
    for part in ("required", "optional"):
        specs = inputs.get(part) or {}
        for name in order.get(part, list(specs)):
            if name in specs:
                out.append((name, specs[name], part == "optional"))
                seen.add(name)
        for name, spec in specs.items():
            if name not in seen:
                out.append((name, spec, part == "optional"))
                seen.add(name)
    return out


def frontend_widgets(info: dict) -> tuple[list[str], list[str], set[str], bool]:
    """(socket input names, widget input names, widgets with control_after_generate, has an upload button)."""
    sockets, widgets, control, upload = [], [], set(), False
    for name, spec, _ in ordered_inputs(info):
        opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
        if is_widget(spec) and not opts.get("forceInput"):
            widgets.append(name)
            if opts.get("control_after_generate"):
                control.add(name)
            if opts.get("image_upload") or opts.get("video_upload"):
                upload = True
        else:
            sockets.append(name)
    return sockets, widgets, control, upload


def ui_to_api(ui: dict, widget_layout: Callable[[str], tuple[list[str], set[str], bool]],
              display_name: Callable[[str], str]) -> dict:
    """The API format the frontend exports for a UI workflow. `widget_layout(type)` gives (widget names in
    order, names with control_after_generate, has upload button)."""
    links = {row[0]: row for row in ui["links"]}
    api = {}
    for node in ui["nodes"]:
        if node["type"] in VIRTUAL or node.get("mode", 0) in (2, 4):    # notes; muted / bypassed
            continue
        names, control, upload = widget_layout(node["type"])
        values = list(node.get("widgets_values") or [])
        expected = len(names) + len(control) + (1 if upload else 0)
        if len(values) != expected:
            raise AssertionError(f"node {node['id']} ({node['type']}): {len(values)} widgets_values, the frontend "
                                 f"makes {expected} widgets ({names}, control {sorted(control)}, upload {upload})")
        inputs: dict[str, Any] = {}
        it = iter(values)
        for name in names:
            inputs[name] = next(it)
            if name in control:
                next(it)                                   # control_after_generate: UI only
        for slot in node.get("inputs") or []:
            if slot.get("link") is not None:
                row = links[slot["link"]]
                inputs[slot["name"]] = [str(row[1]), row[2]]
        api[str(node["id"])] = {"inputs": inputs, "class_type": node["type"],
                                "_meta": {"title": node.get("title") or display_name(node["type"])}}
    return api


# --- validation against /object_info -----------------------------------------------------------------------

def accepted_types(spec: list) -> set[str]:
    t = spec[0]
    if isinstance(t, list):
        return {"COMBO"}
    return set(str(t).split(","))


def validate_api(api: dict, object_info: dict, file_inputs: set[str] = frozenset()) -> list[str]:
    """Every problem of an API workflow against the server's node schemas: unknown node types, unknown
    inputs, missing required inputs, links to missing nodes or output slots, link type mismatches, values
    outside a combo's options or a number's range. `file_inputs` ("Title.input") are combos of file names the
    server may not have yet (filled in before running), so their values are not checked."""
    problems = []
    for nid, node in api.items():
        ct = node.get("class_type")
        label = f"node {nid} ({ct}, {node.get('_meta', {}).get('title')!r})"
        info = object_info.get(ct)
        if info is None:
            problems.append(f"{label}: node type not installed")
            continue
        specs = {name: (spec, opt) for name, spec, opt in ordered_inputs(info)}
        for name in node["inputs"]:
            if name not in specs:
                problems.append(f"{label}: unknown input {name!r}")
        for name, (spec, optional) in specs.items():
            if not optional and name not in node["inputs"]:
                problems.append(f"{label}: required input {name!r} missing")
        for name, value in node["inputs"].items():
            if name not in specs:
                continue
            spec, _ = specs[name]
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if isinstance(value, list):                      # a link
                if len(value) != 2 or str(value[0]) not in api:
                    problems.append(f"{label}: input {name!r} links to a missing node {value!r}")
                    continue
                src = api[str(value[0])]
                src_info = object_info.get(src["class_type"])
                if src_info is None:
                    continue
                outputs = src_info.get("output") or []
                if not isinstance(value[1], int) or not 0 <= value[1] < len(outputs):
                    problems.append(f"{label}: input {name!r} links to output {value[1]} of {src['class_type']}, "
                                    f"which has {len(outputs)}")
                    continue
                out_type = outputs[value[1]]
                want = accepted_types(spec)
                if "*" not in want and out_type != "*" and out_type not in want:
                    problems.append(f"{label}: input {name!r} wants {sorted(want)}, linked to {out_type}")
                continue
            title = node.get("_meta", {}).get("title")
            if f"{title}.{name}" in file_inputs:
                continue
            t = spec[0]
            options = t if isinstance(t, list) else opts.get("options") if t == "COMBO" else None
            if options is not None and value not in options:
                problems.append(f"{label}: {name}={value!r} is not one of the options")
            if t in ("INT", "FLOAT"):
                if not isinstance(value, (int, float)) or isinstance(value, bool):
                    problems.append(f"{label}: {name}={value!r} is not a number")
                elif ("min" in opts and value < opts["min"]) or ("max" in opts and value > opts["max"]):
                    problems.append(f"{label}: {name}={value!r} outside [{opts.get('min')}, {opts.get('max')}]")
                elif t == "INT" and not isinstance(value, int):
                    problems.append(f"{label}: {name}={value!r} is not an integer")
            if t == "BOOLEAN" and not isinstance(value, bool):
                problems.append(f"{label}: {name}={value!r} is not a boolean")
            if t == "STRING" and not isinstance(value, str):
                problems.append(f"{label}: {name}={value!r} is not a string")
    return problems


def titled(api: dict, title: str) -> list[str]:
    return [nid for nid, n in api.items() if n.get("_meta", {}).get("title") == title]


def of_type(api: dict, class_type: str) -> list[str]:
    return [nid for nid, n in api.items() if n["class_type"] == class_type]
