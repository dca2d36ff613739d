"""Editing an API-format workflow by node title, without a server: load it, find nodes by id or exact title, fill
uploaded file names into the loaders, apply `--set NODE.INPUT=VALUE` assignments.

The title convention (`cli` lists it for users): the nodes titled `Reference`, `Driving video`, `Driving poses` (or
`Poses`) take the input files, the node titled `Output` gives the files that are downloaded.
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .errors import UsageError

# The title convention.
REFERENCE_TITLE = "Reference"
DRIVING_VIDEO_TITLE = "Driving video"
POSES_TITLES = ("Driving poses", "Poses")
OUTPUT_TITLE = "Output"
FILE_INPUTS = ("image", "file", "video")     # upload-widget input names, in the order tried


def load_workflow(source: str | os.PathLike | Mapping) -> dict:
    """An API-format workflow from a path or a mapping (deep-copied). UI-format files are refused with a hint."""
    if isinstance(source, Mapping):
        wf = copy.deepcopy(dict(source))
        where = "the workflow"
    else:
        where = str(source)
        try:
            wf = json.loads(Path(source).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UsageError(f"workflow file not found: {source}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UsageError(f"cannot read the workflow {source}: {e}") from None
    if isinstance(wf, dict) and isinstance(wf.get("nodes"), list) and "links" in wf:
        raise UsageError(f"{where} is a UI-format workflow; the client needs the API format: in ComfyUI use "
                         "Workflow > Export (API), or take the twin under workflows/api/")
    if isinstance(wf, dict) and isinstance(wf.get("prompt"), dict) and "class_type" not in wf.get("prompt", {}):
        wf = wf["prompt"]                                  # a saved POST /prompt body
    if not isinstance(wf, dict) or not wf:
        raise UsageError(f"{where} is not an API-format workflow (expected a JSON object of nodes)")
    for nid, node in wf.items():
        if not isinstance(node, dict) or not isinstance(node.get("inputs", {}), dict):
            raise UsageError(f"{where}: node {nid} is not an API-format node ({{'class_type', 'inputs'}})")
        node.setdefault("inputs", {})
    return wf


def node_title(workflow: Mapping, node_id: str) -> str | None:
    node = workflow.get(str(node_id))
    meta = node.get("_meta") if isinstance(node, Mapping) else None
    return meta.get("title") if isinstance(meta, Mapping) else None


def node_label(workflow: Mapping | None, node_id: Any, class_type: str | None = None) -> str:
    """`node 12 "Sampler" (MagicPoseSample)`: how every message names a node."""
    node = workflow.get(str(node_id)) if workflow else None
    if isinstance(node, Mapping):
        class_type = node.get("class_type") or class_type
    title = node_title(workflow, node_id) if workflow else None
    text = f"node {node_id}"
    if title:
        text += f' "{title}"'
    return text + (f" ({class_type})" if class_type else "")


def titles_present(workflow: Mapping) -> str:
    names = [f"'{t}'" for t in (node_title(workflow, n) for n in workflow) if t]
    return ", ".join(dict.fromkeys(names)) or "(no node has a title)"


def find_nodes(workflow: Mapping, ref: str) -> list[str]:
    """Node ids whose id or exact `_meta.title` is `ref`."""
    if ref in workflow:
        return [ref]
    return [n for n in workflow if node_title(workflow, n) == ref]


def resolve_node(workflow: Mapping, ref: str, purpose: str) -> str:
    """The one node named `ref` (id or title); UsageError naming the titles present otherwise."""
    ids = find_nodes(workflow, ref)
    if not ids:
        raise UsageError(f"{purpose}: no node with id or title '{ref}' in the workflow. Titles present: "
                         f"{titles_present(workflow)}. Set the title in ComfyUI (right-click > Title) and export "
                         f"the workflow again (Workflow > Export (API)).")
    if len(ids) > 1:
        raise UsageError(f"{purpose}: {len(ids)} nodes are titled '{ref}' (ids {', '.join(ids)}); titles used "
                         "by the client must be unique, or name the node by its id")
    return ids[0]


def file_input_name(workflow: Mapping, node_id: str) -> str:
    """The upload input of a node: the first of FILE_INPUTS it has."""
    inputs = workflow[node_id]["inputs"]
    for name in FILE_INPUTS:
        if name in inputs:
            return name
    raise UsageError(f"{node_label(workflow, node_id)} has none of the inputs {', '.join(FILE_INPUTS)}, so a file "
                     f"cannot be filled in; use a LoadImage/LoadVideo node with that title")


def parse_set(text: str) -> tuple[str, str]:
    """`"NODE.INPUT=VALUE"` -> (`"NODE.INPUT"`, `"VALUE"`), VALUE still raw."""
    target, sep, raw = text.partition("=")
    target = target.strip()
    if not sep or "." not in target or target.startswith(".") or target.endswith("."):
        raise UsageError(f"--set {text!r}: expected NODE.INPUT=VALUE, NODE being a node id or title "
                         "(e.g. --set \"Sampler.steps=20\")")
    return target, raw


def split_target(workflow: Mapping, target: str) -> tuple[str, str]:
    """`"Title or id.input"` -> (node id, input name); the leftmost split whose left part names a node wins."""
    for i, ch in enumerate(target):
        if ch == "." and 0 < i < len(target) - 1 and find_nodes(workflow, target[:i]):
            return resolve_node(workflow, target[:i], f"--set {target}"), target[i + 1:]
    node_ref = target.rsplit(".", 1)[0]
    return resolve_node(workflow, node_ref, f"--set {target}"), ""     # raises with the titles present


def coerce_value(raw: str, current: Any = None) -> Any:
    """A --set value: JSON when it parses, else the raw string; typed after the input's current value."""
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    if isinstance(current, str) and not isinstance(value, str):
        return raw                       # a string input stays verbatim: "007", "1e3", "true"
    if isinstance(current, float) and type(value) is int:
        return float(value)
    return value


def apply_sets(workflow: dict, sets: Sequence[str] | Mapping[str, Any] | None,
               schema_inputs: Callable[[str], set[str] | None] | None = None) -> list[tuple[str, str, Any]]:
    """Apply --set assignments in place; returns (node id, input, value) per assignment.

    `sets` is a list of "NODE.INPUT=VALUE" strings (values coerced) or a mapping "NODE.INPUT" -> Python value.
    `schema_inputs(class_type)` gives the inputs the server knows for a class (None: unknown); an input that
    is neither in the workflow nor in the schema is an error.
    """
    if not sets:
        return []
    items = [(k, v, False) for k, v in sets.items()] if isinstance(sets, Mapping) else \
        [(*parse_set(s), True) for s in sets]
    done = []
    for target, value, raw in items:
        node_id, name = split_target(workflow, target)
        if not name:
            raise UsageError(f"--set {target}: no input name after the node")
        inputs = workflow[node_id]["inputs"]
        if name not in inputs and schema_inputs is not None:
            known = schema_inputs(workflow[node_id].get("class_type", ""))
            if known is not None and name not in known and name.split(".")[0] not in known:
                raise UsageError(f"--set {target}: {node_label(workflow, node_id)} has no input '{name}'. "
                                 f"Its inputs: {', '.join(sorted(known)) or '(none)'}")
        new = coerce_value(value, inputs.get(name)) if raw else value
        inputs[name] = new
        done.append((node_id, name, new))
    return done


def fill_workflow(workflow: dict, files: Mapping[str, str], sets: Sequence[str] | Mapping[str, Any] | None = None,
                  schema_inputs: Callable[[str], set[str] | None] | None = None) -> dict:
    """Fill `workflow` in place: `files` maps a node title (or id) to an uploaded file name, set as the node's
    image/file/video input; then `sets` are applied (they win). Returns the workflow."""
    targets = []
    for title, name in files.items():
        node_id = resolve_node(workflow, title, f"input file for '{title}'")
        targets.append((node_id, file_input_name(workflow, node_id), name))
    for node_id, input_name, name in targets:
        workflow[node_id]["inputs"][input_name] = name
    apply_sets(workflow, sets, schema_inputs)
    return workflow
