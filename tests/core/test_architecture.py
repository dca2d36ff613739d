"""The layout rules of docs/architecture.md §4, checked on the source (AST, nothing imported):

- no import cycles between modules of the pack, lazy (function-level) imports included;
- `magicpose_core` packages import only from packages in lower layers (docs/architecture.md §4.2);
- `nodes/patch` never imports a node module, `magicpose_core` never imports `nodes`;
- no module over MAX_LINES lines without a reason written at its top ("Over N lines: ...").
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 400
# docs/architecture.md §4.2: package -> the pack packages it may import (besides itself)
LAYERS = {
    "media": set(), "weights": set(),
    "model": {"media"}, "pose": {"media", "weights"}, "provenance": set(),
    "client": {"media"}, "evaluate": {"pose", "weights"},
}
NODE_HELPERS = {"_api", "types", "models", "vae_encode", "pose_detectors", "temporal_inputs"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def pack_modules(root: Path = ROOT) -> dict[str, Path]:
    files = [*root.glob("magicpose_core/**/*.py"), *root.glob("nodes/**/*.py")]
    return {module_name(p) if root == ROOT else ".".join(p.relative_to(root).with_suffix("").parts): p
            for p in files if "__pycache__" not in p.parts}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Pack modules `name` imports, resolved to the most specific known module (`from . import x` -> pkg.x)."""
    is_pkg = path.name == "__init__.py"
    package = name.split(".") if is_pkg else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                full = f"{target}.{alias.name}" if target else alias.name
                if full in known:
                    found.add(full)
                elif target in known:
                    found.add(target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in known)
    found.discard(name)
    return found


def graph(root: Path = ROOT) -> dict[str, set[str]]:
    mods = pack_modules(root)
    known = set(mods)
    out = {}
    for name, path in mods.items():
        deps = imports_of(name, path, known)   # `from ..magicpose_core.x` in nodes/ resolves to magicpose_core.x
        out[name] = {d for d in deps if d in known}
    return out


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    """A cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(g.get(m, ())):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (c := visit(d)):
                return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(g):
        if m not in state and (c := visit(m)):
            return c
    return None


def layer_violations(g: dict[str, set[str]]) -> list[str]:
    bad = []
    for m, deps in g.items():
        parts = m.split(".")
        for d in deps:
            dp = d.split(".")
            if parts[0] == "magicpose_core" and dp[0] == "nodes":
                bad.append(f"{m} -> {d}: magicpose_core never imports nodes")
            if parts[0] == "magicpose_core" and dp[0] == "magicpose_core" and len(parts) > 1 and len(dp) > 1:
                src, dst = parts[1], dp[1]
                if src != dst and src in LAYERS and dst not in LAYERS[src]:
                    bad.append(f"{m} -> {d}: {src} may import only {sorted(LAYERS[src]) or 'nothing'}")
            if parts[:2] == ["nodes", "patch"] and dp[0] == "nodes" and dp[:2] != ["nodes", "patch"]:
                if len(dp) < 2 or dp[1] not in NODE_HELPERS:
                    bad.append(f"{m} -> {d}: nodes/patch never imports a node module")
    return sorted(bad)


def test_every_core_package_is_in_the_layer_table():
    packages = {p.name for p in (ROOT / "magicpose_core").iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(LAYERS), f"add it to LAYERS and docs/architecture.md §4.2: {packages ^ set(LAYERS)}"


def test_no_import_cycles():
    cycle = find_cycle(graph())
    assert cycle is None, " -> ".join(cycle)


def test_no_upward_imports():
    bad = layer_violations(graph())
    assert not bad, "\n".join(bad)


def test_modules_stay_small_or_say_why():
    long = []
    for path in [*ROOT.glob("magicpose_core/**/*.py"), *ROOT.glob("nodes/**/*.py")]:
        lines = path.read_text().splitlines()
        head = "\n".join(lines[:15])
        if len(lines) > MAX_LINES and "Over " not in head:
            long.append(f"{path.relative_to(ROOT)}: {len(lines)} lines and no 'Over {MAX_LINES} lines: why' at its top")
    assert not long, "\n".join(long)


def test_the_checks_can_fail(tmp_path):
    """A planted cycle and a planted upward import are found by the same functions."""
    g = {"magicpose_core.media.video": {"magicpose_core.client.split"},
         "magicpose_core.client.split": {"magicpose_core.media.video"}}
    assert find_cycle(g) == ["magicpose_core.client.split", "magicpose_core.media.video",
                             "magicpose_core.client.split"]
    assert layer_violations(g) == ["magicpose_core.media.video -> magicpose_core.client.split: media may import only "
                                   "nothing"]
    g = {"nodes.patch.model_patch": {"nodes.sample"}, "magicpose_core.pose.base": {"nodes.patch.model_patch"}}
    assert len(layer_violations(g)) == 2


@pytest.mark.parametrize("planted, expected", [
    ("from .detect import create_detector\n", "magicpose_core.pose.base"),
])
def test_a_planted_circle_in_a_copy_of_the_tree_is_found(tmp_path, planted, expected):
    import shutil

    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "magicpose_core", copy / "magicpose_core", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "nodes", copy / "nodes", ignore=shutil.ignore_patterns("__pycache__"))
    base = copy / "magicpose_core" / "pose" / "base.py"
    base.write_text(base.read_text() + "\n" + planted)
    mods = {".".join(p.relative_to(copy).with_suffix("").parts).removesuffix(".__init__"): p
            for p in [*copy.glob("magicpose_core/**/*.py"), *copy.glob("nodes/**/*.py")]}
    g = {m: imports_of(m, p, set(mods)) for m, p in mods.items()}
    cycle = find_cycle(g)
    assert cycle is not None and expected in cycle
