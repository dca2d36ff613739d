"""MediaPipe Holistic on real photos shipped by registry packages (scikit-image astronaut, matplotlib's Grace
Hopper): keypoints where a person's are, checked against OpenCV's own Haar face detector; a rendered map in the
expected places; tracking + smoothing on a synthetic clip with known motion."""
from __future__ import annotations

import os
import sys

import cv2
import numpy as np
import pytest
from support.pose_data import astronaut, grace_hopper

from magicpose_core.pose.detect import create_detector
from magicpose_core.pose.pipeline import ExtractSettings, detect_sequence, process_sequence, render_sequence
from magicpose_core.pose.render import render_pose
from magicpose_core.pose.smoothing import jitter

pytest.importorskip("mediapipe")
PHOTOS = {"astronaut": astronaut, "grace_hopper": grace_hopper}


@pytest.fixture(scope="module")
def detector():
    return create_detector("mediapipe")


def _face_region(img: np.ndarray) -> tuple[float, float, float, float]:
    """OpenCV's Haar frontal-face box (shipped in the opencv wheel), grown by 25 % (Haar boxes cut the chin)."""
    cascade = cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml"))
    faces = cascade.detectMultiScale(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), 1.1, 5, minSize=(60, 60))
    assert len(faces) == 1
    x, y, w, h = (float(v) for v in faces[0])
    return x - 0.25 * w, y - 0.25 * h, x + 1.25 * w, y + 1.25 * h


def _inside(pts: np.ndarray, box) -> bool:
    return bool(((pts[:, 0] >= box[0]) & (pts[:, 0] <= box[2]) & (pts[:, 1] >= box[1]) & (pts[:, 1] <= box[3])).all())


@pytest.mark.parametrize("name", list(PHOTOS))
def test_keypoints_on_real_photos(detector, name):
    img = PHOTOS[name]()
    frame = detector(img)
    assert (frame.width, frame.height) == (img.shape[1], img.shape[0]) and len(frame.people) == 1
    p = frame.people[0]
    box = _face_region(img)
    body = p.body
    assert (body[[0, 14, 15, 16, 17], 2] > 0).all(), "nose, eyes and ears are visible in both photos"
    assert _inside(body[[0, 14, 15], :2], box)
    assert p.face is not None and (p.face[:, 2] > 0).all() and _inside(p.face[:, :2], box)
    assert (body[[1, 2, 5], 2] > 0).all()
    assert (body[[2, 5], 1] > p.face[:, 1].max()).all(), "shoulders lie below the face"
    # subject's right is on the image's left for a person facing the camera: not swapped
    assert body[2, 0] < body[1, 0] < body[5, 0]
    assert body[14, 0] < body[0, 0] < body[15, 0] and body[16, 0] < body[17, 0]
    assert p.face[68, 0] < p.face[69, 0] and p.face[36, 0] < p.face[45, 0]
    # pupils sit inside their eye contours
    for pupil, eye in ((68, slice(36, 42)), (69, slice(42, 48))):
        lo, hi = p.face[eye, :2].min(0), p.face[eye, :2].max(0)
        assert (lo - 2 <= p.face[pupil, :2]).all() and (p.face[pupil, :2] <= hi + 2).all()
    # the map: white face dots inside the face region, the Neck-RShoulder limb, nothing above the head
    m = render_pose(frame)
    white = np.argwhere((m == 255).all(-1))[:, ::-1]  # (N, 2) x, y
    assert len(white) > 200 and _inside(white, box)
    mid = ((body[1, :2] + body[2, :2]) / 2).astype(int)
    assert (m[mid[1], mid[0]] == [153, 0, 0]).all()
    assert not m[: int(box[1]) - 5].any()


def test_video_tracking_and_smoothing_on_a_synthetic_clip():
    """24 frames of the astronaut moved by a known sway (docs/pose.md §6.1): back-projected keypoints stay put."""
    img = astronaut()
    n = 24
    shifts = np.stack([12 * np.sin(np.arange(n) * 0.5), 6 * np.cos(np.arange(n) * 0.4)], 1)  # (T, 2)
    frames = [cv2.warpAffine(img, np.float32([[1, 0, dx], [0, 1, dy]]), (512, 512), borderMode=cv2.BORDER_REFLECT)
              for dx, dy in shifts]

    def stable_points(detector, smoothing):
        raw = detect_sequence(detector, frames)
        seq = process_sequence(raw, ExtractSettings(smoothing=smoothing, threshold=detector.threshold))
        pts = []
        for f, (dx, dy) in zip(seq.source, shifts):
            body = f.people[0].body
            assert (body[[0, 1, 2, 5, 14, 15], 2] > 0).all()
            pts.append(body[[0, 1, 2, 5, 14, 15], :2] - [dx, dy])   # undo the known motion
        return np.array(pts), seq

    static, _ = stable_points(create_detector("mediapipe"), "off")
    smooth, seq = stable_points(create_detector("mediapipe", video=True), "medium")
    print(f"jitter of back-projected points: static {jitter(static):.2f} px, "
          f"tracking + smoothing {jitter(smooth):.2f} px")
    assert jitter(smooth) < jitter(static)
    assert np.abs(smooth - static.mean(0)).mean() < 6.0          # same place as the per-frame detections
    maps = render_sequence(seq, ExtractSettings())
    assert maps.shape == (n, 512, 512, 3) and (maps.flatten(1).amax(1) > 0).all()


def test_missing_mediapipe_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "mediapipe", None)
    with pytest.raises(RuntimeError, match=r"pip install \"mediapipe==0.10.21\""):
        create_detector("mediapipe")


def _photos() -> dict:
    from support.pose_data import frontend_photo, full_body_dancer, padded

    return {
        "astronaut": astronaut(),
        "grace_hopper": grace_hopper(),
        "selfie (frontend top-left)": frontend_photo("top-left-*.jpg"),
        "astronaut, padded below": padded(astronaut(), "below"),
        "astronaut, padded around": padded(astronaut(), "around"),
        "grace_hopper, padded around": padded(grace_hopper(), "around"),
        "full-body dancer (frontend poster)": full_body_dancer(),
    }


LEGS = [8, 9, 10, 11, 12, 13]


def test_half_body_gets_no_legs_full_body_keeps_all_and_visible_hands_are_found(detector):
    """Real photos: portraits (and portraits in a larger black frame, where MediaPipe invents hips at visibility
    1.0 and knees above them) get no lower body; the full-body photo keeps 18/18 and its raised right hand."""
    from magicpose_core.pose.mediapipe_backend import MediaPipeDetector

    rows, plain = [], MediaPipeDetector(hand_crops=False)
    for name, img in _photos().items():
        p = detector(img).people[0]
        on = p.body[:, 2] > 0
        hands = {side: int((v[:, 2] > 0).sum()) if v is not None else 0
                 for side, v in (("left", p.left_hand), ("right", p.right_hand))}
        q = plain(img).people[0]
        holistic_hands = sum(v is not None and bool((v[:, 2] > 0).any()) for v in (q.left_hand, q.right_hand))
        rows.append((name, int(on.sum()), int(on[LEGS].sum()), hands["left"], hands["right"], holistic_hands))
        if "full-body" in name:
            assert on.all(), f"{name}: {on.sum()}/18"
            wrist, elbow = p.body[4, :2], p.body[3, :2]
            hand = p.right_hand
            assert hand is not None and (hand[:, 2] > 0).all()
            assert np.linalg.norm(hand[0, :2] - wrist) < 0.5 * np.linalg.norm(wrist - elbow)
            assert hand[:, 1].max() < elbow[1], "the raised hand lies above its elbow"
            assert holistic_hands == 0, "Holistic alone now finds the hand: the crop search may be unnecessary"
        else:
            assert not on[LEGS].any(), f"{name}: legs {on[LEGS]}"
            assert (on[[0, 1, 2, 5]]).all()
    print("\nreal photos (body points | leg points | left hand | right hand | Holistic-only hands):")
    for r in rows:
        print(f"  {r[0]:36s} {r[1]:2d}/18 | {r[2]} | {r[3]:2d} | {r[4]:2d} | {r[5]}")
    from support import figures

    figures.record("mediapipe real photos: (photo, body/18, legs, left hand pts, right hand pts, holistic-only hands)",
                   rows)


def test_invented_legs_rules():
    from support.pose_data import STANDING

    from magicpose_core.pose.mapping import drop_invented_legs

    body = np.c_[STANDING, np.ones(18)]
    np.testing.assert_array_equal(drop_invented_legs(body), body)            # a standing person: untouched
    folded = body.copy()
    folded[[9, 12], 1] = folded[[8, 11], 1] - 10                             # both knees above the hips
    out = drop_invented_legs(folded)
    assert (out[LEGS] == 0).all() and (out[:8] == body[:8]).all()
    kick = body.copy()
    kick[9, 1], kick[10, 1] = kick[8, 1] - 20, kick[8, 1] - 30               # one knee lifted (a high kick)
    out = drop_invented_legs(kick)
    assert (out[[9, 10]] == 0).all() and (out[[8, 11, 12, 13]] == body[[8, 11, 12, 13]]).all()
    low = body.copy()
    low[[9, 12], 2] = 0.3                                                    # knees not visible: hips stay
    np.testing.assert_array_equal(drop_invented_legs(low), low)
    ankle = body.copy()
    ankle[13, 1] = ankle[12, 1] - 5                                          # an ankle above its knee
    assert drop_invented_legs(ankle)[13, 2] == 0 and drop_invented_legs(ankle)[12, 2] == 1
