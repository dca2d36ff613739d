"""magicpose_core.client without ComfyUI: workflow filling by title, --set parsing and type coercion, readable
node_errors, output naming, CLI exit codes, the progress display, the package's import rules, and following a
prompt over the websocket against a stand-in server on 127.0.0.1 (events, a lost connection, a missed end, the
timeout and the stop, partial frames across read timeouts).

The node_errors / execution_error dicts below have the layout ComfyUI 0.30.0 `execution.py` produces
(`validate_inputs`, `validate_prompt`, `handle_execution_error`); tests/e2e/test_client_server.py checks the
same formatting against a real server.
"""
from __future__ import annotations

import ast
import asyncio
import base64
import hashlib
import io
import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from magicpose_core import client as mc

ROOT = Path(__file__).resolve().parents[2]


def workflow() -> dict:
    """Reference image + driving video -> ... -> Output, titled as the convention says."""
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "old.png"}, "_meta": {"title": "Reference"}},
        "2": {"class_type": "LoadVideo", "inputs": {"file": "old.mp4"}, "_meta": {"title": "Driving video"}},
        "3": {"class_type": "KSampler", "_meta": {"title": "Sampler"},
              "inputs": {"steps": 50, "cfg": 7.0, "seed": 1, "sampler_name": "euler", "model": ["9", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "mp"},
              "_meta": {"title": "Output"}},
        "5": {"class_type": "ColorTransfer", "_meta": {"title": "v1.5 colour"},
              "inputs": {"method": "histogram", "source_stats": "target_frame", "source_stats.target_index": 0}},
        "9": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15.safetensors"}},
    }


# --- workflow loading and filling ---------------------------------------------------------------------------

def test_fill_by_title_sets_the_upload_input_of_each_node_type():
    wf = workflow()
    mc.fill_workflow(wf, {"Reference": "ref (1).png", "Driving video": "dance.mp4"})
    assert wf["1"]["inputs"]["image"] == "ref (1).png"
    assert wf["2"]["inputs"]["file"] == "dance.mp4"          # core LoadVideo's input is `file`
    assert wf["4"] == workflow()["4"]                          # nothing else touched


def test_fill_by_node_id_and_video_input_name():
    wf = workflow()
    wf["2"] = {"class_type": "VHS_LoadVideo", "inputs": {"video": "x.mp4", "frame_load_cap": 0},
               "_meta": {"title": "Poses"}}
    mc.fill_workflow(wf, {"Poses": "p.mp4", "1": "r.png"})
    assert wf["2"]["inputs"]["video"] == "p.mp4" and wf["1"]["inputs"]["image"] == "r.png"


def test_missing_title_lists_titles_present():
    with pytest.raises(mc.UsageError) as e:
        mc.fill_workflow(workflow(), {"Driving poses": "p.mp4"})
    msg = str(e.value)
    assert "'Driving poses'" in msg and "'Reference'" in msg and "'Output'" in msg and "'Sampler'" in msg
    assert e.value.exit_code == 2


def test_duplicate_titles_are_an_error_naming_the_ids():
    wf = workflow()
    wf["6"] = {"class_type": "LoadImage", "inputs": {"image": "a.png"}, "_meta": {"title": "Reference"}}
    with pytest.raises(mc.UsageError, match=r"2 nodes are titled 'Reference' \(ids 1, 6\)"):
        mc.fill_workflow(wf, {"Reference": "r.png"})


def test_file_into_node_without_upload_input_is_an_error():
    with pytest.raises(mc.UsageError, match=r'node 3 "Sampler" \(KSampler\) has none of the inputs image, file'):
        mc.fill_workflow(workflow(), {"Sampler": "r.png"})


def test_load_workflow_refuses_ui_format_and_reads_api_format(tmp_path):
    ui = tmp_path / "ui.json"
    ui.write_text(json.dumps({"nodes": [{"id": 1}], "links": [], "version": 0.4}))
    with pytest.raises(mc.UsageError, match="UI-format workflow.*Export \\(API\\)"):
        mc.load_workflow(ui)
    api = tmp_path / "api.json"
    api.write_text(json.dumps(workflow()))
    assert mc.load_workflow(api) == workflow()
    body = tmp_path / "body.json"
    body.write_text(json.dumps({"prompt": workflow(), "client_id": "x"}))   # a saved POST /prompt body
    assert mc.load_workflow(body) == workflow()
    with pytest.raises(mc.UsageError, match="not found"):
        mc.load_workflow(tmp_path / "missing.json")
    with pytest.raises(mc.UsageError, match="node 7 is not an API-format node"):
        mc.load_workflow({"7": [1, 2]})


def test_load_workflow_copies_its_input():
    wf = workflow()
    filled = mc.fill_workflow(mc.load_workflow(wf), {"Reference": "new.png"})
    assert filled["1"]["inputs"]["image"] == "new.png" and wf["1"]["inputs"]["image"] == "old.png"


# --- --set ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,node,name,value", [
    ("Sampler.steps=20", "3", "steps", 20),                 # int stays int
    ("Sampler.cfg=7", "3", "cfg", 7.0),                     # int into a float input -> float
    ("Sampler.cfg=7.5", "3", "cfg", 7.5),
    ("3.seed=18446744073709551615", "3", "seed", 18446744073709551615),   # by node id; big ints survive
    ("Sampler.sampler_name=dpmpp_2m", "3", "sampler_name", "dpmpp_2m"),   # not JSON -> string
    ("Output.filename_prefix=007", "4", "filename_prefix", "007"),        # string input stays verbatim
    ("Output.filename_prefix=true", "4", "filename_prefix", "true"),
    ('Output.filename_prefix="quoted"', "4", "filename_prefix", "quoted"),
    ("Output.filename_prefix=a=b", "4", "filename_prefix", "a=b"),       # first '=' splits
    ("Sampler.denoise=0.5", "3", "denoise", 0.5),           # a new input (no schema given)
    ("Sampler.add_noise=false", "3", "add_noise", False),
    ("v1.5 colour.method=mkl_lab", "5", "method", "mkl_lab"),             # a title containing a dot
    ("v1.5 colour.source_stats.target_index=3", "5", "source_stats.target_index", 3),   # nested input
])
def test_set_parsing_and_coercion(text, node, name, value):
    wf = workflow()
    done = mc.apply_sets(wf, [text])
    assert done == [(node, name, value)]
    assert wf[node]["inputs"][name] == value and type(wf[node]["inputs"][name]) is type(value)


def test_set_mapping_values_are_used_as_given():
    wf = workflow()
    mc.apply_sets(wf, {"Sampler.steps": 3, "Output.filename_prefix": "x/y"})
    assert wf["3"]["inputs"]["steps"] == 3 and wf["4"]["inputs"]["filename_prefix"] == "x/y"


@pytest.mark.parametrize("text,pattern", [
    ("Sampler.steps", "expected NODE.INPUT=VALUE"),
    ("steps=3", "expected NODE.INPUT=VALUE"),
    ("Nope.steps=3", r"no node with id or title 'Nope'.*Titles present: 'Reference'"),
    ("Sampler.=3", "expected NODE.INPUT=VALUE"),
])
def test_bad_set_is_a_usage_error(text, pattern):
    with pytest.raises(mc.UsageError, match=pattern) as e:
        mc.apply_sets(workflow(), [text])
    assert e.value.exit_code == 2


def test_set_checks_input_names_against_the_server_schema():
    schema = {"KSampler": {"steps", "cfg", "seed", "denoise", "model"}}
    wf = workflow()
    with pytest.raises(mc.UsageError, match=r"node 3 \"Sampler\" \(KSampler\) has no input 'stpes'. Its inputs: cfg"):
        mc.apply_sets(wf, ["Sampler.stpes=3"], schema.get)
    mc.apply_sets(wf, ["Sampler.denoise=0.3"], schema.get)       # in the schema, not yet in the workflow
    assert wf["3"]["inputs"]["denoise"] == 0.3
    mc.apply_sets(wf, ["9.anything=1"], schema.get)              # class unknown to the server: left to it
    assert wf["9"]["inputs"]["anything"] == 1


json_scalars = st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.booleans(),
                         st.none(), st.text(max_size=20))


@given(json_scalars)
def test_coerce_reads_any_json_scalar(value):
    assert mc.coerce_value(json.dumps(value)) == value


@given(st.text(max_size=30))
def test_coerce_keeps_string_inputs_verbatim_unless_quoted(raw):
    got = mc.coerce_value(raw, current="old")
    assert isinstance(got, str)
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError:
        parsed = None
    assert got == (parsed if isinstance(parsed, str) else raw)


# --- error formatting -------------------------------------------------------------------------------------

def node_errors() -> dict:
    """node_errors as validate_prompt returns them (execution.py: validate_inputs reasons)."""
    return {
        "3": {"class_type": "KSampler", "dependent_outputs": ["4"], "errors": [
            {"type": "value_smaller_than_min", "message": "Value 0 smaller than min of 1", "details": "steps",
             "extra_info": {"input_name": "steps", "input_config": ["INT", {"min": 1}], "received_value": 0}},
            {"type": "required_input_missing", "message": "Required input is missing", "details": "model",
             "extra_info": {"input_name": "model"}}]},
        "1": {"class_type": "LoadImage", "dependent_outputs": ["4"], "errors": [
            {"type": "custom_validation_failed", "message": "Custom validation failed for node",
             "details": "image - Invalid image file: nope.png", "extra_info": {"input_name": "image"}}]},
        "2": {"class_type": "LoadVideo", "dependent_outputs": ["4"], "errors": [
            {"type": "value_not_in_list", "message": "Value not in list",
             "details": "file: 'x.mp4' not in " + str([f"clip{i}.mp4" for i in range(500)]),
             "extra_info": {"input_name": "file"}}]},
        "5": {"class_type": "ColorTransfer", "dependent_outputs": ["4"], "errors": [
            {"type": "return_type_mismatch", "message": "Return type mismatch between linked nodes",
             "details": "image_target, received_type(LATENT) mismatch input_type(IMAGE)",
             "extra_info": {"input_name": "image_target"}}]},
    }


def test_node_errors_become_one_readable_line_per_reason():
    lines = mc.format_node_errors(node_errors(), workflow())
    assert lines[0] == "node 3 \"Sampler\" (KSampler): input 'steps': Value 0 smaller than min of 1"
    assert lines[1] == "node 3 \"Sampler\" (KSampler): input 'model': Required input is missing"
    assert lines[2] == "node 1 \"Reference\" (LoadImage): input 'image': Invalid image file: nope.png"
    assert lines[3].startswith("node 2 \"Driving video\" (LoadVideo): input 'file': Value not in list: 'x.mp4' not")
    assert len(lines[3]) < 400 and lines[3].endswith("...")              # the 500-name list is cut
    assert lines[4] == ("node 5 \"v1.5 colour\" (ColorTransfer): input 'image_target': Return type mismatch between "
                        "linked nodes: received_type(LATENT) mismatch input_type(IMAGE)")


def test_prompt_error_text_and_exit_code():
    body = {"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                      "details": "x", "extra_info": {}}, "node_errors": node_errors()}
    e = mc.PromptRejected(body, workflow())
    text = str(e).splitlines()
    assert text[0] == "ComfyUI rejected the workflow: Prompt outputs failed validation"
    assert len(text) == 1 + 5 and all(t.startswith("  node ") for t in text[1:])
    assert e.exit_code == 2 and set(e.node_errors) == {"1", "2", "3", "5"}


def test_missing_node_type_and_no_outputs_have_hints():
    wf = workflow()
    wf["3"]["class_type"] = "MagicPoseSample"
    body = {"error": {"type": "missing_node_type", "message": "Node 'Sampler' not found. The custom node may not be "
                      "installed.", "details": "Node ID '#3'",
                      "extra_info": {"node_id": "3", "class_type": "MagicPoseSample", "node_title": "Sampler"}},
            "node_errors": {}}
    assert str(mc.PromptRejected(body, wf)) == (
        "ComfyUI rejected the workflow: node 3 \"Sampler\" (MagicPoseSample): node type 'MagicPoseSample' is not "
        "installed on the server (install the custom node pack that provides it, or fix class_type in the workflow)")
    body = {"error": {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "",
                      "extra_info": {}}, "node_errors": {}}
    assert "SaveImage titled 'Output'" in str(mc.PromptRejected(body, wf))


def test_execution_error_names_node_title_type_and_message():
    data = {"prompt_id": "p", "node_id": "3", "node_type": "KSampler", "executed": ["9"],
            "exception_message": "steps must be > 0\n", "exception_type": "ValueError", "traceback": ["..."]}
    assert mc.format_execution_error(data, workflow()) == 'node 3 "Sampler" (KSampler): ValueError: steps must be > 0'


# --- outputs ----------------------------------------------------------------------------------------------

def test_output_files_takes_every_file_list_of_the_node():
    out = {"images": [{"filename": "a.mp4", "subfolder": "video", "type": "output"}], "animated": [True],
           "gifs": [{"filename": "b.webm", "subfolder": "", "type": "temp", "format": "video/webm"},
                    {"filename": "a.mp4", "subfolder": "video", "type": "output"}],          # same file twice
           "text": ["hello"]}
    files = mc.output_files(out)
    assert [f["filename"] for f in files] == ["a.mp4", "b.webm"]


def test_output_destinations(tmp_path):
    one = [{"filename": "x_00001_.png"}]
    many = [{"filename": "x_00001_.png"}, {"filename": "x_00002_.webp"}, {"filename": "../../evil.png"}]
    assert mc.output_destinations(tmp_path / "o.png", one) == [tmp_path / "o.png"]
    assert mc.output_destinations(tmp_path / "o.png", many) == [
        tmp_path / "o_00001.png", tmp_path / "o_00002.webp", tmp_path / "o_00003.png"]
    assert mc.output_destinations(tmp_path, many) == [                    # an existing directory
        tmp_path / "x_00001_.png", tmp_path / "x_00002_.webp", tmp_path / "evil.png"]
    assert mc.output_destinations(f"{tmp_path}/new/", one) == [tmp_path / "new" / "x_00001_.png"]


def test_result_exit_codes():
    assert [mc.Result("p", s).exit_code for s in ("success", "error", "interrupted")] == [0, 1, 130]


# --- progress display -------------------------------------------------------------------------------------

class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def feed(printer: mc.ProgressPrinter, total: int) -> None:
    printer(mc.RunEvent("execution_start", {"prompt_id": "p1"}))
    printer(mc.RunEvent("executing", {"node": "3", "prompt_id": "p1"}, 'node 3 "Sampler" (MagicPoseSample)'))
    for v in range(1, total + 1):
        printer(mc.RunEvent("progress", {"value": v, "max": total, "node": "3"}, 'node 3 "Sampler" (MagicPoseSample)'))
    printer(mc.RunEvent("executing", {"node": "4", "prompt_id": "p1"}, 'node 4 "Output" (SaveImage)'))


def test_progress_lines_when_not_a_terminal():
    buf = io.StringIO()
    feed(mc.ProgressPrinter(buf), 48)                     # e.g. 12 frames x 4 steps
    lines = buf.getvalue().splitlines()
    bars = [ln for ln in lines if "/48 [" in ln]
    assert lines[0] == "started prompt p1" and lines[1] == 'running node 3 "Sampler" (MagicPoseSample)'
    assert bars[0].startswith('  node 3 "Sampler" (MagicPoseSample):   2%|' + " " * 24 + "| 1/48 [")
    assert "100%|" + "#" * 24 + "| 48/48 [" in bars[-1]
    assert 10 <= len(bars) <= 12                          # first tick, every 10 %, last tick: not 48 lines
    assert lines[-1] == 'running node 4 "Output" (SaveImage)' and "\r" not in buf.getvalue()


def test_progress_redraws_one_line_on_a_terminal():
    buf = TTY()
    feed(mc.ProgressPrinter(buf), 5)
    text = buf.getvalue()
    started, running, bar, last, end = text.split("\n")
    assert (started, running, last, end) == ("started prompt p1", 'running node 3 "Sampler" (MagicPoseSample)',
                                             'running node 4 "Output" (SaveImage)', "")
    draws = bar.split("\r")[1:]                           # one line redrawn: 1/5 ... 5/5
    assert len(draws) >= 5 and "1/5 [" in draws[0] and "100%|" in draws[-1] and "5/5 [" in draws[-1]
    assert all(d.startswith('  node 3 "Sampler" (MagicPoseSample): ') for d in draws)


def test_progress_bar_line_ends_when_the_run_ends_or_the_node_starts_over():
    buf = TTY()
    printer = mc.ProgressPrinter(buf)
    for v in (1, 2, 1):                                   # a second pass over the node: a new bar
        printer(mc.RunEvent("progress", {"value": v, "max": 5, "node": "3"}, "node 3"))
    printer(mc.RunEvent("execution_error", {"prompt_id": "p1"}))
    text = buf.getvalue()
    assert text.count("\n") == 2 and text.endswith("\n") and text.split("\n")[1].count("\r") >= 1
    printer.close()                                       # nothing left to end
    assert buf.getvalue() == text


# --- CLI exit codes without a server ----------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def files(tmp_path):
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(workflow()))
    ref = tmp_path / "ref.png"
    ref.write_bytes(b"\x89PNG not really")
    return wf, ref


def test_cli_unreachable_server_exits_3(files, capsys):
    wf, ref = files
    code = mc.main(["run", str(wf), "--reference", str(ref), "--server", f"http://127.0.0.1:{free_port()}"])
    err = capsys.readouterr().err
    assert code == 3 and "cannot reach ComfyUI at http://127.0.0.1:" in err and "Is it running?" in err


@pytest.mark.parametrize("extra,pattern", [
    (["--poses", "{ref}"], r"no node with id or title 'Driving poses'.*Titles present"),
    (["--reference", "{tmp}/absent.png"], r"input file for 'Reference' not found"),
    (["--set", "Sampler.steps"], r"expected NODE.INPUT=VALUE"),
    (["--set", "Nope.steps=1"], r"no node with id or title 'Nope'"),
    (["--file", "Reference"], r"expected TITLE=PATH"),
])
def test_cli_usage_errors_exit_2_before_contacting_the_server(files, capsys, extra, pattern):
    wf, ref = files
    args = [a.format(ref=ref, tmp=ref.parent) for a in extra]
    code = mc.main(["run", str(wf), "--server", f"http://127.0.0.1:{free_port()}", *args])   # nothing listens
    err = capsys.readouterr().err
    assert code == 2, err
    assert re.search(pattern, err), err


def test_cli_out_needs_an_output_title(files, capsys, tmp_path):
    wf, ref = files
    data = json.loads(wf.read_text())
    data["4"]["_meta"]["title"] = "Save Image"
    wf.write_text(json.dumps(data))
    assert mc.main(["run", str(wf), "--out", str(tmp_path / "o.png")]) == 2
    assert "no node with id or title 'Output'" in capsys.readouterr().err


def test_cli_bad_arguments_exit_2(files):
    with pytest.raises(SystemExit) as e:
        mc.main(["run"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        mc.main(["run", str(files[0]), "--timeout", "soon"])
    assert e.value.code == 2


def test_client_rejects_a_non_http_server():
    with pytest.raises(mc.UsageError, match="expected http://HOST:PORT"):
        mc.Client("ftp://example.org")
    assert mc.Client("127.0.0.1:8188").server == "http://127.0.0.1:8188"


CLIENT = ROOT / "magicpose_core" / "client"
THIRD_PARTY = {"websocket", "tqdm"}     # websocket-client (/ws) and tqdm (progress bar): pure Python, requirements.txt


def client_modules() -> dict[str, ast.Module]:
    return {p.stem: ast.parse(p.read_text()) for p in sorted(CLIENT.glob("*.py"))}


def test_client_modules_import_only_the_standard_library_and_their_two_libraries():
    """The client must run where only Python, websocket-client, tqdm and this package are installed (no torch, numpy,
    PIL, aiohttp or ComfyUI); merging a split render needs PyAV, which magicpose_core.media.video imports, and only
    inside the functions that merge or probe."""
    modules = client_modules()
    trees = {**{f"client/{m}": t for m, t in modules.items()},
             "media/frame_selection": ast.parse((ROOT / "magicpose_core" / "media" / "frame_selection.py").read_text())}
    used = set()
    for name, tree in trees.items():
        top = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 1:
                assert name.startswith("client/") and node.module in modules, f"{name}: from .{node.module}"
                continue
            elif isinstance(node, ast.ImportFrom) and node.level:
                lazy = node.module == "media.video" and id(node) not in top
                assert node.module == "media.frame_selection" or lazy, f"{name}: relative import of {node.module}"
                continue
            elif isinstance(node, ast.ImportFrom):
                mods = [node.module.split(".")[0]]
            else:
                continue
            bad = [m for m in mods if m not in sys.stdlib_module_names and m != "__future__"
                   and (m not in THIRD_PARTY or not name.startswith("client/"))]
            assert not bad, f"{name}: imports {bad}"
            used |= set(mods) & THIRD_PARTY
    assert used == THIRD_PARTY
    code = ("import sys, magicpose_core.client; heavy = {'torch', 'numpy', 'PIL', 'aiohttp', 'av', 'cv2', 'comfy'}; "
            "print(sorted(heavy & set(sys.modules)))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


def test_client_package_has_no_import_circle_and_only_the_entry_points_import_the_cli():
    """Each module imports only modules below it: a topological order exists; `cli` is imported by `__init__` and
    `__main__` only, and nothing imports the package itself from inside."""
    graph = {}
    for name, tree in client_modules().items():
        graph[name] = {n.module or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 1
                       for a in n.names}
    assert {m for m, deps in graph.items() if "cli" in deps} == {"__init__", "__main__"}
    assert not any(deps & {"__init__", "__main__"} for deps in graph.values())
    order, left = [], dict(graph)
    while left:
        ready = [m for m, deps in left.items() if deps <= set(order)]
        assert ready, f"import circle among {sorted(left)}"
        order += sorted(ready)
        for m in ready:
            del left[m]


def test_cli_runs_without_torch_or_numpy(files, tmp_path):
    """`python -m magicpose_core.client` with torch, numpy and PIL blocked: --help and an unreachable server."""
    block = tmp_path / "block"
    block.mkdir()
    (block / "sitecustomize.py").write_text(
        "import sys\nfor n in ('torch', 'numpy', 'PIL', 'cv2', 'aiohttp', 'comfy', 'folder_paths'):\n"
        "    sys.modules[n] = None\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(block), str(ROOT)]))
    r = subprocess.run([sys.executable, "-m", "magicpose_core.client", "run", "--help"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "Exit codes" in r.stdout, r.stderr[-2000:]
    r = subprocess.run([sys.executable, "-m", "magicpose_core.client", "run", str(files[0]),
                        "--server", f"http://127.0.0.1:{free_port()}"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 3 and "cannot reach" in r.stderr, r.stderr[-2000:]


# --- following a prompt over the websocket (websocket-client) against a stand-in server on 127.0.0.1 -------------

class FakeComfy:
    """A ComfyUI stand-in on 127.0.0.1 (aiohttp in a thread): /ws, POST /prompt, /history, /queue, /system_stats and
    POST /api/jobs/{id}/cancel. After answering POST /prompt it runs `script(fake, ws, prompt_id)` on the websocket
    of the posting client; it records what the server received on each websocket and the stop requests."""

    def __init__(self, script):
        from aiohttp import web

        self.script = script
        self.history: dict[str, dict] = {}
        self.running: set[str] = set()
        self.cancelled: list[str] = []
        self.sockets: dict[str, Any] = {}
        self.transports: dict[str, Any] = {}
        self.ws_headers: list[dict] = []
        self.received: list[tuple[str, Any]] = []                 # (message type, data) per message from clients
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

        async def ws_route(request):
            ws = web.WebSocketResponse(autoping=False)
            await ws.prepare(request)
            cid = request.query["clientId"]
            self.ws_headers.append(dict(request.headers))
            self.sockets[cid], self.transports[cid] = ws, request.transport
            await ws.send_json({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}}})
            async for msg in ws:
                self.received.append((msg.type.name, msg.data))
            self.received.append(("CLOSED", ws.close_code))
            return ws

        async def prompt(request):
            body = await request.json()
            pid, cid = body["prompt_id"], body["client_id"]
            self.running.add(pid)
            asyncio.ensure_future(self.script(self, self.sockets[cid], pid))
            return web.json_response({"prompt_id": pid, "number": 0, "node_errors": {}})

        async def history(request):
            pid = request.match_info["pid"]
            return web.json_response({pid: self.history[pid]} if pid in self.history else {})

        async def queue(request):
            return web.json_response({"queue_running": [[0, p, {}, {}, []] for p in self.running],
                                      "queue_pending": []})

        async def cancel(request):
            self.cancelled.append(request.match_info["pid"])
            self.running.discard(request.match_info["pid"])
            return web.json_response({})

        async def start() -> str:
            app = web.Application()
            app.router.add_get("/ws", ws_route)
            app.router.add_post("/prompt", prompt)
            app.router.add_get("/history/{pid}", history)
            app.router.add_get("/queue", queue)
            app.router.add_post("/api/jobs/{pid}/cancel", cancel)
            app.router.add_get("/system_stats", lambda r: web.json_response({"system": {}}))
            self.runner = web.AppRunner(app)
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            return f"http://127.0.0.1:{self.runner.addresses[0][1]}"

        self.url = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)

    def end(self, pid: str, status: str = "success") -> None:
        """The prompt has finished: /history lists it, /queue no longer does."""
        self.history[pid] = {"status": {"status_str": status, "completed": True, "messages": []},
                             "outputs": {"4": {"images": [{"filename": "a.png", "subfolder": "", "type": "output"}]}}}
        self.running.discard(pid)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture
def fake_comfy():
    made = []

    def make(script):
        made.append(FakeComfy(script))
        return made[-1]

    yield make
    for f in made:
        f.close()


def event(kind: str, pid: str, **data) -> dict:
    return {"type": kind, "data": {"prompt_id": pid, **data}}


async def run_to_success(fake, ws, pid):
    await ws.ping(b"hb")                                             # answered by the library while reading
    await ws.send_json(event("execution_start", "someone-else"))     # another client's prompt: not ours
    await ws.send_json(event("execution_start", pid))
    await ws.send_json(event("executing", pid, node="3", display_node="3"))
    await ws.send_bytes(b"\x00\x00\x00\x01preview")                  # a binary preview: skipped
    await ws.send_str("not json")
    for v in (1, 2, 3):
        await ws.send_json({"type": "progress", "data": {"value": v, "max": 3, "prompt_id": pid, "node": "3"}})
    fake.end(pid)
    await ws.send_json(event("execution_success", pid))


def test_client_follows_its_prompts_events_over_the_websocket(fake_comfy):
    fake = fake_comfy(run_to_success)
    events = []
    t0 = time.monotonic()
    res = mc.Client(fake.url, client_id="c1").submit(workflow(), on_event=events.append)
    assert res.status == "success" and res.outputs["4"]["images"][0]["filename"] == "a.png"
    assert time.monotonic() - t0 < 5                                 # no /history polling: the events said it
    assert [e.type for e in events] == ["execution_start", "executing", "progress", "progress", "progress",
                                        "execution_success"]
    assert events[1].label == events[2].label == 'node 3 "Sampler" (KSampler)' and events[0].label == ""
    assert [e.data["value"] for e in events if e.type == "progress"] == [1, 2, 3]
    deadline = time.monotonic() + 5
    while ("CLOSED", 1000) not in fake.received and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ("PONG", b"hb") in fake.received                           # the server's ping was answered
    assert ("CLOSED", 1000) in fake.received                          # and the client closed normally
    assert "Origin" not in fake.ws_headers[0] and not fake.cancelled


@pytest.mark.parametrize("how", ["close frame", "connection dropped"])
def test_a_lost_websocket_falls_back_to_polling_history(fake_comfy, caplog, how):
    async def drop(fake, ws, pid):
        await ws.send_json(event("execution_start", pid))
        if how == "close frame":
            await ws.close(code=1001, message=b"going away")
        else:
            next(iter(fake.transports.values())).close()             # TCP closed without a close frame
        await asyncio.sleep(1.0)
        fake.end(pid)

    fake = fake_comfy(drop)
    events = []
    with caplog.at_level("WARNING", logger="MagicPose"):
        res = mc.Client(fake.url).submit(workflow(), on_event=events.append)
    assert res.status == "success" and "4" in res.outputs and [e.type for e in events] == ["execution_start"]
    assert "websocket lost" in caplog.text and "polling /history" in caplog.text
    if how == "close frame":
        assert "code 1001: going away" in caplog.text
    assert not fake.cancelled


def test_a_missed_end_event_is_found_in_history_after_a_quiet_spell(fake_comfy, monkeypatch):
    from magicpose_core.client import follow

    async def silent_end(fake, ws, pid):
        await ws.send_json(event("execution_start", pid))
        await asyncio.sleep(0.3)
        fake.end(pid, "error")                                       # ended, but its events never came

    monkeypatch.setattr(follow, "QUIET_CHECK", 1.0)
    fake = fake_comfy(silent_end)
    t0 = time.monotonic()
    res = mc.Client(fake.url).submit(workflow())
    assert res.status == "error" and time.monotonic() - t0 < 5


def test_timeout_stops_the_prompt_on_the_server(fake_comfy):
    async def never_ends(fake, ws, pid):
        await ws.send_json(event("execution_start", pid))

    fake = fake_comfy(never_ends)
    t0 = time.monotonic()
    with pytest.raises(mc.ClientError, match=r"did not finish within 1 s; it was interrupted"):
        mc.Client(fake.url).submit(workflow(), timeout=1.0, interrupt_wait=5)
    assert time.monotonic() - t0 < 4                                 # read timeouts of 0.5 s: the deadline holds
    assert len(fake.cancelled) == 1 and not fake.running


def test_stop_event_returns_interrupted_and_cancels(fake_comfy):
    async def never_ends(fake, ws, pid):
        await ws.send_json(event("execution_start", pid))

    fake = fake_comfy(never_ends)
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    res = mc.Client(fake.url).submit(workflow(), stop=stop, interrupt_wait=5)
    assert res.status == "interrupted" and "stopped by the client" in res.error
    assert len(fake.cancelled) == 1 and not fake.running


def test_websocket_connection_failures_are_server_unreachable(fake_comfy, monkeypatch):
    from magicpose_core.client.follow import close_events, open_events

    port = free_port()
    with pytest.raises(mc.ServerUnreachable, match=rf"cannot open the websocket ws://127.0.0.1:{port}/ws\?clientId=x"):
        open_events(f"http://127.0.0.1:{port}", "x", timeout=5)
    fake = fake_comfy(run_to_success)
    with pytest.raises(mc.ServerUnreachable, match=r"cannot open the websocket .*/nope/ws"):
        open_events(fake.url + "/nope", "x", timeout=5)               # HTTP 404 instead of the upgrade
    # An environment proxy is never used for the websocket (here: a dead one).
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{free_port()}")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    ws = open_events(fake.url, "direct", timeout=5)
    t0 = time.monotonic()
    close_events(ws)
    close_events(ws)                                                  # idempotent
    assert time.monotonic() - t0 < 2 and "direct" in fake.sockets


def raw_ws_server(send) -> int:
    """A one-connection websocket server on a bare socket: it answers the handshake (RFC 6455 §4.2.2) and then
    calls `send(conn)` to write raw frames; returns its port."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def serve():
        conn, _ = srv.accept()
        with conn, srv:
            req = b""
            while b"\r\n\r\n" not in req:
                req += conn.recv(4096)
            key = [ln.split(b": ", 1)[1] for ln in req.split(b"\r\n") if ln.lower().startswith(b"sec-websocket-key")]
            accept = base64.b64encode(hashlib.sha1(key[0] + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            send(conn)
            conn.recv(100)

    threading.Thread(target=serve, daemon=True).start()
    return srv.getsockname()[1]


def text_frame(data: bytes, opcode: int = 0x1, fin: bool = True) -> bytes:
    """An unmasked server frame (RFC 6455 §5.2), payload under 64 KiB."""
    head = bytes([(0x80 if fin else 0) | opcode])
    return head + (bytes([len(data)]) if len(data) < 126 else bytes([126]) + struct.pack("!H", len(data))) + data


def test_a_frame_split_across_read_timeouts_is_not_lost():
    """The follow loop reads with 0.5 s timeouts (deadline and stop checks); a message whose bytes straddle several
    timeouts, and one in fragments, still arrive whole."""
    from magicpose_core.client.follow import close_events, follow, open_events

    start = json.dumps(event("execution_start", "p1")).encode()
    frames = (text_frame(start[:10], fin=False) + text_frame(start[10:], opcode=0x0)       # one message, 2 fragments
              + text_frame(json.dumps(event("execution_success", "p1")).encode()))

    def send(conn):
        conn.sendall(frames[:15])                                    # the 1st fragment and 3 bytes of the 2nd
        time.sleep(1.2)                                              # two read timeouts with a partial frame
        conn.sendall(frames[15:])

    ws = open_events(f"http://127.0.0.1:{raw_ws_server(send)}", "x", timeout=5)
    seen = []
    try:
        got = follow(ws, "p1", workflow(), seen.append, time.monotonic() + 10, lambda: None)
    finally:
        close_events(ws)
    assert got == ("success", {"prompt_id": "p1"}) and [e.type for e in seen] == ["execution_start",
                                                                                  "execution_success"]


# --- split render: the plan and the workflow edits (pure) -----------------------------------------------------

def split_workflow() -> dict:
    from support.workflows import load_api

    return load_api("video_dance_retarget")


def test_plan_ranges_cover_balance_and_align():
    from magicpose_core.client.split_plan import FrameRange, plan_ranges

    for total, servers, align, size in [(100, 2, 4, None), (10, 3, 1, None), (1800, 3, 4, None), (7, 2, 2, 2),
                                        (5, 4, 1, None), (33, 1, 4, 5)]:
        ranges = plan_ranges(total, servers, align, size)
        assert ranges[0].start == 0 and ranges[-1].stop == total
        assert all(a.stop == b.start for a, b in zip(ranges, ranges[1:]))          # contiguous, no overlap
        assert all(r.start % align == 0 for r in ranges)                          # batches line up
    assert len(plan_ranges(1800, 3, 4)) == 12                                      # 4 per server when long
    assert [len(r) for r in plan_ranges(20, 2, 1)] == [10, 10]                    # >= 16 frames: one per server
    assert plan_ranges(0, 2) == [] and FrameRange(4, 8).name == "000004-000007"
    with pytest.raises(mc.UsageError, match="at least 1"):
        plan_ranges(10, 2, 1, 0)


def test_analyse_reads_selection_fps_audio_and_batch():
    from magicpose_core.client.split_plan import analyse

    wf = split_workflow()
    mc.apply_sets(wf, ["Frames.skip_first_frames=3", "Frames.select_every_nth=2", "Sampler.frame_batch=3"])
    plan = analyse(wf)
    assert plan.selection.skip_first_frames == 3 and plan.selection.select_every_nth == 2
    assert (plan.fps, plan.audio, plan.align, plan.format) == ("selection", "selection", 3, "mp4")
    assert plan.sampler_ids == ("10",) and plan.output_id == "12"


@pytest.mark.parametrize("change,match", [
    ({"Sampler.shared_noise": False}, "shared_noise is off"),
    ({"Sampler.temporal_mode": "previous"}, "'previous' cannot be split over servers: each frame's anchor is the "
                                            "previous rendered frame.*one --server.*temporal_mode first"),
    ({"Sampler.temporal_mode": "both"}, "'both' cannot be split"),
    ({"Sampler.temporal_mode": "first", "Sampler.anchor_pose": ["9", 0]}, "'anchor_pose' is connected"),
    ({"Output.fps": ["6", 0]}, "its fps comes from"),
    ({"Sampler.frame_batch": ["8", 3]}, "frame_batch must be a number"),
])
def test_analyse_refuses_what_would_not_be_exact(change, match):
    from magicpose_core.client.split_plan import analyse

    wf = split_workflow()
    mc.apply_sets(wf, change)
    with pytest.raises(mc.UsageError, match=match):
        analyse(wf)


def test_analyse_refuses_other_outputs_and_samplers():
    from magicpose_core.client.split_plan import analyse

    wf = split_workflow()
    wf["12"]["class_type"] = "SaveImage"
    with pytest.raises(mc.UsageError, match="MagicPose Frames to Video"):
        analyse(wf)
    wf = split_workflow()
    wf["10"]["class_type"] = "KSampler"
    with pytest.raises(mc.UsageError, match="needs MagicPose Sampler"):
        analyse(wf)


def test_range_workflow_cuts_the_poses_and_writes_a_lossless_part():
    from magicpose_core.client.split_plan import FrameRange, analyse, range_workflow

    wf = split_workflow()
    plan = analyse(wf)
    part = range_workflow(wf, plan, FrameRange(8, 12), "abc")
    cut = part["10"]["inputs"]["poses"][0]
    assert part[cut]["class_type"] == "MagicPoseSelectFrames"
    assert part[cut]["inputs"]["images"] == wf["10"]["inputs"]["poses"]
    assert (part[cut]["inputs"]["skip_first_frames"], part[cut]["inputs"]["frame_load_cap"]) == (8, 4)
    out = part["12"]["inputs"]
    assert out["format"] == "mkv" and out["save_output"] is False and "audio" not in out
    assert out["filename_prefix"] == "MagicPose/parts/abc_000008-000011"
    assert wf["10"]["inputs"]["poses"] == ["9", 0] and "audio" in wf["12"]["inputs"]       # the original is untouched
    assert "anchor_pose" not in part["10"]["inputs"]                                        # temporal_mode off


def test_temporal_first_ranges_get_the_videos_first_frame_batch_as_anchor_pose():
    from magicpose_core.client.split_plan import FrameRange, analyse, range_workflow

    wf = split_workflow()
    mc.apply_sets(wf, {"Sampler.temporal_mode": "first", "Sampler.frame_batch": 3})
    plan = analyse(wf)
    assert plan.anchors == (("10", 3),)
    first = range_workflow(wf, plan, FrameRange(0, 3), "abc")
    assert "anchor_pose" not in first["10"]["inputs"]                   # frame 0 is in the range itself
    part = range_workflow(wf, plan, FrameRange(6, 9), "abc")
    anchor, cut = part["10"]["inputs"]["anchor_pose"][0], part["10"]["inputs"]["poses"][0]
    assert anchor != cut and anchor not in wf and cut not in wf
    a = part[anchor]["inputs"]
    assert part[anchor]["class_type"] == "MagicPoseSelectFrames" and a["images"] == ["9", 0]
    assert (a["skip_first_frames"], a["frame_load_cap"], a["select_every_nth"]) == (0, 3, 1)
    assert (part[cut]["inputs"]["skip_first_frames"], part[cut]["inputs"]["frame_load_cap"]) == (6, 3)
    mc.apply_sets(wf, {"Sampler.temporal_strength": 0.0})               # strength 0 is off: nothing to anchor
    assert analyse(wf).anchors == ()


def test_stop_gate_refuses_posts_after_the_stop_and_waits_for_those_in_flight():
    """No prompt slips past a stop: a registration after `set()` is refused, and `set()` returns only once the POSTs
    in flight have returned, with every prompt that may be on a server (a rejected one is not)."""
    import threading

    gate = mc.StopGate()
    assert gate.open_post("A", "p1") and gate.open_post("B", "p2") and gate.open_post("B", "p3")
    gate.close_post("B", "p3", queued=False)                      # rejected (HTTP 400): nothing queued
    gate.close_post("A", "p1", queued=True)
    gate.forget("A", "p1")                                        # it ended on its server
    got = {}
    stopper = threading.Thread(target=lambda: got.update(gate.set(wait=30)))
    stopper.start()
    stopper.join(0.3)
    assert stopper.is_alive() and gate.is_set()                  # waits for p2's POST in flight
    assert not gate.open_post("A", "p4")                          # nothing new after the stop began
    gate.close_post("B", "p2", queued=True)
    stopper.join(5)
    assert not stopper.is_alive() and got == {"B": {"p2"}}


def test_signal_handlers_raise_once_then_ignore_repeats_so_the_stop_is_not_cut_short(caplog):
    """The CLI's handlers: the first Ctrl-C raises KeyboardInterrupt (exit 130), the first SIGTERM `Terminated`;
    any later signal, Ctrl-C included, is logged and ignored while our prompts are being stopped; `restore` puts
    the previous handlers back."""
    import signal
    import time

    def deliver(signum: int) -> None:
        os.kill(os.getpid(), signum)
        time.sleep(0.05)                                          # the handler runs in this (main) thread

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    restore = mc.install_signal_handlers()
    try:
        with pytest.raises(KeyboardInterrupt) as first:
            deliver(signal.SIGINT)
        assert not isinstance(first.value, mc.Terminated)
        with caplog.at_level("WARNING", logger="MagicPose"):
            deliver(signal.SIGINT)                                # a second Ctrl-C during the stop: ignored
            deliver(signal.SIGTERM)
        assert "Ctrl-C again: still stopping our prompts" in caplog.text and "SIGTERM again" in caplog.text
    finally:
        restore()
    assert {s: signal.getsignal(s) for s in before} == before
    restore = mc.install_signal_handlers()
    try:
        with pytest.raises(mc.Terminated) as term:
            deliver(signal.SIGTERM)
        assert term.value.signum == signal.SIGTERM
    finally:
        restore()
