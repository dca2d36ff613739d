"""The command line: `python -m magicpose_core.client run WORKFLOW ...` (its help shows the text below).

    python -m magicpose_core.client run workflows/api/video_dance_retarget_api.json \\
        --reference ref.png --driving dance.mp4 --out out.mp4 \\
        [--server http://127.0.0.1:8188] [--set "Sampler.steps=20"] [--set "7.seed=3"]

Title convention. A script fills in the nodes whose `_meta.title` (the title shown in ComfyUI; right-click >
Title, then "Export (API)") is exactly:
- `Reference`      --reference FILE: FILE is uploaded and set as the node's `image` input (LoadImage);
- `Driving video`  --driving FILE: FILE is uploaded and set as the node's `file` input (core LoadVideo;
                   `video` or `image` are used when the node has those instead);
- `Driving poses` or `Poses` (optional)  --poses FILE: uploaded and set the same way;
- `Output`         the node whose files (SaveImage `images`, SaveVideo/SaveAnimated* `images`, VHS `gifs`, any
                   list of {filename, subfolder, type} in its output dict) are downloaded to --out.
Any other title can receive a file with `--file "Title=PATH"`. Any input of any node can be set with
`--set "NODE.INPUT=VALUE"`, NODE being a node id or an exact title; VALUE is read as JSON when it parses
(`20`, `7.5`, `true`, `"text"`, `null`), else as a plain string; an input that currently holds a string stays a
string (`--set "Output.filename_prefix=007"`), and an int given to a float input becomes a float.
An unknown title or input is an error that lists what the workflow (or the server's node schema) has.

Outputs. One file: written to --out. Several files: written as `<stem>_00001<ext>`, `<stem>_00002<ext>`, ...
next to --out (each with the extension of the server file). If --out is an existing directory or ends with
"/", every file keeps its server name inside it. Without --out nothing is downloaded; the server-side names
are printed.

Exit codes: 0 success; 1 execution error (the server ran the prompt and a node failed, or downloading failed);
2 usage or validation error (bad arguments, unknown title or input, `node_errors` from POST /prompt);
3 cannot reach the server; 130 interrupted (Ctrl-C, or the prompt was interrupted on the server); 143 / 129
SIGTERM / SIGHUP. The client owns its prompt: on Ctrl-C, SIGTERM, SIGHUP, a --timeout or any unexpected error it
interrupts the prompt if it is running or deletes it if it is queued (POST /api/jobs/{id}/cancel; on servers
without the jobs API POST /interrupt {"prompt_id": id} and POST /queue {"delete": [id]}), never touching other
clients' prompts, and repeats that until GET /queue no longer lists it (bounded): ComfyUI clears its interrupt
flag when a prompt starts, so an interrupt that lands between the prompt leaving the queue and its start is lost.
A second Ctrl-C or signal during that stop is ignored with a message, so it cannot leave a prompt running.

Several servers: `--server A --server B ...` splits the driving video into contiguous frame ranges, renders them
on whichever server is idle and merges them into --out with the driver's fps and sound; the result equals a
single-server render (magicpose_core.client.split; options --range-frames, --parts-dir, --resume, --keep-parts).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Mapping, Sequence

from .errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, ClientError, Terminated, UsageError
from .outputs import output_files
from .progress import ProgressPrinter
from .server import DEFAULT_SERVER, Client
from .split import SplitRender
from .stop import install_signal_handlers
from .workflow import DRIVING_VIDEO_TITLE, POSES_TITLES, REFERENCE_TITLE, find_nodes, load_workflow

log = logging.getLogger("MagicPose")


def build_parser() -> argparse.ArgumentParser:
    doc = __doc__.split("Title convention.")[1]
    parser = argparse.ArgumentParser(prog="python -m magicpose_core.client",
                                     description="Run a ComfyUI API-format workflow headlessly.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Title convention." + doc)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="upload inputs, run the workflow, download its Output",
                         formatter_class=argparse.RawDescriptionHelpFormatter, epilog="Title convention." + doc)
    run.add_argument("workflow", help="API-format workflow JSON (e.g. workflows/api/*.json)")
    run.add_argument("--server", action="append", default=[],
                     help=f"ComfyUI address (default: $COMFYUI_URL or {DEFAULT_SERVER}); give it several times to "
                          "split the driving video into frame ranges over several servers")
    run.add_argument("--reference", metavar="FILE", help=f"image for the node titled '{REFERENCE_TITLE}'")
    run.add_argument("--driving", metavar="FILE", help=f"video for the node titled '{DRIVING_VIDEO_TITLE}'")
    run.add_argument("--poses", metavar="FILE", help=f"file for the node titled '{POSES_TITLES[0]}' or "
                                                      f"'{POSES_TITLES[1]}'")
    run.add_argument("--file", metavar="TITLE=PATH", action="append", default=[],
                     help="upload PATH into the node titled TITLE (repeatable)")
    run.add_argument("--set", metavar="NODE.INPUT=VALUE", action="append", default=[], dest="sets",
                     help="set an input; NODE is a node id or title; VALUE is JSON or a string (repeatable)")
    run.add_argument("--out", metavar="PATH", help="where the Output node's files go (see below)")
    run.add_argument("--timeout", type=float, help="interrupt the prompt after this many seconds (exit 1)")
    run.add_argument("--quiet", action="store_true", help="no progress display")
    split = run.add_argument_group("several servers (magicpose_core.client.split)")
    split.add_argument("--range-frames", type=int, metavar="N",
                       help="frames per range (default: about 4 ranges per server, at least 16 frames each)")
    split.add_argument("--parts-dir", metavar="DIR", help="where finished ranges are kept (default: OUT.parts/)")
    split.add_argument("--resume", action="store_true",
                       help="render only the ranges missing from the parts folder of an earlier, failed run")
    split.add_argument("--keep-parts", action="store_true", help="keep the parts folder after the merge")
    return parser


def _inputs_from_args(args: argparse.Namespace, workflow: Mapping) -> dict[str, str]:
    inputs = {}
    if args.reference:
        inputs[REFERENCE_TITLE] = args.reference
    if args.driving:
        inputs[DRIVING_VIDEO_TITLE] = args.driving
    if args.poses:
        present = [t for t in POSES_TITLES if find_nodes(workflow, t)]
        inputs[present[0] if present else POSES_TITLES[0]] = args.poses
    for item in args.file:
        title, sep, path = item.partition("=")
        if not sep or not title or not path:
            raise UsageError(f"--file {item!r}: expected TITLE=PATH")
        inputs[title] = path
    return inputs


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)              # bad arguments exit 2 (argparse)
    if not log.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("magicpose: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.WARNING if args.quiet else logging.INFO)
    servers = args.server or [os.environ.get("COMFYUI_URL", DEFAULT_SERVER)]
    restore = install_signal_handlers()
    try:
        workflow = load_workflow(args.workflow)
        inputs = _inputs_from_args(args, workflow)
        if len(servers) > 1 or args.range_frames is not None or args.resume or args.parts_dir:
            return _main_split(args, servers, workflow, inputs)
        client = Client(servers[0])
        progress = None if args.quiet else ProgressPrinter(sys.stderr)
        try:
            result = client.run(workflow, inputs=inputs, sets=args.sets, out=args.out, on_event=progress,
                                timeout=args.timeout)
        finally:
            if progress is not None:
                progress.close()                        # end an open bar's line before any message
    except ClientError as e:
        kind = {EXIT_USAGE: "error", EXIT_UNREACHABLE: "error"}.get(e.exit_code, "failed")
        print(f"{kind}: {e}", file=sys.stderr)
        return e.exit_code
    except Terminated as e:
        print(f"{e}: the prompt was interrupted on the server or removed from its queue", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C): the prompt was interrupted on the server or removed from its queue",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        restore()
    if result.status == "error":
        print(f"execution error in {result.error}", file=sys.stderr)
    elif result.status == "interrupted":
        print(f"interrupted: {result.error}", file=sys.stderr)
    else:
        for path in result.files:
            print(path)
        if args.out is None:                                # nothing downloaded: name the server files
            for node_out in result.outputs.values():
                for item in output_files(node_out):
                    parts = (item.get("type", "output"), item.get("subfolder"), item["filename"])
                    print("/".join(p for p in parts if p))
        print(f"done in {result.seconds:.1f} s (prompt {result.prompt_id})", file=sys.stderr)
    return result.exit_code


def _main_split(args: argparse.Namespace, servers: list[str], workflow: dict, inputs: dict[str, str]) -> int:
    """`run` with several --server (or the split options): frame ranges over the servers, merged into --out."""
    if not args.out:
        raise UsageError("splitting over servers needs --out (the merged video)")
    say = None if args.quiet else (lambda text: (sys.stderr.write(text + "\n"), sys.stderr.flush()))
    job = SplitRender(servers, workflow, inputs, args.sets, args.out, parts_dir=args.parts_dir,
                      range_frames=args.range_frames, resume=args.resume, keep_parts=args.keep_parts, on_text=say,
                      range_timeout=args.timeout)
    result = job.run()
    print(result.path)
    overhead = [s.seconds - s.sample_seconds for s in result.stats]
    print(f"done in {result.seconds:.1f} s: {result.frames} frames, {len(result.ranges)} ranges on "
          f"{len(result.servers)} server(s)" + (f", {result.resumed} resumed" if result.resumed else "")
          + (f"; per range outside the sampler {sum(overhead) / len(overhead):.2f} s" if overhead else "")
          + f"; merge {result.merge_seconds:.2f} s", file=sys.stderr)
    return EXIT_OK

