"""The pack in the real ComfyUI frontend (1.47, served by the test server), in Debian's headless Chromium over CDP.

- The web extension (``web/js/*.js``) is listed by ``/extensions``, loaded and registered, with its settings.
- Every MagicPose node type is registered in LiteGraph with exactly the widgets of its schema (``/object_info``)
  and has its help page (``web/docs/<node_id>.md``) where the frontend looks for it.
- Every UI workflow in ``workflows/*.json`` loads through ``app.loadGraphData``: no missing node type (the list
  the frontend's missing-nodes dialog gets), MagicPose nodes with their widgets and all their widget values,
  ``app.graphToPrompt`` exports them; a screenshot goes to ``.cache/test-logs/browser_<name>.png``.
- The frame player (``web/js/player.js``) on an ``executed`` message with three images served by ``/view``: the
  DOM widget appears, plays, pauses, its slider selects the frame the node's canvas preview draws (pixel check),
  it is never serialized, and it goes away for single images or when disabled in the settings.

Chromium comes from Debian (``apt-get install chromium`` when missing: ``support.cdp.ensure_chromium``); the
flags are those of ``docs/comfyui-integration.md`` §8. Chromium is ended by PID and its profile removed.
"""
from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support.cdp import Chromium, ensure_chromium
from support.figures import record
from support.server import PACK_DIR_NAME

pytestmark = [pytest.mark.comfy, pytest.mark.server, pytest.mark.browser, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
LOGS = ROOT / ".cache" / "test-logs"
WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))
WEB_JS = sorted((ROOT / "web" / "js").rglob("*.js"))
PLAYER_WIDGET = "magicpose_player"
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
CONTROL_WIDGET = "control_after_generate"  # added by the frontend after seed-like INT widgets

APP_READY = ("!!(window.app && window.app.canvas && window.app.extensionManager && window.LiteGraph"
             " && window.LiteGraph.registered_node_types && window.LiteGraph.registered_node_types.MagicPoseSample)")
PROBE = """
(() => {
  if (window.__mpProbe) return true;
  window.__mpProbe = { missing: null };
  app.registerExtension({
    name: "test.probe.missingNodes",
    afterConfigureGraph(missing) {
      window.__mpProbe.missing = (missing || []).map((m) => (typeof m === "string" ? m : m.type));
    },
  });
  return true;
})()
"""
EMPTY_GRAPH = {"last_node_id": 0, "last_link_id": 0, "nodes": [], "links": [], "groups": [], "config": {},
               "extra": {}, "version": 0.4}


def widget_inputs(node_info: dict) -> list[str]:
    """Names of the inputs the frontend shows as widgets, in the schema's order (forceInput ones are sockets)."""
    names = []
    for section in ("required", "optional"):
        specs = node_info["input"].get(section, {})
        for name in node_info.get("input_order", {}).get(section, list(specs)):
            spec = specs[name]
            kind = spec[0]
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if (isinstance(kind, list) or kind in WIDGET_TYPES) and not opts.get("forceInput"):
                names.append(name)
    return names


def shown_widgets(names: list[str]) -> list[str]:
    return [n for n in names if n != CONTROL_WIDGET]


@pytest.fixture(scope="module")
def object_info(server) -> dict:
    return server.get_json("/object_info")


@pytest.fixture(scope="module")
def magicpose_nodes(object_info) -> dict:
    nodes = {k: v for k, v in object_info.items() if k.startswith("MagicPose")}
    assert len(nodes) >= 6, sorted(nodes)
    return nodes


@pytest.fixture(scope="module")
def page(server):
    binary = ensure_chromium(LOGS / "chromium-apt.log")
    browser = Chromium(binary, LOGS / "chromium.log", window=(1600, 1000)).start()
    tab = None
    try:
        tab = browser.new_page()
        t0 = time.perf_counter()
        tab.navigate(server.url + "/")
        tab.wait_for(APP_READY, timeout=120)
        record("browser: ComfyUI frontend ready (s)", round(time.perf_counter() - t0, 2))
        tab.evaluate(PROBE)
        # screenshots of whole workflows are zoomed out: keep node text drawn (0 = no low-detail rendering)
        tab.evaluate("app.extensionManager.setting.set('LiteGraph.Canvas.MinFontSizeForLOD', 0).then(() => true)")
        yield tab
    finally:
        if tab is not None:
            tab.close()
        browser.stop()
    assert browser.proc.poll() is not None, "Chromium is still running"


def own_errors(page) -> list[str]:
    """Console errors and uncaught exceptions that come from the pack's web files."""
    # the frontend's own missing-model check probes each workflow model URL; this loopback server's CSP blocks the
    # probe of the README link (the pack's URL contains "magicpose"): that is the frontend's request, not our code
    return [e.text for e in page.errors() if re.search(r"magicpose", e.text, re.I)
            and not ("Content Security Policy" in e.text and "missingModelDownload" in e.text)]


def load_graph(page, graph: dict, name: str) -> None:
    page.evaluate(f"window.__mpProbe.missing = null; "
                  f"app.loadGraphData({json.dumps(graph)}, true, true, {json.dumps(name)}).then(() => true)",
                  timeout=60)
    page.wait_for("window.__mpProbe.missing !== null", timeout=30)


def screenshot(page, name: str) -> Path:
    page.evaluate("app.extensionManager.command.execute('Comfy.Canvas.FitView').then(() => true)")
    page.evaluate("new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(() => setTimeout(r, 300))))"
                  ".then(() => true)")
    path = page.screenshot(LOGS / f"browser_{name}.png")
    with Image.open(path) as im:
        pixels = np.asarray(im.convert("RGB"))
    assert pixels.std() > 5, f"{path} is blank"
    return path


# --- the web extension -------------------------------------------------------------------------------------------
def test_web_extension_is_served_and_registered(server, page):
    assert WEB_JS, "web/js/ has no .js file"
    listed = set(server.get_json("/extensions"))
    names = []
    for js in WEB_JS:
        url = f"/extensions/{PACK_DIR_NAME}/{js.relative_to(ROOT / 'web').as_posix()}"
        assert url in listed, f"{url} not in /extensions"
        src = js.read_text()
        assert "../../../scripts/app.js" in src
        found = re.findall(r"""registerExtension\(\s*\{\s*name:\s*["']([^"']+)["']""", src)
        assert found, f"{js.name}: no app.registerExtension({{ name: ... }})"
        names += found
    assert all(n.startswith("magicpose.") for n in names), names
    registered = page.evaluate("app.extensions.map((e) => e.name)")
    for name in names:
        assert name in registered, f"extension {name} not registered (loaded: {registered[-12:]})"
    settings = page.evaluate("""(() => { const s = app.extensionManager.setting;
        return { enabled: s.get('MagicPose.Player.Enabled'), autoplay: s.get('MagicPose.Player.Autoplay'),
                 fps: s.get('MagicPose.Player.Fps') }; })()""")
    assert settings == {"enabled": True, "autoplay": True, "fps": 8}
    assert own_errors(page) == []


def test_node_types_have_their_schema_widgets_and_help(page, magicpose_nodes):
    for node_id, info in magicpose_nodes.items():
        got = page.evaluate(f"""(() => {{
            const n = LiteGraph.createNode({json.dumps(node_id)});
            return n && {{ title: n.title, widgets: (n.widgets || []).map((w) => w.name),
                           inputs: (n.inputs || []).map((i) => i.name) }};
        }})()""")
        assert got, f"{node_id} is not registered in LiteGraph"
        assert got["title"] == info["display_name"]
        assert shown_widgets(got["widgets"]) == widget_inputs(info), node_id
        assert PLAYER_WIDGET not in got["widgets"]   # only after a run with several images
        for section in ("required", "optional"):
            for name, spec in info["input"].get(section, {}).items():
                if len(spec) > 1 and isinstance(spec[1], dict) and spec[1].get("control_after_generate"):
                    i = got["widgets"].index(name)
                    assert got["widgets"][i + 1] == CONTROL_WIDGET, (node_id, name)
        # the help page, where the frontend's node library looks for it (nodeHelpService: /extensions/<pack>/docs)
        doc = page.evaluate(f"""fetch(app.api.fileURL('/extensions/{PACK_DIR_NAME}/docs/{node_id}.md'))
            .then(async (r) => ({{ status: r.status, type: r.headers.get('content-type'), text: await r.text() }}))""")
        assert doc["status"] == 200, f"web/docs/{node_id}.md: {doc['status']}"
        assert "text/html" not in (doc["type"] or "")
        assert doc["text"].splitlines()[0] == f"# {info['display_name']}", node_id
        assert len(doc["text"]) > 300


# --- UI workflows ------------------------------------------------------------------------------------------------
def _workflow_params():
    if not WORKFLOWS:
        return [pytest.param(None, id="no-workflows")]
    return [pytest.param(p, id=p.stem) for p in WORKFLOWS]


@pytest.mark.parametrize("path", _workflow_params())
def test_ui_workflow_loads_in_the_frontend(page, magicpose_nodes, path):
    assert path is not None, "workflows/ has no *.json UI workflow: every pack workflow must load in the browser"
    graph = json.loads(path.read_text())
    assert isinstance(graph.get("nodes"), list) and graph["nodes"], f"{path.name} is not a UI-format workflow"
    json_nodes = list(graph["nodes"])
    for sub in graph.get("definitions", {}).get("subgraphs", []):
        json_nodes += sub.get("nodes", [])

    unregistered = page.evaluate(f"""{json.dumps(sorted({n['type'] for n in json_nodes}))}
        .filter((t) => !(t in LiteGraph.registered_node_types))""")
    assert unregistered == [], f"{path.name}: node types unknown to the frontend: {unregistered}"

    t0 = time.perf_counter()
    load_graph(page, graph, path.name)
    record(f"browser: load {path.name} (s)", round(time.perf_counter() - t0, 2))
    missing = page.evaluate("window.__mpProbe.missing")
    assert missing == [], f"{path.name}: the frontend reports missing node types {missing}"

    loaded = page.evaluate("""app.graph.nodes.map((n) => ({
        id: n.id, type: n.type, mode: n.mode, registered: n.type in LiteGraph.registered_node_types,
        widgets: (n.widgets || []).map((w) => w.name),
        serialized: (n.widgets || []).filter((w) => w.serialize !== false).length,
        values: (n.widgets || []).filter((w) => w.serialize !== false).map((w) => w.value) }))""")
    assert len(loaded) == len(graph["nodes"]), f"{path.name}: {len(graph['nodes'])} nodes in the file, " \
                                               f"{len(loaded)} in the graph"
    bad = [(n["id"], n["type"]) for n in loaded if not n["registered"]]
    assert bad == [], f"{path.name}: nodes not created properly: {bad}"

    by_id = {str(n["id"]): n for n in graph["nodes"]}
    ours = [n for n in loaded if n["type"] in magicpose_nodes]
    assert ours, f"{path.name} has no MagicPose node"
    for n in ours:
        assert shown_widgets(n["widgets"]) == widget_inputs(magicpose_nodes[n["type"]]), (path.name, n["type"])
        values = by_id[str(n["id"])].get("widgets_values")
        if isinstance(values, list):
            assert len(values) == n["serialized"], (
                f"{path.name}: node {n['id']} ({n['type']}) stores {len(values)} widget values, the node has "
                f"{n['serialized']} widgets: the workflow is stale against the schema")
            assert n["values"] == values, (path.name, n["id"], n["type"])

    prompt = page.evaluate("app.graphToPrompt().then((p) => p.output)")
    for n in ours:
        if n["mode"] == 0:
            assert prompt.get(str(n["id"]), {}).get("class_type") == n["type"], (path.name, n["id"])
    for twin in (path.parent / "api" / path.name, path.parent / "api" / f"{path.stem}_api.json"):
        if twin.is_file():   # the API-format twin must be the same graph
            api = json.loads(twin.read_text())
            assert sorted(v["class_type"] for v in prompt.values()) == \
                sorted(v["class_type"] for v in api.values()), f"{path.name} and api/{twin.name}: different graphs"

    shot = screenshot(page, path.stem)
    assert shot.stat().st_size > 10_000
    assert own_errors(page) == []


# --- the frame player --------------------------------------------------------------------------------------------
COLOURS = [(220, 30, 30), (30, 200, 40), (40, 60, 230)]


@pytest.fixture(scope="module")
def uploaded_frames(server, tmp_path_factory) -> list[dict]:
    folder = tmp_path_factory.mktemp("player_frames")
    frames = []
    for i, colour in enumerate(COLOURS):
        p = folder / f"magicpose_player_{i}.png"
        Image.fromarray(np.full((96, 64, 3), colour, np.uint8)).save(p)
        name = server.upload_image(p, subfolder="magicpose_player_test")
        sub, _, filename = name.rpartition("/")
        frames.append({"filename": filename, "subfolder": sub, "type": "input"})
    return frames


def _executed(page, node_var: str, images: list[dict]) -> None:
    detail = {"output": {"images": images}, "prompt_id": "browser-test"}
    page.evaluate(f"""(() => {{ const id = String({node_var}.id);
        app.api.dispatchCustomEvent('executed', {{ ...{json.dumps(detail)}, node: id, display_node: id }});
        app.canvas.setDirty(true, true);  // as the 'executing' message that follows in a real run does
        return true; }})()""")


PREVIEW_PIXEL = """(() => {
  // centre of the node's canvas image preview, in canvas pixels
  const n = window.__mpNode;
  const w = n.widgets.find((w) => w.name === '$$canvas-image-preview');
  if (!w || !w.computedHeight) return null;
  const ds = app.canvas.ds, dpr = window.devicePixelRatio || 1;
  const x = (n.pos[0] + n.size[0] / 2 + ds.offset[0]) * ds.scale * dpr;
  const y = (n.pos[1] + w.y + w.computedHeight / 2 - 8 + ds.offset[1]) * ds.scale * dpr;
  const d = app.canvas.canvas.getContext('2d').getImageData(Math.round(x), Math.round(y), 1, 1).data;
  return [d[0], d[1], d[2]];
})()"""
NEXT_FRAMES = "new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(() => setTimeout(r, 150))))" \
              ".then(() => true)"


def _add_node(page, node_type: str) -> None:
    """A new node in view at scale 1 (the canvas preview loads a node's images when it draws the node)."""
    page.evaluate(f"""(() => {{ const n = LiteGraph.createNode({json.dumps(node_type)}); n.pos = [80, 40];
        app.graph.add(n); window.__mpNode = n;
        app.canvas.ds.scale = 1; app.canvas.ds.offset = [140, 70]; app.canvas.setDirty(true, true);
        return true; }})()""")


def _player(page) -> dict | None:
    return page.evaluate(f"""(() => {{
        const n = window.__mpNode;
        const w = (n.widgets || []).find((w) => w.name === {json.dumps(PLAYER_WIDGET)});
        if (!w) return null;
        const q = (s) => w.element.querySelector(s);
        return {{ connected: w.element.isConnected, visible: w.element.getBoundingClientRect().height > 10,
                  max: Number(q('input[type=range]').max), slider: Number(q('input[type=range]').value),
                  label: q('.magicpose-player-label').textContent, playing: q('button').getAttribute('aria-pressed'),
                  imageIndex: n.imageIndex, imgs: (n.imgs || []).length, index: w.value && w.value.index }};
    }})()""")


def _wait_pixel(page, colour, timeout: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout
    px = None
    while time.monotonic() < deadline:
        page.evaluate("app.canvas.setDirty(true, true), true")
        page.evaluate(NEXT_FRAMES)
        px = page.evaluate(PREVIEW_PIXEL)
        if px is not None and int(np.abs(np.array(px) - colour).max()) <= 12:
            return px
    raise AssertionError(f"the node preview shows {px}, expected the frame colour {colour}")


def test_frame_player_plays_and_selects_frames(page, server, magicpose_nodes, uploaded_frames):
    load_graph(page, EMPTY_GRAPH, "player-test")
    _add_node(page, "MagicPoseExtractPose")
    assert _player(page) is None

    _executed(page, "window.__mpNode", uploaded_frames)
    page.wait_for(f"(window.__mpNode.imgs || []).length === 3 && "
                  f"window.__mpNode.widgets.some((w) => w.name === '{PLAYER_WIDGET}')", timeout=20)
    st = _player(page)
    assert st["connected"] and st["visible"], st
    assert st["max"] == 2 and st["playing"] == "true", st   # autoplay is on by default
    sizes = page.evaluate("window.__mpNode.imgs.map((i) => [i.naturalWidth, i.naturalHeight])")
    assert sizes == [[64, 96]] * 3                          # the native preview got our frames from /view

    # playing: with 25 fps every frame shows up within a second, in order
    page.evaluate(f"""(() => {{ const w = window.__mpNode.widgets.find((w) => w.name === '{PLAYER_WIDGET}');
        const f = w.element.querySelector('input[type=number]'); f.value = '25';
        f.dispatchEvent(new Event('change')); return true; }})()""")
    seen = page.evaluate("""(async () => { const out = [];
        for (let i = 0; i < 40; i++) {
          await new Promise((r) => setTimeout(r, 25)); out.push(window.__mpNode.imageIndex);
        }
        return out; })()""")
    while seen and seen[0] is None:   # the preview had just loaded its images (it resets the selection then)
        seen.pop(0)
    assert set(seen) == {0, 1, 2}, seen
    steps = {(b - a) % 3 for a, b in zip(seen, seen[1:]) if a != b}
    assert steps == {1}, seen

    # pause: the frame stays
    page.evaluate(f"""(() => {{ window.__mpNode.widgets.find((w) => w.name === '{PLAYER_WIDGET}')
        .element.querySelector('button').click(); return true; }})()""")
    st = _player(page)
    assert st["playing"] == "false"
    frozen = page.evaluate("""(async () => { const a = window.__mpNode.imageIndex;
        await new Promise((r) => setTimeout(r, 300)); return [a, window.__mpNode.imageIndex]; })()""")
    assert frozen[0] == frozen[1], frozen

    # the slider selects the frame the node's canvas preview draws
    for index in (2, 0, 1):
        page.evaluate(f"""(() => {{ const s = window.__mpNode.widgets.find((w) => w.name === '{PLAYER_WIDGET}')
            .element.querySelector('input[type=range]'); s.value = '{index}';
            s.dispatchEvent(new Event('input')); return true; }})()""")
        st = _player(page)
        assert st["imageIndex"] == index and st["slider"] == index and st["label"] == f"{index + 1} / 3", st
        _wait_pixel(page, COLOURS[index])
    page.screenshot(LOGS / "browser_player.png")

    # never serialized: not in the workflow's widgets_values, not an input of the prompt
    ser = page.evaluate("window.__mpNode.serialize().widgets_values.length")
    assert ser == len(widget_inputs(magicpose_nodes["MagicPoseExtractPose"]))
    prompt = page.evaluate("app.graphToPrompt().then((p) => p.output)")
    node_prompt = next(v for v in prompt.values() if v["class_type"] == "MagicPoseExtractPose")
    assert PLAYER_WIDGET not in node_prompt["inputs"]

    # a single image: no player; disabled in the settings: no player
    _executed(page, "window.__mpNode", uploaded_frames[:1])
    assert _player(page) is None
    page.evaluate("app.extensionManager.setting.set('MagicPose.Player.Enabled', false).then(() => true)")
    try:
        _executed(page, "window.__mpNode", uploaded_frames)
        assert _player(page) is None
    finally:
        page.evaluate("app.extensionManager.setting.set('MagicPose.Player.Enabled', true).then(() => true)")
    _executed(page, "window.__mpNode", uploaded_frames)
    st = _player(page)
    assert st is not None and st["playing"] == "true", st

    # removing the node removes the widget's DOM and stops playback (the removed node's frame stays put)
    after = page.evaluate("""(async () => { const n = window.__mpNode;
        const el = n.widgets.find((w) => w.name === 'magicpose_player').element;
        await new Promise((r) => setTimeout(r, 200));
        app.graph.remove(n);
        const out = [];
        for (let i = 0; i < 8; i++) { out.push(n.imageIndex); await new Promise((r) => setTimeout(r, 50)); }
        return { connected: el.isConnected, indices: out }; })()""")
    assert after["connected"] is False
    assert len(set(after["indices"])) == 1, after
    assert own_errors(page) == []


def test_player_leaves_other_node_types_alone(page, uploaded_frames):
    load_graph(page, EMPTY_GRAPH, "player-scope-test")
    _add_node(page, "PreviewImage")
    _executed(page, "window.__mpNode", uploaded_frames)
    page.wait_for("(window.__mpNode.imgs || []).length === 3", timeout=20)
    assert _player(page) is None


# --- template browser ---------------------------------------------------------------------------------------------
# drawn thumbnails of our size (scripts/build_thumbnails.py: 480x300; the frontend may load them through blob URLs)
THUMBS_DRAWN = """[...document.querySelectorAll('img')].filter(
    (i) => i.complete && i.naturalWidth === 480 && i.naturalHeight === 300).length"""


def test_template_browser_shows_our_workflows_with_thumbnails(server, page):
    names = sorted(p.stem for p in WORKFLOWS)
    listed = server.get_json("/api/workflow_templates")
    assert sorted(listed[PACK_DIR_NAME]) == names
    for name in names:
        status, body = server.request("GET", f"/api/workflow_templates/{PACK_DIR_NAME}/{name}.jpg")
        assert status == 200 and body[:3] == b"\xff\xd8\xff", name
        with Image.open(io.BytesIO(body)) as im:
            assert im.format == "JPEG" and im.width >= 256, (name, im.size)
    page.evaluate("app.extensionManager.command.execute('Comfy.BrowseTemplates').then(() => true)")
    page.wait_for(f"document.body.innerText.includes({json.dumps(PACK_DIR_NAME)})", timeout=60)
    # the pack's own category under "Extensions" (the frontend names it after the custom_nodes folder)
    page.evaluate(f"""(() => {{
        const el = [...document.querySelectorAll('*')].filter(
            (e) => e.children.length === 0 && e.textContent.trim() === {json.dumps(PACK_DIR_NAME)});
        el[el.length - 1].click(); return true; }})()""")
    page.wait_for(f"document.body.innerText.includes('Showing {len(names)} of {len(names)} templates')", timeout=60)
    assert page.wait_for(f"{THUMBS_DRAWN} >= {len(names)}", timeout=60)
    text = page.evaluate("document.body.innerText")
    for name in names:
        assert name in text and name.replace("_", " ") in text     # title and description: the file name
    page.evaluate("new Promise((r) => setTimeout(r, 500)).then(() => true)")
    path = page.screenshot(LOGS / "browser_template_browser.png")
    with Image.open(path) as im:
        assert np.asarray(im.convert("RGB")).std() > 5
    page.evaluate("document.dispatchEvent(new KeyboardEvent('keydown', {key: 'Escape', bubbles: true})) || true")
    assert own_errors(page) == []
