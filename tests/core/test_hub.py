"""The hub helper never touches the network in tests: offline refusal, already-present files, the
missing-weights message, the CLI, and that huggingface_hub is imported only on an explicit download."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from magicpose_core.weights import hub

ROOT = Path(__file__).resolve().parents[2]


def test_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.is_offline()
    with pytest.raises(hub.HubError) as e:
        hub.download_official(tmp_path / "models" / "magicpose")
    msg = str(e.value)
    assert "HF_HUB_OFFLINE" in msg and hub.FILENAME in msg and str(tmp_path / "models" / "magicpose") in msg
    assert hub.URL in msg
    assert not (tmp_path / "models").exists()          # nothing created when refusing


@pytest.mark.parametrize("value,offline", [("1", True), ("true", True), ("ON", True), ("0", False), ("", False)])
def test_offline_flag_values(monkeypatch, value, offline):
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert hub.is_offline() is offline


def test_present_file_is_returned_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")           # would refuse any download
    (tmp_path / hub.FILENAME).write_bytes(b"x")
    assert hub.download_official(tmp_path) == tmp_path / hub.FILENAME


def test_missing_weights_message_says_what_and_where(tmp_path):
    folder = tmp_path / "models" / "magicpose"
    msg = hub.missing_weights_message(folder)
    assert hub.FILENAME in msg and str(folder) in msg and hub.URL in msg and hub.LOCAL_FILENAME in msg
    assert f"`{hub.CONVERT_COMMAND}` in ComfyUI's custom_nodes/{ROOT.name} folder" in msg
    assert hub.download_choice() in msg
    default = hub.missing_weights_message()             # what the UI shows: ComfyUI's folder name, no machine path
    assert "models/magicpose" in default and "/" + ROOT.parent.name not in default


def test_present_file_under_the_frontend_name_is_returned(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / hub.LOCAL_FILENAME).write_bytes(b"x")
    assert hub.download_official(tmp_path) == tmp_path / hub.LOCAL_FILENAME


def test_importing_hub_does_not_import_huggingface_hub():
    code = ("import sys; import magicpose_core.weights.hub, magicpose_core.weights.parts, magicpose_core.weights.cli; "
            "print('huggingface_hub' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def test_offline_refusal_does_not_import_huggingface_hub(tmp_path):
    code = ("import sys; from magicpose_core.weights import hub\n"
            "try:\n    hub.download_official(sys.argv[1])\nexcept hub.HubError as e:\n    print('refused')\n"
            "print('huggingface_hub' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, cwd=ROOT,
                       timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["refused", "False"]


def test_cli_download_offline(tmp_path):
    r = subprocess.run([sys.executable, "-m", "magicpose_core.checkpoint", "download", "--dir", str(tmp_path)],
                       capture_output=True, text=True, cwd=ROOT, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 1
    assert "error:" in r.stderr and "HF_HUB_OFFLINE" in r.stderr and hub.FILENAME in r.stderr


def test_default_model_dir(tmp_path, monkeypatch):
    comfy = tmp_path / "ComfyUI"
    fake = comfy / "custom_nodes" / "magicpose" / "magicpose_core" / "weights" / "hub.py"
    monkeypatch.setattr(hub, "__file__", str(fake))
    monkeypatch.chdir(tmp_path)
    assert hub.default_model_dir() == tmp_path          # not inside a ComfyUI tree: the current folder
    (comfy / "models").mkdir(parents=True)
    (comfy / "main.py").write_text("")
    assert hub.default_model_dir() == comfy / "models" / "magicpose"
