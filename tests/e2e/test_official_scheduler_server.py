"""`magicpose_official` as a real ComfyUI server offers it after loading the pack: in core KSampler,
KSamplerAdvanced and BasicScheduler, and once in MagicPose Sampler (registered at pack load, without disturbing the
core schedulers' order)."""
from __future__ import annotations

import pytest

pytestmark = [pytest.mark.comfy, pytest.mark.server]

NAME = "magicpose_official"


def _options(info: dict, node: str, name: str = "scheduler") -> list:
    inputs = info[node]["input"]
    spec = {**inputs.get("required", {}), **inputs.get("optional", {})}[name]
    return spec[0] if isinstance(spec[0], list) else spec[1]["options"]   # V1 list, or V3 COMBO + options


def test_core_sampler_nodes_list_the_official_scheduler_once(server):
    info = server.get_json("/object_info")
    lists = {node: _options(info, node) for node in ("KSampler", "KSamplerAdvanced", "BasicScheduler",
                                                     "MagicPoseSample")}
    for node, options in lists.items():
        assert options.count(NAME) == 1, (node, options)
    core = [o for o in lists["KSampler"] if o != NAME]
    assert core[:3] == ["simple", "sgm_uniform", "karras"]   # ComfyUI's own names keep their order
    assert lists["KSampler"][-1] == NAME
