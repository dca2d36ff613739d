"""MagicPoseEvaluate on a real ComfyUI server: images uploaded and loaded by core nodes, the report files in the
server's output folder and the saved plot in the prompt's UI output."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

pytestmark = [pytest.mark.comfy, pytest.mark.server]


def test_evaluate_node_runs_on_the_server(server, tmp_path):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + 4, 0, 255).astype(np.uint8)
    names = []
    for name, img in (("eval_a.png", a), ("eval_b.png", b)):
        Image.fromarray(img).save(tmp_path / name)
        names.append(server.upload_image(tmp_path / name))
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": names[0]}},
        "2": {"class_type": "LoadImage", "inputs": {"image": names[1]}},
        "3": {"class_type": "MagicPoseEvaluate",
              "inputs": {"images": ["1", 0], "ground_truth": ["2", 0], "detector": "mediapipe",
                         "learned_metrics": True, "filename_prefix": "e2e/eval"}},
        "4": {"class_type": "PreviewAny", "inputs": {"source": ["3", 0]}},
    }
    result = server.run(prompt, timeout=300)
    assert result.status == "success", result.error_message() + "\n" + server.log_tail()
    saved = result.outputs["3"]["images"][0]
    png = server.output_path(saved)
    assert png.is_file() and png.suffix == ".png"
    data = json.loads(png.with_suffix(".json").read_text())
    clipped = (a.astype(int) + 4 > 255).mean()
    assert data["metrics"]["psnr"]["value"] < 100 and data["metrics"]["l1"]["value"] > 0
    # |gen - GT| <= 4: no square reaches 256, so DisCo's wrapped-around PSNR equals the correct one here
    assert data["metrics"]["psnr_disco"]["value"] == pytest.approx(data["metrics"]["psnr"]["value"], abs=1e-9)
    assert data["metrics"]["l1"]["value"] == pytest.approx(4 * (1 - clipped) / (64 * 64), rel=0.05)
    assert "vgg16-397923af.pth" in data["unavailable"]["lpips"]       # no weights on the server: a clear reason
    assert "PSNR (DisCo protocol)" in png.with_suffix(".txt").read_text()
