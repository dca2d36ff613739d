"""magicpose_core.client and magicpose_core.client.websocket without a server: workflow filling by title, --set parsing
and type coercion, readable node_errors, output naming, CLI exit codes, the progress display, and RFC 6455
framing over a socket pair (fragments, ping/pong, close, partial frames across timeouts).

The node_errors / execution_error dicts below have the layout ComfyUI 0.30.0 `execution.py` produces
(`validate_inputs`, `validate_prompt`, `handle_execution_error`); tests/e2e/test_client_server.py checks the
same formatting against a real server.
"""
from __future__ import annotations

import ast
import io
import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from magicpose_core.client import core as mc
from magicpose_core.client import websocket as mws

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
    bars = [ln for ln in lines if "/48" in ln]
    assert lines[0] == "started prompt p1" and lines[1] == 'running node 3 "Sampler" (MagicPoseSample)'
    assert bars[0].endswith("1/48   2%") and bars[-1].endswith("48/48 100%") and "[" + "#" * 24 + "]" in bars[-1]
    assert 10 <= len(bars) <= 12                          # first tick, every 10 %, last tick: not 48 lines
    assert lines[-1] == 'running node 4 "Output" (SaveImage)'


def test_progress_redraws_one_line_on_a_terminal():
    buf = TTY()
    feed(mc.ProgressPrinter(buf), 5)
    text = buf.getvalue()
    assert text.count("\r") == 5 and "5/5 100%\x1b[K\n" in text
    assert text.endswith('running node 4 "Output" (SaveImage)\n')


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


def test_client_modules_import_only_the_standard_library():
    """The client must run where only Python and this package are installed; merging a split render needs PyAV,
    which magicpose_core.media.video imports, and only inside the functions that merge or probe."""
    allowed = {"websocket", "core", "split", "media.frame_selection", "frame_selection"}
    for name in ("client/__init__.py", "client/__main__.py", "client/core.py", "client/websocket.py",
                 "client/split.py", "media/frame_selection.py"):
        tree = ast.parse((ROOT / "magicpose_core" / name).read_text())
        top = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mods = [] if node.level else [node.module.split(".")[0]]
                lazy_ok = node.module == "media.video" and id(node) not in top
                assert not node.level or node.module in allowed or lazy_ok, f"{name}: relative import of {node.module}"
            else:
                continue
            assert all(m in sys.stdlib_module_names or m == "__future__" for m in mods), f"{name}: {mods}"


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


# --- RFC 6455 framing -------------------------------------------------------------------------------------

def test_accept_key_matches_the_rfc_example():
    # RFC 6455 §1.3 worked example.
    assert mws.accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@given(st.binary(max_size=70000), st.binary(min_size=4, max_size=4), st.sampled_from([0x1, 0x2, 0x9]))
def test_frames_round_trip(payload, key, opcode):
    for mask in (None, key):
        raw = mws.encode_frame(opcode, payload, mask=mask)
        fin, op, got, masked, used = mws.decode_frame(raw + b"trailing")
        assert (fin, op, got, masked, used) == (True, opcode, payload, mask is not None, len(raw))
        assert mws.decode_frame(raw[:-1] if payload or mask else raw[:1]) is None     # incomplete


@pytest.mark.parametrize("n,header", [(125, 2), (126, 4), (65535, 4), (65536, 10)])
def test_frame_length_encodings(n, header):
    assert len(mws.encode_frame(0x2, b"x" * n)) == n + header                # RFC 6455 §5.2 payload length


def test_mask_is_its_own_inverse_and_changes_the_bytes():
    data, key = bytes(range(256)) * 3, b"\x01\x02\x03\x04"
    masked = mws.apply_mask(data, key)
    assert masked != data and mws.apply_mask(masked, key) == data
    assert masked[:4] == bytes(d ^ k for d, k in zip(data[:4], key))


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    ws = mws.WebSocket(a)
    yield ws, b
    a.close()
    b.close()


def read_client_frame(sock: socket.socket) -> tuple[int, bytes, bool]:
    buf = b""
    while (f := mws.decode_frame(buf)) is None:
        buf += sock.recv(65536)
    fin, op, payload, masked, _ = f
    return op, payload, masked


def test_fragments_with_a_ping_in_between_are_joined_and_the_ping_answered(pair):
    ws, server = pair
    server.sendall(mws.encode_frame(mws.OP_TEXT, b'{"type": "pro', fin=False)
                   + mws.encode_frame(mws.OP_PING, b"hb")
                   + mws.encode_frame(mws.OP_CONTINUATION, b'gress", ', fin=False)
                   + mws.encode_frame(mws.OP_CONTINUATION, b'"data": {}}'))
    msg = ws.recv(timeout=5)
    assert msg.is_text and json.loads(msg.text) == {"type": "progress", "data": {}}
    assert read_client_frame(server) == (mws.OP_PONG, b"hb", True)       # client frames are masked


def test_partial_frame_survives_a_timeout(pair):
    ws, server = pair
    frame = mws.encode_frame(mws.OP_BINARY, b"p" * 1000)
    server.sendall(frame[:300])
    with pytest.raises(TimeoutError):
        ws.recv(timeout=0.2)
    server.sendall(frame[300:])
    msg = ws.recv(timeout=5)
    assert not msg.is_text and msg.data == b"p" * 1000


def test_close_frame_is_echoed_and_raised(pair):
    ws, server = pair
    server.sendall(mws.encode_frame(mws.OP_CLOSE, struct.pack("!H", 1001) + b"going away"))
    with pytest.raises(mws.WebSocketClosed) as e:
        ws.recv(timeout=5)
    assert (e.value.code, e.value.reason) == (1001, "going away")
    assert read_client_frame(server) == (mws.OP_CLOSE, struct.pack("!H", 1001), True)


def test_lost_connection_and_masked_server_frames_are_errors(pair):
    ws, server = pair
    server.sendall(mws.encode_frame(mws.OP_TEXT, b"hi", mask=b"abcd"))
    with pytest.raises(mws.WebSocketError, match="masked"):
        ws.recv(timeout=5)
    server.close()
    with pytest.raises(mws.WebSocketClosed) as e:
        ws.recv(timeout=5)
    assert e.value.code == 1006


def handshake_server(reply: bytes) -> tuple[int, threading.Thread, list[bytes]]:
    """A one-shot TCP server that records the request and answers `reply` (the key placeholder filled in)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    seen: list[bytes] = []

    def serve():
        conn, _ = srv.accept()
        with conn, srv:
            req = b""
            while b"\r\n\r\n" not in req:
                req += conn.recv(4096)
            seen.append(req)
            key = [ln.split(b": ", 1)[1] for ln in req.split(b"\r\n") if ln.lower().startswith(b"sec-websocket-key")]
            conn.sendall(reply.replace(b"{accept}", mws.accept_key(key[0].decode()).encode())
                         + mws.encode_frame(mws.OP_TEXT, b'{"type": "status"}'))
            conn.recv(100)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return srv.getsockname()[1], t, seen


def test_handshake_checks_accept_and_keeps_bytes_sent_with_it():
    port, t, seen = handshake_server(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n")
    with mws.WebSocket.connect(f"ws://127.0.0.1:{port}/ws?clientId=abc", timeout=5) as ws:
        assert ws.recv(timeout=5).text == '{"type": "status"}'             # arrived in the same TCP read
    t.join(5)
    assert seen[0].startswith(b"GET /ws?clientId=abc HTTP/1.1\r\n") and b"Sec-WebSocket-Version: 13" in seen[0]


@pytest.mark.parametrize("reply,pattern", [
    (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", "refused the websocket upgrade"),
    (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: AAAA\r\n\r\n",
     "wrong Sec-WebSocket-Accept"),
])
def test_handshake_failures(reply, pattern):
    port, t, _ = handshake_server(reply)
    with pytest.raises(mws.WebSocketError, match=pattern):
        mws.WebSocket.connect(f"ws://127.0.0.1:{port}/ws", timeout=5)
    t.join(5)


# --- split render: the plan and the workflow edits (pure) -----------------------------------------------------

def split_workflow() -> dict:
    from support.workflows import load_api

    return load_api("video_dance_retarget")


def test_plan_ranges_cover_balance_and_align():
    from magicpose_core.client.split import FrameRange, plan_ranges

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
    from magicpose_core.client.split import analyse

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
    from magicpose_core.client.split import analyse

    wf = split_workflow()
    mc.apply_sets(wf, change)
    with pytest.raises(mc.UsageError, match=match):
        analyse(wf)


def test_analyse_refuses_other_outputs_and_samplers():
    from magicpose_core.client.split import analyse

    wf = split_workflow()
    wf["12"]["class_type"] = "SaveImage"
    with pytest.raises(mc.UsageError, match="MagicPose Frames to Video"):
        analyse(wf)
    wf = split_workflow()
    wf["10"]["class_type"] = "KSampler"
    with pytest.raises(mc.UsageError, match="needs MagicPose Sampler"):
        analyse(wf)


def test_range_workflow_cuts_the_poses_and_writes_a_lossless_part():
    from magicpose_core.client.split import FrameRange, analyse, range_workflow

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
    from magicpose_core.client.split import FrameRange, analyse, range_workflow

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
