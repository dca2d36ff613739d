"""Headless client for ComfyUI's HTTP API: run an API-format workflow from a shell or from Python.

    python -m magicpose_core.client run workflows/api/video_dance_retarget_api.json \\
        --reference ref.png --driving dance.mp4 --out out.mp4 \\
        [--server http://127.0.0.1:8188] [--set "Sampler.steps=20"] [--set "7.seed=3"]

The standard library (urllib for HTTP) plus two pure-Python libraries, websocket-client for `/ws` and tqdm for the
progress bar: it runs on a machine with Python and this package, without ComfyUI, torch, numpy or aiohttp. The title
convention, the outputs, the exit codes and the several-servers split are described in `cli` (the CLI's --help).

Python API (the CLI wraps it):

    result = Client("http://127.0.0.1:8188").run("wf.json", inputs={"Reference": "ref.png"},
                                                 sets=["Sampler.steps=20"], out="out.mp4")
    result.status, result.files, result.exit_code

Protocol facts follow ComfyUI 0.30.0 `server.py` (routes /prompt, /upload/image, /object_info, /history,
/view, /interrupt, /queue, /ws) and `execution.py` (`validate_prompt`'s `error`/`node_errors` layout, the
websocket events execution_start / executing / progress / executed / execution_success / execution_error /
execution_interrupted); see docs/comfyui-integration.md §3.

Modules, each importing only those listed before it: errors; workflow (titles, --set); messages (readable server
errors); outputs (Result, output files); stop (signals, StopGate); follow (the websocket); progress (the bar);
server (Client); split_plan, split_parts, split (several servers); cli (the command line, used by __main__).
"""
from .cli import build_parser, main
from .errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    ClientError,
    ServerUnreachable,
    Terminated,
    UsageError,
)
from .follow import END_EVENTS, RunEvent
from .messages import (
    HINTS,
    MAX_DETAIL,
    PromptRejected,
    format_execution_error,
    format_node_errors,
    format_prompt_error,
    format_validation_error,
    shorten,
)
from .outputs import Result, output_destinations, output_files
from .progress import ProgressPrinter
from .server import DEFAULT_SERVER, Client
from .split import SplitFailed, SplitRender
from .stop import StopGate, install_signal_handlers
from .workflow import (
    DRIVING_VIDEO_TITLE,
    FILE_INPUTS,
    OUTPUT_TITLE,
    POSES_TITLES,
    REFERENCE_TITLE,
    apply_sets,
    coerce_value,
    file_input_name,
    fill_workflow,
    find_nodes,
    load_workflow,
    node_label,
    node_title,
    parse_set,
    resolve_node,
    split_target,
    titles_present,
)

__all__ = [
    "DEFAULT_SERVER", "DRIVING_VIDEO_TITLE", "END_EVENTS", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK",
    "EXIT_UNREACHABLE", "EXIT_USAGE", "FILE_INPUTS", "HINTS", "MAX_DETAIL", "OUTPUT_TITLE", "POSES_TITLES",
    "REFERENCE_TITLE", "Client", "ClientError", "ProgressPrinter", "PromptRejected", "Result", "RunEvent",
    "ServerUnreachable", "SplitFailed", "SplitRender", "StopGate", "Terminated", "UsageError", "apply_sets",
    "build_parser", "coerce_value", "file_input_name", "fill_workflow", "find_nodes", "format_execution_error",
    "format_node_errors", "format_prompt_error", "format_validation_error", "install_signal_handlers",
    "load_workflow", "main", "node_label", "node_title", "output_destinations", "output_files", "parse_set",
    "resolve_node", "shorten", "split_target", "titles_present",
]
