"""Test set-up: ComfyUI first on sys.path, the repo appended (never prepended: our `nodes/` would shadow
ComfyUI's `nodes` module), the pack loaded under a unique name as ComfyUI loads it, and a real server.

Fixtures:
- ``comfy``: ComfyUI importable in-process (CPU, SDPA attention), with temporary input/output/model folders.
- ``pack``: this pack imported as the package ``magicpose_pack`` (``pack.nodes``, ``pack.magicpose_core``).
- ``server``: a real ComfyUI server on 127.0.0.1 with the pack and the factory checkpoints (session-wide).
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache"
COMFYUI_PATH = Path(os.environ.get("COMFYUI_PATH") or CACHE / "ComfyUI")
HAVE_COMFY = (COMFYUI_PATH / "main.py").is_file()

# Tests never reach a model hub: any Hugging Face request (in-process or from a test server, which inherits the
# environment) goes to a closed loopback port unless a test points HF_ENDPOINT at its stand-in hub; the cache is
# the repo's own, so weights in the user's ~/.cache/huggingface do not change what the `auto` detector picks.
os.environ["HF_ENDPOINT"] = "http://127.0.0.1:9"
os.environ["HF_HOME"] = str(CACHE / "test-hf-home")

if HAVE_COMFY and str(COMFYUI_PATH) not in sys.path:
    sys.path.insert(0, str(COMFYUI_PATH))
for p in (ROOT, ROOT / "tests"):
    if str(p) not in sys.path:
        sys.path.append(str(p))

if HAVE_COMFY:
    import comfy.cli_args as _cli  # light: argparse only; must run before comfy.model_management is imported

    _cli.args.cpu = True
    _cli.args.use_pytorch_cross_attention = True
    _cli.args.disable_api_nodes = True


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def pytest_configure(config):
    """`pytest -m gpu` on a CUDA machine: in-process ComfyUI on the GPU (comfy.model_management is not imported yet)."""
    expr = config.option.markexpr or ""
    if HAVE_COMFY and "gpu" in expr and "not gpu" not in expr and _cuda():
        _cli.args.cpu = False


def pytest_collection_modifyitems(config, items):
    no_cuda = pytest.mark.skip(reason="needs a CUDA device (pytest -m gpu on a GPU machine)")
    if any("gpu" in item.keywords for item in items) and not _cuda():
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(no_cuda)
    if HAVE_COMFY:
        return
    skip = pytest.mark.skip(reason=f"ComfyUI not found at {COMFYUI_PATH} (set COMFYUI_PATH or run `make test`)")
    for item in items:
        if "comfy" in item.keywords or "server" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def comfy_root() -> Path:
    if not HAVE_COMFY:
        pytest.skip(f"ComfyUI not found at {COMFYUI_PATH}")
    return COMFYUI_PATH


@pytest.fixture(scope="session")
def comfy(comfy_root, tmp_path_factory):
    """ComfyUI importable in-process, with temporary input/output/temp folders (the ComfyUI tree stays untouched)."""
    import folder_paths

    base = tmp_path_factory.mktemp("comfy_base")
    for sub in ("input", "output", "temp", "models/magicpose", "models/checkpoints", "models/controlnet"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    folder_paths.set_input_directory(str(base / "input"))
    folder_paths.set_output_directory(str(base / "output"))
    folder_paths.set_temp_directory(str(base / "temp"))
    for name in ("checkpoints", "controlnet"):
        folder_paths.add_model_folder_path(name, str(base / "models" / name), is_default=True)
    folder_paths.models_dir = str(base / "models")
    return base


def load_pack(name: str = "magicpose_pack"):
    """Import the pack as ComfyUI does: a package from its __init__.py, under a unique module name."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def pack(comfy):
    """The pack as ComfyUI imports it, with every submodule of nodes/ and magicpose_core/ imported."""
    import importlib
    import pkgutil

    mod = load_pack()
    for sub in ("nodes", "magicpose_core"):
        pkg = importlib.import_module(f"magicpose_pack.{sub}")
        for info in pkgutil.walk_packages(pkg.__path__, f"magicpose_pack.{sub}."):
            importlib.import_module(info.name)
    return mod


@pytest.fixture(scope="session")
def factory_files():
    """Paths of the random-weight checkpoints with the real layouts (generated once, cached under .cache/)."""
    from support import factories

    return {
        "sd15": factories.sd15_checkpoint(),
        "magicpose": factories.magicpose_checkpoint(),
    }


@pytest.fixture(scope="session")
def server(comfy_root, factory_files, tmp_path_factory):
    from support.server import ComfyServer

    base = tmp_path_factory.mktemp("server_base")
    srv = ComfyServer(comfy_root, base, CACHE / "test-logs" / f"server-{os.getpid()}.log")
    srv.prepare_base({"checkpoints": [factory_files["sd15"]], "magicpose": [factory_files["magicpose"]]})
    srv.start()
    srv.post_json("/settings/Comfy.TutorialCompleted", True)
    yield srv
    srv.stop()


_FILE_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report):
    """Sum setup + call + teardown per test file (a session fixture counts where it is first built)."""
    path = report.nodeid.split("::", 1)[0]
    _FILE_SECONDS[path] = _FILE_SECONDS.get(path, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter):
    from support import figures

    if _FILE_SECONDS:
        terminalreporter.section("seconds per test file (slowest first)")
        total = sum(_FILE_SECONDS.values())
        for path, seconds in sorted(_FILE_SECONDS.items(), key=lambda kv: -kv[1]):
            terminalreporter.write_line(f"{seconds:8.1f}  {path}")
        terminalreporter.write_line(f"{total:8.1f}  all files")

    rows = figures.recorded()
    if rows:
        terminalreporter.section("measured figures")
        for name, value in rows:
            terminalreporter.write_line(f"{name}: {value}")
