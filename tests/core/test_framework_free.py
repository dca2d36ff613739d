"""magicpose_core never imports ComfyUI: with every ComfyUI module name blocked, all of it still imports."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("comfy", "comfy_api", "comfy_extras", "comfy_execution", "nodes", "folder_paths", "server",
             "execution", "latent_preview")

SCRIPT = f"""
import importlib, pkgutil, sys
for name in {FORBIDDEN!r}:
    sys.modules[name] = None          # any import of it now raises ImportError
sys.path.insert(0, {str(ROOT)!r})
import magicpose_core
names = [m.name for m in pkgutil.walk_packages(magicpose_core.__path__, "magicpose_core.")]
for n in names:
    importlib.import_module(n)
print(len(names))
"""


def test_core_imports_without_comfyui():
    # A fresh interpreter, so nothing ComfyUI imported by other tests can satisfy an import.
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert int(r.stdout.strip().splitlines()[-1]) >= 3


def test_no_comfy_import_statements_in_core():
    bad = []
    for path in (ROOT / "magicpose_core").rglob("*.py"):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            s = line.strip()
            for name in FORBIDDEN:
                if s.startswith((f"import {name}", f"from {name} ", f"from {name}.", f"import {name}.")):
                    bad.append(f"{path.relative_to(ROOT)}:{i}: {s}")
    assert not bad, "\n".join(bad)
