"""Provenance core: the payload names the pack and its pyproject version; RivaGAN marks survive real
encoders (h264, vp9 through the pack's own writer) and are read back with the label by the check and the CLI;
unmarked real photos are not flagged; the RivaGAN files ship with the pack (an installed invisible-watermark is
the fallback); missing files are reported once and stop nothing."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from magicpose_core.media.video import encode_video
from magicpose_core.provenance import check, label, payload, watermark

ROOT = Path(__file__).resolve().parents[2]


def photo(name: str = "astronaut", size: tuple[int, int] = (320, 256)) -> np.ndarray:
    import cv2
    import skimage.data

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        img = getattr(skimage.data, name)()
    return cv2.resize(img[:, :, :3], size, interpolation=cv2.INTER_AREA)  # (H, W, 3) uint8 RGB


def clip(name: str, n: int = 4, size: int = 256) -> list[np.ndarray]:
    """n frames of a slow pan over a real photo (moving content, as in a video)."""
    import cv2

    big = photo(name, (size * 2, size * 2))
    return [cv2.resize(big[8 * i:8 * i + size * 3 // 2, 12 * i:12 * i + size * 3 // 2], (size, size),
                       interpolation=cv2.INTER_AREA) for i in range(n)]


def test_payload_names_the_pack_and_the_pyproject_version():
    text = (ROOT / "pyproject.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', text, re.M).group(1)
    assert payload.pack_version() == version
    bits = payload.payload_bits()
    assert bits.shape == (32,) and set(np.unique(bits)) <= {0, 1}
    assert payload.describe_bits(bits) == f"MagicPose {version}"
    assert 10 <= int(bits.sum()) <= 22  # whitened: about half ones (0.1.0: 21)
    assert payload.describe_bits(payload.payload_bits("3.14.15")) == "MagicPose 3.14.15"
    assert not np.array_equal(payload.payload_bits("0.1.0"), payload.payload_bits("0.1.1"))
    assert payload.describe_bits(np.zeros(32, np.uint8)).startswith("unknown payload 0x")
    with pytest.raises(ValueError, match="does not fit"):
        payload.payload_bits("16.0.0")
    assert f"MagicPose {version}" in payload.known_payloads()


def test_label_metadata_and_finding_it():
    meta = label.label_metadata("0.1.0")
    assert meta == {"comment": "AI-generated with MagicPose 0.1.0"}
    assert label.find_label({"prompt": "{}", "COMMENT": "ai-generated with magicpose 0.1.0"}) is not None
    assert label.find_label({"prompt": "{}", "comment": "made with love"}) is None


def test_embed_decode_on_a_real_photo_keeps_size_and_is_invisible():
    import cv2

    img = photo("coffee", (384, 256))  # not square: the working scale keeps the aspect
    bits = payload.payload_bits()
    marked = watermark.embed(img, bits)
    assert marked.shape == img.shape and marked.dtype == np.uint8
    assert cv2.PSNR(marked, img) > 35
    reading = check.read_watermark([marked])
    assert reading.present and reading.bit_accuracy >= 30 / 32 and reading.payload.startswith("MagicPose")
    assert not check.read_watermark([img]).present
    with pytest.raises(ValueError, match="too small"):
        watermark.embed(np.zeros((16, 64, 3), np.uint8), bits)
    with pytest.raises(ValueError, match="uint8"):
        watermark.embed(img.astype(np.float32), bits)


@pytest.mark.parametrize("format,crf", [("mp4", 28), ("webm", 32)])
def test_real_encoder_round_trip_is_detected_with_its_label(tmp_path, format, crf):
    marked = list(watermark.mark_frames(clip("astronaut")))
    path = str(tmp_path / f"marked.{format}")
    encode_video(iter(marked), path, 12, format, crf, metadata=label.label_metadata(payload.pack_version()))
    report = check.check_file(path)
    assert report.kind == "video" and report.frame_count == 4 and (report.width, report.height) == (256, 256)
    assert report.present, report.text()
    assert report.watermark.payload == f"MagicPose {payload.pack_version()}"
    assert report.watermark.bit_accuracy >= check.PRESENT_MIN_BITS / 32
    assert report.label == f"AI-generated with MagicPose {payload.pack_version()}"


def test_unmarked_real_video_and_photos_are_not_flagged(tmp_path):
    from PIL import Image

    path = str(tmp_path / "plain.mp4")
    encode_video(iter(clip("coffee")), path, 12, "mp4", 19)
    report = check.check_file(path)
    assert not report.present and report.label is None and report.watermark.matching_bits < check.PRESENT_MIN_BITS
    for name in ("astronaut", "chelsea", "rocket"):
        Image.fromarray(photo(name)).save(tmp_path / f"{name}.png")
        assert not check.check_file(str(tmp_path / f"{name}.png")).present


def test_cli_reports_presence_payload_accuracy_and_label(tmp_path):
    from PIL import Image

    marked = watermark.embed(photo("chelsea"), payload.payload_bits())
    Image.fromarray(marked).save(tmp_path / "marked.png")
    Image.fromarray(photo("chelsea")).save(tmp_path / "plain.jpg", quality=90)
    video = str(tmp_path / "marked.mp4")
    encode_video(iter(watermark.mark_frames(clip("rocket", 3))), video, 8, "mp4", 19,
                 metadata=label.label_metadata(payload.pack_version()))

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "magicpose_core.provenance", "check", *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=300)

    r = cli(video, str(tmp_path / "marked.png"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("watermark: PRESENT") == 2 and "decoded payload: MagicPose" in r.stdout
    assert "label: AI-generated with MagicPose" in r.stdout and "bit accuracy" in r.stdout
    r = cli(str(tmp_path / "plain.jpg"), "--json")
    assert r.returncode == 1
    data = json.loads(r.stdout)
    assert data["watermark"]["present"] is False and data["label"] is None and len(data["watermark"]["bits"]) == 32
    r = cli(str(tmp_path / "missing.mp4"), video)
    assert r.returncode == 2 and "no such file" in r.stdout and "PRESENT" in r.stdout


BLOCKED = """
import logging, sys
sys.modules["imwatermark"] = None        # as if invisible-watermark were not installed
sys.path.insert(0, {root!r})
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
import numpy as np
from magicpose_core.provenance import watermark
watermark.BUNDLED_DIR = {empty!r}        # ... and the pack's rivagan/ folder lost its files
from magicpose_core.media.video import encode_video
assert watermark.frame_marker(True) is None and watermark.frame_marker(True) is None
assert watermark.frame_marker(False) is None
encode_video(iter([np.zeros((64, 64, 3), np.uint8)] * 2), {path!r}, 8, "mp4")
print("written")
"""

SHIPPED = {"rivagan_encoder.onnx": "66bc7814fadac7d686105c8ab26c6cf2cc8e40deb83e67bb6ef5b9de9b8ece0d",
           "rivagan_decoder.onnx": "6b006690cf352fa50a91a0b6d6241dbcded0a9957969e2c0665cf9a7011b3880"}


def test_the_pack_ships_the_rivagan_files_of_the_wheel_with_their_licence():
    import hashlib

    folder = Path(watermark.BUNDLED_DIR)
    assert folder == ROOT / "magicpose_core" / "provenance" / "rivagan"
    for name, digest in SHIPPED.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name
        assert digest in (folder / "SOURCE.md").read_text()                # the recorded provenance
    assert "MIT License" in (folder / "LICENSE").read_text() and "invisible-watermark 0.2.0" in (
        folder / "SOURCE.md").read_text()
    code = ("import sys; sys.modules['imwatermark'] = None; from magicpose_core.provenance import watermark; "
            "print(watermark.model_paths()[0]); print(watermark.unavailable_reason())")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(folder / "rivagan_encoder.onnx"), "None"]    # no package needed


def test_an_installed_invisible_watermark_package_is_the_fallback(tmp_path, monkeypatch):
    import shutil

    fake = tmp_path / "site" / "imwatermark"                           # the wheel's layout, no __init__ code run
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('never imported: only its files are used')\n")
    for name in SHIPPED:
        shutil.copy(Path(watermark.BUNDLED_DIR) / name, fake / name)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr(watermark, "BUNDLED_DIR", str(tmp_path / "empty"))
    watermark._sessions.cache_clear()
    try:
        assert watermark.model_paths() == (str(fake / "rivagan_encoder.onnx"), str(fake / "rivagan_decoder.onnx"))
        img = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
        assert watermark.embed(img, payload.payload_bits()).shape == img.shape
        (fake / "rivagan_decoder.onnx").unlink()                       # an incomplete package does not count
        watermark._sessions.cache_clear()
        assert "reinstall the pack" in watermark.unavailable_reason()
    finally:
        watermark._sessions.cache_clear()


def test_missing_model_files_are_reported_once_and_stop_nothing(tmp_path):
    path = str(tmp_path / "v.mp4")
    r = subprocess.run([sys.executable, "-c", BLOCKED.format(root=str(ROOT), path=path, empty=str(tmp_path))],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "written" and Path(path).is_file()
    warned = [line for line in r.stderr.splitlines() if "WITHOUT the invisible watermark" in line]
    assert len(warned) == 1 and 'pip install --no-deps "invisible-watermark==0.2.0"' in warned[0]
    assert "reinstall the pack" in warned[0]
    code = ("import sys; sys.modules['imwatermark'] = None; from magicpose_core.provenance import watermark; "
            f"watermark.BUNDLED_DIR = {str(tmp_path)!r}; from magicpose_core.provenance.__main__ import main; "
            f"sys.exit(main(['check', {path!r}]))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "not checked" in r.stdout and "--no-deps" in r.stdout


def test_spread_picks_evenly_and_bounded():
    assert check.spread(5) == [0, 1, 2, 3, 4]
    picked = check.spread(1000)
    assert len(picked) == check.MAX_CHECK_FRAMES and picked[0] == 0 and picked[-1] == 999
