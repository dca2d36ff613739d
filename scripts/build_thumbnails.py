"""Template-browser thumbnails: ``workflows/<name>.jpg`` for each shipped workflow, drawn from its sample inputs.

ComfyUI_frontend 1.47 (bundled with ComfyUI 0.30.0) shows a custom node pack's workflows with ``<name>.jpg`` next to
``<name>.json`` as the thumbnail; it has no field for a description (title and description are both the file
name), so each thumbnail carries its one-line description as a caption under the pictures.

The pictures are the inputs ``make demo`` and the end-to-end tests use (``scripts/make_sample_inputs.py``: the
astronaut reference, the driving portrait in motion) and the openpose_full maps the MediaPipe detector finds in
them, drawn by ``magicpose_core.pose.render`` (the renderer the nodes use). MediaPipe is the test extra
(``scripts/env.sh`` installs it); nothing is downloaded. JPEG, 480x300, about 30 kB each.

    .venv/bin/python scripts/build_thumbnails.py            # (re)write workflows/*.jpg
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # appended, never prepended (our nodes/ must not shadow ComfyUI's)

import make_sample_inputs as samples  # noqa: E402  (this folder is sys.path[0] when run as a script)
from build_workflows import STYLE_PROMPT  # noqa: E402

from magicpose_core.pose.detect import create_detector  # noqa: E402
from magicpose_core.pose.render import render_pose  # noqa: E402

WIDTH, HEIGHT, CAPTION = 480, 300, 60          # thumbnail size; caption band height (px)
PANEL = (WIDTH - 4 * 6) // 3                   # three square-ish panels with 6 px gaps
QUALITY = 82
# One line each: what the workflow does (the template browser shows no other description).
CAPTIONS = {
    "video_dance_retarget": "Dance video: the photo's person performs the driving video's moves",
    "video_dance_long": "Long dance video: the whole clip window by window, flat memory",
    "image_pose_retarget": "Pose photos: the photo's person in each target pose",
    "face_expression_retarget": "Face: the driving face's expression and head motion on the photo",
    "stylised_reference": "Stylised: MagicPose as a MODEL patch, your SD1.5 + a text prompt",
}


def _fit(rgb: np.ndarray, w: int, h: int) -> Image.Image:
    """Centre-crop to w:h, then resize (the nodes' default fit)."""
    img = Image.fromarray(rgb)
    s = min(img.width / w, img.height / h)
    cw, ch = round(w * s), round(h * s)
    x0, y0 = (img.width - cw) // 2, (img.height - ch) // 2
    return img.crop((x0, y0, x0 + cw, y0 + ch)).resize((w, h), Image.LANCZOS)


def _pose_map(detector, rgb: np.ndarray) -> np.ndarray:
    detector.reset()
    frame = detector(rgb)
    if not frame.people:
        raise RuntimeError("MediaPipe found nobody in a sample input; the thumbnail would show an empty pose map")
    return render_pose(frame)


def _text_panel(text: str, w: int, h: int, font: ImageFont.ImageFont) -> Image.Image:
    panel = Image.new("RGB", (w, h), (40, 40, 48))
    d = ImageDraw.Draw(panel)
    words, lines, line = text.split(), [], ""
    for word in words:
        if d.textlength(f"{line} {word}".strip(), font=font) > w - 16:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    lines.append(line)
    d.text((8, 8), "prompt:", font=font, fill=(150, 150, 170))
    for i, ln in enumerate(lines):
        d.text((8, 32 + 22 * i), ln, font=font, fill=(235, 235, 235))
    return panel


def thumbnail(name: str, panels: list[tuple[Image.Image, str]], font, small) -> Image.Image:
    out = Image.new("RGB", (WIDTH, HEIGHT), (24, 24, 28))
    d = ImageDraw.Draw(out)
    ph = HEIGHT - CAPTION - 12
    for i, (img, label) in enumerate(panels):
        x = 6 + i * (PANEL + 6)
        out.paste(img.resize((PANEL, ph)) if img.size != (PANEL, ph) else img, (x, 6))
        d.rectangle((x, 6 + ph - 20, x + PANEL - 1, 6 + ph - 1), fill=(0, 0, 0))
        d.text((x + 6, 6 + ph - 19), label, font=small, fill=(255, 255, 255))
        if i:
            d.text((x - 6, 6 + ph // 2 - 12), "›", font=font, fill=(255, 210, 80), anchor="mm")
    d.text((8, HEIGHT - CAPTION + 4), "MagicPose", font=small, fill=(255, 210, 80))
    d.text((8, HEIGHT - CAPTION + 24), CAPTIONS[name], font=font, fill=(240, 240, 240))
    return out


def build(outdir: Path = ROOT / "workflows") -> list[Path]:
    font, small = ImageFont.load_default(size=15), ImageFont.load_default(size=13)
    detector = create_detector("mediapipe")
    ph = HEIGHT - CAPTION - 12
    ref = _fit(samples.reference_photo(), PANEL, ph)
    dance = samples.dance_frames(8, 384, 448)[2]                      # a frame of the driving video
    pose_photo = samples.pose_frames(384, 448, 2)[1]                  # a target-pose photo
    face = samples.face_frames(8, 384, 448)[3]                        # a frame of the face video
    sets = {
        "video_dance_retarget": [(ref, "reference"), (_fit(dance, PANEL, ph), "driving video"),
                                 (_fit(_pose_map(detector, dance), PANEL, ph), "pose per frame")],
        "video_dance_long": [(ref, "reference"), (_fit(dance, PANEL, ph), "driving video, any length"),
                             (_text_panel("window by window: pose maps, sampling, decode, a lossless part "
                                          "on disk; resumes after Cancel", PANEL, ph, font), "one window at a time")],
        "image_pose_retarget": [(ref, "reference"), (_fit(pose_photo, PANEL, ph), "target pose photo"),
                                (_fit(_pose_map(detector, pose_photo), PANEL, ph), "pose map")],
        "face_expression_retarget": [(ref, "reference"), (_fit(face, PANEL, ph), "driving face"),
                                     (_fit(_pose_map(detector, face), PANEL, ph), "face + pose map")],
        "stylised_reference": [(ref, "reference"), (_fit(_pose_map(detector, pose_photo), PANEL, ph), "pose map"),
                               (_text_panel(STYLE_PROMPT, PANEL, ph, font), "your SD1.5")],
    }
    written = []
    for name, panels in sets.items():
        path = outdir / f"{name}.jpg"
        thumbnail(name, panels, font, small).save(path, quality=QUALITY, optimize=True, progressive=False)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    for p in build():
        print(f"wrote {p.relative_to(ROOT)} ({p.stat().st_size / 1024:.0f} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
