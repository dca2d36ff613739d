"""Errors a user sees name their type as magicpose_core.<module>.<Name>, also inside ComfyUI.

ComfyUI imports a pack folder under its path as module name (`nodes.load_custom_node`: the folder path with
"." replaced by "_x_"), and its error box shows `type(e).__module__ + "." + type(e).__qualname__`: without a
declared `__module__`, a pack error would show the machine path of the pack folder.
"""
import importlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# the errors that reach ComfyUI's error box (raised by code the nodes run), by (module, class)
USER_FACING = [("weights.errors", "CheckpointError"), ("weights.hub", "HubError"),
               ("pose.base", "MissingWeightsError"), ("weights.keymap", "KeyMapError")]

# Loads magicpose_core as a sub-package of the pack named the way ComfyUI names it, then prints, per error, the
# name of the module it was loaded as and the type name ComfyUI would show.
SCRIPT = f"""
import importlib, sys, types
root = sys.argv[1]
pack_name = root.replace(".", "_x_")          # ComfyUI's sys_module_name for a pack folder
pack = types.ModuleType(pack_name)
pack.__path__ = [root]                          # the pack's own __init__ needs ComfyUI: only its folder is used
sys.modules[pack_name] = pack
for mod, cls in {USER_FACING!r}:
    m = importlib.import_module(pack_name + ".magicpose_core." + mod)
    c = getattr(m, cls)
    print(m.__name__, c.__module__ + "." + c.__qualname__)
"""


def test_user_facing_errors_show_no_machine_path_when_loaded_as_comfyui_loads_packs():
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(ROOT)], capture_output=True, text=True, cwd="/",
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [line.split(" ") for line in r.stdout.strip().splitlines()]
    assert len(rows) == len(USER_FACING)
    for (mod, cls), (loaded_as, shown) in zip(USER_FACING, rows):
        assert loaded_as.startswith(str(ROOT).replace(".", "_x_")), loaded_as   # really loaded under the path
        assert shown == f"magicpose_core.{mod}.{cls}", shown
        assert str(ROOT) not in shown and "/" not in shown


def test_declared_error_modules_are_real_modules_holding_the_error():
    for mod, cls in USER_FACING:
        declared = getattr(importlib.import_module(f"magicpose_core.{mod}"), cls)
        assert declared.__module__ == f"magicpose_core.{mod}"
        assert getattr(importlib.import_module(declared.__module__), declared.__qualname__) is declared
