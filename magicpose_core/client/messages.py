"""Readable texts of ComfyUI's errors: the `node_errors` of a rejected POST /prompt (one line per reason, naming node,
title, class and input) and an `execution_error` event; `PromptRejected` carries the first.

The layouts follow ComfyUI 0.30.0 `execution.py` (`validate_inputs`, `validate_prompt`, `handle_execution_error`).
"""
from __future__ import annotations

from typing import Mapping

from .errors import UsageError
from .workflow import node_label

MAX_DETAIL = 300                              # characters of one validation message kept (value lists are long)


class PromptRejected(UsageError):
    """POST /prompt answered 400: the message lists every node error readably."""

    def __init__(self, body: Mapping, workflow: Mapping | None = None):
        super().__init__(format_prompt_error(body, workflow))
        self.body = dict(body)
        self.node_errors = dict(body.get("node_errors") or {})


def shorten(text: str, limit: int = MAX_DETAIL) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def format_validation_error(err: Mapping) -> str:
    """One `validate_inputs` reason -> `input 'steps': Value 0 smaller than min of 1`."""
    message = str(err.get("message") or err.get("type") or "invalid").strip()
    details = str(err.get("details") or "").strip()
    name = (err.get("extra_info") or {}).get("input_name")
    if name:
        short = str(name).split(".")[-1]
        for prefix in (name, short):
            for sep in (" - ", ": ", ", "):
                if details.startswith(f"{prefix}{sep}"):
                    details = details[len(prefix) + len(sep):]
                    break
        if details in (name, short):
            details = ""
    if err.get("type") == "custom_validation_failed" and details:
        text = details                               # the node's own message says it best
    else:
        text = message + (f": {details}" if details else "")
    return (f"input '{name}': " if name else "") + shorten(text)


def format_node_errors(node_errors: Mapping, workflow: Mapping | None = None) -> list[str]:
    """`node_errors` of a 400 from /prompt -> one line per reason, each naming node, title, class and input."""
    lines = []
    for nid, entry in node_errors.items():
        label = node_label(workflow, nid, (entry or {}).get("class_type"))
        reasons = (entry or {}).get("errors") or [{"message": "invalid"}]
        lines += [f"{label}: {format_validation_error(r)}" for r in reasons]
    return lines


HINTS = {
    "missing_node_type": "install the custom node pack that provides it, or fix class_type in the workflow",
    "prompt_no_outputs": "the workflow needs an output node, e.g. SaveImage titled 'Output'",
    "invalid_prompt_id": "the prompt id must be a lowercase UUID",
}


def format_prompt_error(body: Mapping, workflow: Mapping | None = None) -> str:
    """The readable text of a 400 from POST /prompt (`{"error": {...}, "node_errors": {...}}`)."""
    err = body.get("error")
    node_errors = body.get("node_errors") or {}
    if isinstance(err, Mapping):
        head = str(err.get("message") or err.get("type") or "invalid prompt")
        extra = err.get("extra_info") or {}
        if err.get("type") == "missing_node_type" and extra.get("class_type"):
            head = f"node type '{extra['class_type']}' is not installed on the server"
        if extra.get("node_id") is not None and not node_errors:
            head = f"{node_label(workflow, extra['node_id'], extra.get('class_type'))}: {head}"
        hint = HINTS.get(str(err.get("type")))
        if hint:
            head += f" ({hint})"
    else:
        head = str(err or "invalid prompt")
    lines = [f"ComfyUI rejected the workflow: {head}"]
    if node_errors:
        lines += [f"  {line}" for line in format_node_errors(node_errors, workflow)]
    elif isinstance(err, Mapping) and err.get("details") and err.get("type") != "missing_node_type":
        lines += [f"  {shorten(d)}" for d in str(err["details"]).splitlines() if d.strip()]
    return "\n".join(lines)


def format_execution_error(data: Mapping, workflow: Mapping | None = None) -> str:
    """An `execution_error` event -> `node 3 "Sampler" (MagicPoseSample): ValueError: message`."""
    label = node_label(workflow, data.get("node_id"), data.get("node_type"))
    kind = data.get("exception_type") or "error"
    return f"{label}: {kind}: {str(data.get('exception_message') or '').strip()}"
