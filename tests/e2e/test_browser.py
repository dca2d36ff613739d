"""The pack in the real ComfyUI frontend, in Debian's headless Chromium over CDP.

Every test runs against two frontends: the one ComfyUI 0.30.0's requirements install (1.47.12, served by the session
test server) and the current one (1.58.1, unpacked by ``scripts/env.sh`` into ``.cache/frontend-<version>/`` and
served by a server of this module with ``--front-end-root``; ``support.frontend``). The tests whose subject the node
renderer draws also run on the current frontend with Nodes 2.0 (the Vue node renderer, setting
``Comfy.VueNodes.Enabled``; off by default in both versions, which the classic runs check) switched on.

- The web extension (``web/js/*.js``) is listed by ``/extensions``, loaded and registered, with its settings.
- Every MagicPose node type is registered in LiteGraph with exactly the widgets of its schema (``/object_info``)
  and has its help page (``web/docs/<node_id>.md``) where the frontend looks for it; with Nodes 2.0 each node is
  drawn as a Vue node with its title and widgets.
- Every UI workflow in ``workflows/*.json`` loads through ``app.loadGraphData``: no missing node type (the list
  the frontend's missing-nodes dialog gets), MagicPose nodes with their widgets and all their widget values,
  ``app.graphToPrompt`` exports them; a screenshot goes to ``.cache/test-logs/browser_<name>_<variant>.png``.
- The frame player (``web/js/player.js``) on an ``executed`` message with three images served by ``/view``: the
  DOM widget appears, plays, pauses, its slider selects the frame the user sees (classic: the node's canvas
  preview, pixel check; Nodes 2.0: the player's own frame view, screenshot pixel check), it is never serialized,
  and it goes away for single images or when disabled in the settings.
- The template browser lists the UI workflows of ``workflows/`` (not the API twins) with their thumbnails.

Chromium comes from Debian (``apt-get install chromium`` when missing: ``support.cdp.ensure_chromium``); the
flags are those of ``docs/comfyui-integration.md`` §8. Chromium is ended by PID and its profile removed.
"""
from __future__ import annotations

import io
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support import frontend
from support.cdp import Chromium, Page, ensure_chromium
from support.figures import record
from support.frontend import NODES2_SETTING, Frontend
from support.server import PACK_DIR_NAME, ComfyServer

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


def _input_options(node_info: dict, name: str) -> dict:
    for section in ("required", "optional"):
        spec = node_info["input"].get(section, {}).get(name)
        if spec is not None:
            return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    raise KeyError(name)


def shown_widgets(names: list[str]) -> list[str]:
    return [n for n in names if n != CONTROL_WIDGET]


# --- frontends and renderers ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    frontend: Frontend
    nodes2: bool                 # Nodes 2.0: the Vue node renderer (setting Comfy.VueNodes.Enabled), off by default

    @property
    def id(self) -> str:
        return f"fe{self.frontend.version}" + ("-nodes2" if self.nodes2 else "")


FRONTENDS = [frontend.installed(), frontend.current()]
# Nodes 2.0 on the current frontend only (1.47.12 has it too and passed the same checks; kept out for test time)
VARIANTS = {v.id: v for v in (Variant(FRONTENDS[0], False), Variant(FRONTENDS[1], False), Variant(FRONTENDS[1], True))}
# what the renderer changes: how our nodes, their widgets, the frame player and the workflows are drawn (the rest,
# the template browser and the player's scope, does not depend on it and runs with the default renderer)
NODES2_TESTS = {"test_web_extension_is_served_and_registered", "test_node_types_have_their_schema_widgets_and_help",
                "test_ui_workflow_loads_in_the_frontend", "test_frame_player_plays_and_selects_frames"}


def pytest_generate_tests(metafunc):
    if "ui" in metafunc.fixturenames:
        ids = [k for k, v in VARIANTS.items() if not v.nodes2 or metafunc.definition.originalname in NODES2_TESTS]
        metafunc.parametrize("ui", ids, indirect=True, scope="module")


@dataclass
class UI:
    server: ComfyServer
    page: Page
    variant: Variant


@pytest.fixture(scope="module")
def own_servers(comfy_root, factory_files, tmp_path_factory):
    """Servers for frontends other than ComfyUI's installed one (the session server serves that), one at a time."""
    running: dict[str, ComfyServer] = {}

    def get(fe: Frontend) -> ComfyServer:
        if fe.version not in running:
            for old in running.values():
                old.stop()
            running.clear()
            base = tmp_path_factory.mktemp(f"server_fe{fe.version}")
            srv = ComfyServer(comfy_root, base, LOGS / f"server-fe{fe.version}-{os.getpid()}.log",
                              extra_args=fe.server_args)
            srv.prepare_base({"checkpoints": [factory_files["sd15"]], "magicpose": [factory_files["magicpose"]]})
            srv.start()
            srv.post_json("/settings/Comfy.TutorialCompleted", True)
            running[fe.version] = srv
        return running[fe.version]

    yield get
    for srv in running.values():
        srv.stop()


@pytest.fixture(scope="module")
def ui(request, own_servers) -> UI:
    variant = VARIANTS[request.param]
    fe = variant.frontend.require()
    server = request.getfixturevalue("server") if fe.root is None else own_servers(fe)
    stored = server.get_json("/settings").get(NODES2_SETTING)
    if variant.nodes2 or stored is not None:     # unset: the frontend's default, checked below
        server.post_json(f"/settings/{NODES2_SETTING}", variant.nodes2)
    binary = ensure_chromium(LOGS / "chromium-apt.log")
    browser = Chromium(binary, LOGS / "chromium.log", window=(1600, 1000)).start()
    tab = None
    try:
        tab = browser.new_page()
        t0 = time.perf_counter()
        tab.navigate(server.url + "/")
        tab.wait_for(APP_READY, timeout=120)
        record(f"browser {variant.id}: ComfyUI frontend ready (s)", round(time.perf_counter() - t0, 2))
        served = tab.evaluate("window.__COMFYUI_FRONTEND_VERSION__")
        assert served == fe.version or fe.version == "installed", f"served frontend {served}, expected {fe}"
        renderer = tab.evaluate("!!LiteGraph.vueNodesMode")
        if stored is None and not variant.nodes2:
            record(f"browser: Nodes 2.0 on by default in frontend {served}", renderer)
        assert renderer is variant.nodes2, f"frontend {served}: Nodes 2.0 is {'on' if renderer else 'off'}"
        tab.evaluate(PROBE)
        # screenshots of whole workflows are zoomed out: keep node text drawn (0 = no low-detail rendering)
        tab.evaluate("app.extensionManager.setting.set('LiteGraph.Canvas.MinFontSizeForLOD', 0).then(() => true)")
        yield UI(server, tab, variant)
    finally:
        if tab is not None:
            tab.close()
        browser.stop()
        if variant.nodes2:
            server.post_json(f"/settings/{NODES2_SETTING}", False)
    assert browser.proc.poll() is not None, "Chromium is still running"


@pytest.fixture(scope="module")
def page(ui) -> Page:
    return ui.page


@pytest.fixture(autouse=True)
def console_per_test(page):
    """Each test answers for the console errors of its own actions (and the first one for the page load)."""
    yield
    page.console.clear()


@pytest.fixture(scope="module")
def object_info(ui) -> dict:
    return ui.server.get_json("/object_info")


@pytest.fixture(scope="module")
def magicpose_nodes(object_info) -> dict:
    nodes = {k: v for k, v in object_info.items() if k.startswith("MagicPose")}
    assert len(nodes) >= 6, sorted(nodes)
    return nodes


# The frontend's own missing-model check probes the `properties.models` URLs of a loaded workflow (ours link the
# README, whose URL contains "magicpose"); the server's Content Security Policy blocks those requests in both
# frontend versions. They come from the frontend's assets, not from our code.
FRONTEND_CSP = re.compile(r"Content Security Policy.*\(https?://127\.0\.0\.1:\d+/assets/[^/()]+\.js\)$", re.S)


def own_errors(page) -> list[str]:
    """Console errors and uncaught exceptions that come from the pack's web files."""
    return [e.text for e in page.errors() if re.search(r"magicpose", e.text, re.I) and not FRONTEND_CSP.search(e.text)]


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
def test_web_extension_is_served_and_registered(ui, page):
    assert WEB_JS, "web/js/ has no .js file"
    listed = set(ui.server.get_json("/extensions"))
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


def test_node_types_have_their_schema_widgets_and_help(ui, page, magicpose_nodes):
    no_help = []
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
        # the help page, where the node help of both frontend versions looks for it (NodeHelpService:
        # /extensions/<custom_nodes folder of python_module>/docs/<id>/<locale>.md, then .../docs/<id>.md)
        assert info["python_module"] == f"custom_nodes.{PACK_DIR_NAME}", info["python_module"]
        doc = page.evaluate(f"""fetch(app.api.fileURL('/extensions/{PACK_DIR_NAME}/docs/{node_id}.md'))
            .then(async (r) => ({{ status: r.status, type: r.headers.get('content-type'), text: await r.text() }}))""")
        if doc["status"] != 200 or "text/html" in (doc["type"] or ""):
            no_help.append(f"web/docs/{node_id}.md: {doc['status']} {doc['type']}")
        elif doc["text"].splitlines()[0] != f"# {info['display_name']}" or len(doc["text"]) <= 300:
            no_help.append(f"web/docs/{node_id}.md: not a help page titled '# {info['display_name']}'")
    if ui.variant.nodes2:
        load_graph(page, EMPTY_GRAPH, "vue-nodes-test")
        for node_id, info in magicpose_nodes.items():   # each node drawn by the Vue renderer, title and widgets
            # the inputs not marked advanced are drawn; the advanced ones wait behind "Show advanced inputs"
            basic = [n for n in widget_inputs(info) if not _input_options(info, n).get("advanced")]
            want = json.dumps([info["display_name"], *basic])
            shown = page.evaluate(f"""(async () => {{
                const n = LiteGraph.createNode({json.dumps(node_id)}); app.graph.add(n);
                let lines = [];
                for (let i = 0; i < 200; i++) {{
                    await new Promise((r) => requestAnimationFrame(() => setTimeout(r, 20)));
                    const el = document.querySelector(`[data-node-id="${{n.id}}"]`);
                    lines = el ? el.innerText.split("\\n").map((t) => t.trim()) : [];
                    if ({want}.every((t) => lines.includes(t))) break;
                }}
                app.graph.remove(n);
                return lines; }})()""", timeout=30)
            missing = [t for t in json.loads(want) if t not in shown]
            assert missing == [], (node_id, missing, shown)
    assert no_help == [], no_help


# --- UI workflows ------------------------------------------------------------------------------------------------
def _workflow_params():
    if not WORKFLOWS:
        return [pytest.param(None, id="no-workflows")]
    return [pytest.param(p, id=p.stem) for p in WORKFLOWS]


@pytest.mark.parametrize("path", _workflow_params())
def test_ui_workflow_loads_in_the_frontend(ui, page, magicpose_nodes, path):
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
    record(f"browser {ui.variant.id}: load {path.name} (s)", round(time.perf_counter() - t0, 2))
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

    shot = screenshot(page, f"{path.stem}_{ui.variant.id}")
    assert shot.stat().st_size > 10_000
    assert own_errors(page) == []


# --- the frame player --------------------------------------------------------------------------------------------
COLOURS = [(220, 30, 30), (30, 200, 40), (40, 60, 230)]


@pytest.fixture(scope="module")
def uploaded_frames(ui, tmp_path_factory) -> list[dict]:
    folder = tmp_path_factory.mktemp("player_frames")
    frames = []
    for i, colour in enumerate(COLOURS):
        p = folder / f"magicpose_player_{i}.png"
        Image.fromarray(np.full((96, 64, 3), colour, np.uint8)).save(p)
        name = ui.server.upload_image(p, subfolder="magicpose_player_test")
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


def _player(page, shown: str) -> dict | None:
    return page.evaluate(f"""(() => {{
        const n = window.__mpNode;
        const w = (n.widgets || []).find((w) => w.name === {json.dumps(PLAYER_WIDGET)});
        if (!w) return null;
        const q = (s) => w.element.querySelector(s);
        const vueNode = document.querySelector(`[data-node-id="${{n.id}}"]`);
        return {{ connected: w.element.isConnected, visible: w.element.getBoundingClientRect().height > 10,
                  max: Number(q('input[type=range]').max), slider: Number(q('input[type=range]').value),
                  label: q('.magicpose-player-label').textContent, playing: q('button').getAttribute('aria-pressed'),
                  shown: {shown}(n, w), imgs: (n.imgs || []).length, index: w.value && w.value.index,
                  view: q('.magicpose-player-frame').getBoundingClientRect().height,
                  inVueNode: vueNode ? vueNode.contains(w.element) : null }};
    }})()""")


def _shown_js(nodes2: bool, frames: list[dict]) -> str:
    """JS ``(node, widget) => index`` of the frame the user sees: classic nodes draw it in the node's own canvas
    preview (``node.imageIndex``); Nodes 2.0 shows it in the player's frame view (its ``/view`` URL)."""
    if not nodes2:
        return "((n, w) => n.imageIndex)"
    names = json.dumps([f["filename"] for f in frames])
    return (f"((n, w) => {names}.indexOf(new URL(w.element.querySelector('.magicpose-player-frame').src)"
            f".searchParams.get('filename')))")


VIEW_CENTRE = f"""(() => {{
  // centre of the player's frame view (Nodes 2.0), in CSS pixels, once its image has loaded
  const w = window.__mpNode.widgets.find((w) => w.name === '{PLAYER_WIDGET}');
  const v = w && w.element.querySelector('.magicpose-player-frame');
  if (!v || !v.complete || !v.naturalWidth) return null;
  const r = v.getBoundingClientRect();
  return [r.x + r.width / 2, r.y + r.height / 2, window.devicePixelRatio || 1];
}})()"""


def _wait_pixel(page, colour, nodes2: bool, timeout: float = 5.0) -> list[int]:
    """What the user sees: classic, the node's canvas preview; Nodes 2.0, the player's view (a screenshot pixel)."""
    deadline = time.monotonic() + timeout
    px = None
    while time.monotonic() < deadline:
        page.evaluate("app.canvas.setDirty(true, true), true")
        page.evaluate(NEXT_FRAMES)
        if nodes2:
            centre = page.evaluate(VIEW_CENTRE)
            if centre is not None:
                shot = page.screenshot(LOGS / "browser_player_view.png")
                with Image.open(shot) as im:
                    px = list(im.convert("RGB").getpixel((round(centre[0] * centre[2]), round(centre[1] * centre[2]))))
        else:
            px = page.evaluate(PREVIEW_PIXEL)
        if px is not None and int(np.abs(np.array(px) - colour).max()) <= 12:
            return px
    raise AssertionError(f"the {'player view' if nodes2 else 'node preview'} shows {px}, expected the frame colour "
                         f"{colour}")


def test_frame_player_plays_and_selects_frames(ui, page, magicpose_nodes, uploaded_frames):
    nodes2 = ui.variant.nodes2
    shown = _shown_js(nodes2, uploaded_frames)
    load_graph(page, EMPTY_GRAPH, "player-test")
    _add_node(page, "MagicPoseExtractPose")
    assert _player(page, shown) is None

    _executed(page, "window.__mpNode", uploaded_frames)
    # classic: the native preview loads the frames into node.imgs; Nodes 2.0: its gallery does, the player's view
    # loads the first one
    loaded = VIEW_CENTRE if nodes2 else "(window.__mpNode.imgs || []).length === 3"
    page.wait_for(f"window.__mpNode.widgets.some((w) => w.name === '{PLAYER_WIDGET}') && {loaded}", timeout=20)
    st = _player(page, shown)
    assert st["connected"] and st["visible"], st
    assert st["max"] == 2 and st["playing"] == "true", st   # autoplay is on by default
    if nodes2:   # the controls and the frame view are inside the Vue node, below its widgets
        assert st["inVueNode"] is True and st["view"] > 100, st
        size = page.evaluate(f"""(() => {{ const v = window.__mpNode.widgets.find((w) => w.name === '{PLAYER_WIDGET}')
            .element.querySelector('.magicpose-player-frame'); return [v.naturalWidth, v.naturalHeight]; }})()""")
        assert size == [64, 96]                             # a frame from /view
    else:        # the frame is drawn by the node's own preview: no second view
        assert st["inVueNode"] is None and st["view"] == 0, st
        sizes = page.evaluate("window.__mpNode.imgs.map((i) => [i.naturalWidth, i.naturalHeight])")
        assert sizes == [[64, 96]] * 3                      # the native preview got our frames from /view

    # playing: with 10 fps every frame shows up within 1.2 s, in order (sampled every 20 ms: a frame lasts 5 samples,
    # so a busy CPU does not make the sampling skip one)
    page.evaluate(f"""(() => {{ const w = window.__mpNode.widgets.find((w) => w.name === '{PLAYER_WIDGET}');
        const f = w.element.querySelector('input[type=number]'); f.value = '10';
        f.dispatchEvent(new Event('change')); return true; }})()""")
    current = f"{shown}(window.__mpNode, window.__mpNode.widgets.find((w) => w.name === '{PLAYER_WIDGET}'))"
    seen = page.evaluate(f"""(async () => {{ const out = [];
        for (let i = 0; i < 60; i++) {{
          await new Promise((r) => setTimeout(r, 20)); out.push({current});
        }}
        return out; }})()""")
    while seen and seen[0] is None:   # the preview had just loaded its images (it resets the selection then)
        seen.pop(0)
    assert set(seen) == {0, 1, 2}, seen
    steps = {(b - a) % 3 for a, b in zip(seen, seen[1:]) if a != b}
    assert steps == {1}, seen

    # pause: the frame stays
    page.evaluate(f"""(() => {{ window.__mpNode.widgets.find((w) => w.name === '{PLAYER_WIDGET}')
        .element.querySelector('button').click(); return true; }})()""")
    st = _player(page, shown)
    assert st["playing"] == "false"
    frozen = page.evaluate(f"""(async () => {{ const a = {current};
        await new Promise((r) => setTimeout(r, 300)); return [a, {current}]; }})()""")
    assert frozen[0] == frozen[1], frozen

    # the slider selects the frame the user sees
    for index in (2, 0, 1):
        page.evaluate(f"""(() => {{ const s = window.__mpNode.widgets.find((w) => w.name === '{PLAYER_WIDGET}')
            .element.querySelector('input[type=range]'); s.value = '{index}';
            s.dispatchEvent(new Event('input')); return true; }})()""")
        st = _player(page, shown)
        assert st["shown"] == index and st["slider"] == index and st["label"] == f"{index + 1} / 3", st
        _wait_pixel(page, COLOURS[index], nodes2)
    page.screenshot(LOGS / f"browser_player_{ui.variant.id}.png")

    # never serialized: not in the workflow's widgets_values, not an input of the prompt
    ser = page.evaluate("window.__mpNode.serialize().widgets_values.length")
    assert ser == len(widget_inputs(magicpose_nodes["MagicPoseExtractPose"]))
    prompt = page.evaluate("app.graphToPrompt().then((p) => p.output)")
    node_prompt = next(v for v in prompt.values() if v["class_type"] == "MagicPoseExtractPose")
    assert PLAYER_WIDGET not in node_prompt["inputs"]

    # a single image: no player; disabled in the settings: no player
    _executed(page, "window.__mpNode", uploaded_frames[:1])
    assert _player(page, shown) is None
    page.evaluate("app.extensionManager.setting.set('MagicPose.Player.Enabled', false).then(() => true)")
    try:
        _executed(page, "window.__mpNode", uploaded_frames)
        assert _player(page, shown) is None
    finally:
        page.evaluate("app.extensionManager.setting.set('MagicPose.Player.Enabled', true).then(() => true)")
    _executed(page, "window.__mpNode", uploaded_frames)
    st = _player(page, shown)
    assert st is not None and st["playing"] == "true", st

    # removing the node removes the widget's DOM and stops playback (the removed node's frame stays put)
    after = page.evaluate(f"""(async () => {{ const n = window.__mpNode;
        const w = n.widgets.find((w) => w.name === '{PLAYER_WIDGET}'), el = w.element;
        await new Promise((r) => setTimeout(r, 200));
        app.graph.remove(n);
        await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
        const out = [];
        for (let i = 0; i < 8; i++) {{ out.push({shown}(n, w)); await new Promise((r) => setTimeout(r, 50)); }}
        return {{ connected: el.isConnected, indices: out }}; }})()""")
    assert after["connected"] is False
    assert len(set(after["indices"])) == 1, after
    assert own_errors(page) == []


def test_player_leaves_other_node_types_alone(page, uploaded_frames):
    load_graph(page, EMPTY_GRAPH, "player-scope-test")
    _add_node(page, "PreviewImage")
    _executed(page, "window.__mpNode", uploaded_frames)
    page.wait_for("(window.__mpNode.imgs || []).length === 3", timeout=20)
    assert _player(page, "((n, w) => n.imageIndex)") is None


# --- template browser ---------------------------------------------------------------------------------------------
# drawn thumbnails of our size (scripts/build_thumbnails.py: 480x300; the frontend may load them through blob URLs)
THUMBS_DRAWN = """[...document.querySelectorAll('img')].filter(
    (i) => i.complete && i.naturalWidth === 480 && i.naturalHeight === 300).length"""


def test_template_browser_shows_our_workflows_with_thumbnails(ui, page):
    server = ui.server
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
    # the card title is the file name (1.47 adds it, spaced, as the description; 1.58 shows the kind, "Node graph")
    assert [name for name in names if name not in text.split("\n")] == []
    assert f"{PACK_DIR_NAME}/api" not in text and not any(f"{name}_api" in text for name in names)   # no API twins
    page.evaluate("new Promise((r) => setTimeout(r, 500)).then(() => true)")
    path = page.screenshot(LOGS / f"browser_template_browser_{ui.variant.id}.png")
    with Image.open(path) as im:
        assert np.asarray(im.convert("RGB")).std() > 5
    page.evaluate("document.dispatchEvent(new KeyboardEvent('keydown', {key: 'Escape', bubbles: true})) || true")
    assert own_errors(page) == []
