"""Every node: V3 schema, frozen MagicPose ids, tooltips everywhere, help page; the pack's entry point rules."""
from __future__ import annotations

import ast
import asyncio
import os
from pathlib import Path

import pytest

pytestmark = [pytest.mark.comfy]

ROOT = Path(__file__).resolve().parents[2]
FROZEN_IDS = {  # saved workflows reference these: never rename (keep a deprecated alias instead)
    "MagicPoseLoadModel": "MagicPose Load Model",
    "MagicPoseApply": "MagicPose Apply",
    "MagicPoseSample": "MagicPose Sampler",
    "MagicPoseLoadReference": "MagicPose Load Reference",
    "MagicPoseExtractPose": "MagicPose Extract Pose",
    "MagicPoseFramesToVideo": "MagicPose Frames to Video",
    "MagicPoseEvaluate": "MagicPose Evaluate",
    "MagicPoseSelectFrames": "MagicPose Select Frames",
    "MagicPoseWatermarkImage": "MagicPose Watermark Image",
    "MagicPoseCheckProvenance": "MagicPose Check Provenance",
    "MagicPoseRenderVideo": "MagicPose Render Video",
}


@pytest.fixture(scope="module")
def node_classes(pack):
    ext = asyncio.run(pack.comfy_entrypoint())
    asyncio.run(ext.on_load())
    return asyncio.run(ext.get_node_list())


def test_ids_names_categories_are_frozen(node_classes):
    schemas = [cls.define_schema() for cls in node_classes]
    assert {s.node_id: s.display_name for s in schemas} == FROZEN_IDS
    assert all(s.category == "MagicPose" or s.category.startswith("MagicPose/") for s in schemas)
    assert all(s.description and s.search_aliases for s in schemas)


def test_every_input_and_output_has_a_tooltip(node_classes):
    missing = []
    for cls in node_classes:
        s = cls.define_schema()
        for i in s.inputs:
            if not (i.tooltip or "").strip():
                missing.append(f"{s.node_id}.{i.id}")
        for o in s.outputs:
            if not (o.tooltip or "").strip():
                missing.append(f"{s.node_id} output {o.display_name or o.io_type}")
    assert not missing, missing


def test_every_node_has_a_help_page(node_classes):
    for cls in node_classes:
        page = ROOT / "web" / "docs" / f"{cls.define_schema().node_id}.md"
        assert page.is_file() and len(page.read_text().strip()) > 200, page


def test_entry_point_exports_only_comfy_entrypoint_and_web_directory():
    tree = ast.parse((ROOT / "__init__.py").read_text())
    names = {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    names |= {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    assert names == {"WEB_DIRECTORY", "comfy_entrypoint"}
    assert "NODE_CLASS_MAPPINGS" not in (ROOT / "__init__.py").read_text()


def test_comfy_api_is_imported_in_one_file():
    users = [p.relative_to(ROOT).as_posix() for p in (ROOT / "nodes").rglob("*.py") if "comfy_api" in p.read_text()]
    assert users == ["nodes/_api.py"]


def test_model_folder_registered_with_official_extensions_and_extra_paths(pack, tmp_path):
    import folder_paths

    extra = tmp_path / "extra_magicpose"
    extra.mkdir()
    folder_paths.add_model_folder_path("magicpose", str(extra))   # what extra_model_paths.yaml does first
    pack.nodes.models.register_model_folder()
    paths, exts = folder_paths.folder_names_and_paths["magicpose"]
    assert str(extra) in paths and os.path.join(folder_paths.models_dir, "magicpose") in paths
    assert {".safetensors", ".th", ".ckpt", ".pth"} <= set(exts)
    (extra / "model_state-110000.th").write_bytes(b"")
    (extra / "notes.txt").write_text("x")
    names = folder_paths.get_filename_list("magicpose")
    assert "model_state-110000.th" in names and "notes.txt" not in names
