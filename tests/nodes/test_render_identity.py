"""The model identity in MagicPose Render Video's resume key (nodes/render/identity.py): equal weights give equal
fingerprints; other weights, another LoRA, another reference or prompt give others."""
from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.comfy


def test_fingerprint_follows_weights_patches_and_small_inputs(pack):
    from comfy.weight_adapter.lora import LoRAAdapter

    fp = pack.nodes.render.identity.fingerprint
    torch.manual_seed(0)
    a = torch.nn.Linear(64, 64)
    b = torch.nn.Linear(64, 64)
    b.load_state_dict(a.state_dict())
    assert fp(a) == fp(b)
    with torch.no_grad():
        b.weight[0, 0] += 1.0                                   # element 0 is always among the sampled values
    assert fp(a) != fp(b)
    up, down = torch.ones(64, 4), torch.ones(4, 64)
    lora = {"w": [(1.0, LoRAAdapter(set(), (up, down, None, None, None, None)), 1.0, None, None)]}
    other = {"w": [(1.0, LoRAAdapter(set(), (up * 2, down, None, None, None, None)), 1.0, None, None)]}
    assert fp(lora) != fp(other) and fp(lora) == fp({"w": [(1.0, LoRAAdapter(set(), (up.clone(), down, None, None,
                                                                                     None, None)), 1.0, None, None)]})
    cond = [[torch.zeros(1, 77, 8), {"pooled_output": torch.zeros(1, 8)}]]
    changed = [[torch.zeros(1, 77, 8), {"pooled_output": torch.zeros(1, 8)}]]
    changed[0][0][0, 40, 3] = 1e-3                               # whole=True: every value counts
    assert fp(cond, whole=True) != fp(changed, whole=True)
