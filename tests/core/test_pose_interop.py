"""POSE_KEYPOINT both ways with comfyui_controlnet_aux, and the coordinate guess on border cases.

"What comfyui_controlnet_aux draws" is ``support.pose_data.aux_draw``: its decoding and per-part convention guess
(described there) with controlnet_aux's real drawing functions. The border table compares, per case, the map we
draw from the JSON and the map comfyui_controlnet_aux draws with the map of the true pixel keypoints; it is printed
and recorded (figures) for the closing note. The clip tests feed what comfyui_controlnet_aux's OpenPose and DWPose
nodes write (``support.pose_data.aux_openpose_json`` / ``aux_dwpose_json``: OpenPose's (-1/W, -1/H, 1.0) marker, its
71-point face) through Extract Pose's logic with default smoothing. Core SDPose is tested in
tests/nodes/test_pose_sdpose.py.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from support import figures
from support.pose_data import (
    AUX_CLIP_SIZE,
    FINGERTIPS,
    FLICKER,
    NEVER,
    aux_clip_frames,
    aux_clip_json,
    aux_draw,
    aux_dwpose_json,
    aux_openpose_json,
    face_points,
    hand_points,
    lit_iou,
    standing_person,
)

from magicpose_core.pose.keypoints import (
    READ_THRESHOLD,
    Person,
    PoseFrame,
    frames_to_pose_keypoint,
    pose_keypoint_to_frames,
)
from magicpose_core.pose.pipeline import ExtractSettings, process_sequence, render_sequence
from magicpose_core.pose.render import render_pose

pytest.importorskip("controlnet_aux.open_pose")


def _diff(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape
    return int((a != b).any(axis=-1).sum())


def _ours(data: list[dict], coordinates: str = "auto") -> list[np.ndarray]:
    return [render_pose(f.thresholded(READ_THRESHOLD)) for f in pose_keypoint_to_frames(data, coordinates)]


def _normalised_json(frames: list[PoseFrame]) -> list[dict]:
    """0-1 JSON as comfyui_controlnet_aux's OpenPose preprocessor writes it, points past the edge kept as they are."""
    return frames_to_pose_keypoint(frames, normalized=True, binary_confidence=True)


def _person(scale=1.0, offset=(0.0, 0.0), **kw) -> Person:
    return standing_person(scale, offset, **kw)


def _border_cases() -> dict[str, tuple[list[PoseFrame], list[dict]]]:
    cases = {}
    # the case: one wrist at x = 1.03 in frame 2 of 3 (normalised)
    frames = [PoseFrame(512, 512, [_person(offset=(40 * t, 0))]) for t in range(3)]
    frames[1].people[0].body[4, 0] = 1.03 * 512
    cases["normalised, one wrist at x=1.03 in frame 2 of 3"] = frames, _normalised_json(frames)
    # a hand raised out of the top of the frame (hand points up to -20 %)
    p = _person(offset=(0, 60))
    p.body[4] = [186, 0.02 * 512, 1]
    p.right_hand = hand_points(p.body[4, :2], scale=2.5)
    frames = [PoseFrame(512, 512, [p])]
    assert (p.right_hand[:, 1] < 0).sum() >= 10 and p.right_hand[:, 1].min() > -0.2 * 512
    cases["normalised, hand raised out of the top (to -20 %)"] = frames, _normalised_json(frames)
    # a person walking out at the right edge: ~20 % of the points in (1, 1.25]
    frames = [PoseFrame(512, 512, [_person(offset=(200, 0))])]
    xs = np.concatenate([v[v[:, 2] > 0, 0] for _, v in frames[0].people[0].parts()]) / 512
    assert 0.05 < (xs > 1).mean() < 0.25 and xs.max() <= 1.25
    cases["normalised, person leaving at the right (to 125 %)"] = frames, _normalised_json(frames)
    # pixel pose of a small person at the origin, some coordinates below 1 px
    p = _person(scale=0.25, offset=(-47, -22), face=False)
    frames = [PoseFrame(512, 512, [p])]
    assert ((np.abs(p.body[:, :2]) <= 1.25).any(axis=1)).any()
    cases["pixels, small person at the origin"] = frames, frames_to_pose_keypoint(frames, False, True)
    # tiny canvases
    for w, h in ((8, 8), (24, 16)):
        s = min(w, h) / 512
        frames = [PoseFrame(w, h, [_person(scale=s, hands=False, face=False)])]
        cases[f"normalised, {w}x{h} canvas"] = frames, _normalised_json(frames)
        cases[f"pixels, {w}x{h} canvas"] = frames, frames_to_pose_keypoint(frames, False, True)
    # empty frames in between, and a frame whose only person has no body
    faceonly = Person(face=face_points(np.array([256.0, 200.0]), 80))
    frames = [PoseFrame(512, 512, [_person()]), PoseFrame(512, 512, []), PoseFrame(512, 512, [faceonly]),
              PoseFrame(512, 512, [_person(offset=(150, 0))])]
    cases["normalised, empty and face-only frames between"] = frames, _normalised_json(frames)
    frames = [PoseFrame(768, 512, [_person(offset=(100, 0)), _person(scale=0.5, offset=(500, 200))])]
    cases["pixels, two people, 768x512"] = frames, frames_to_pose_keypoint(frames, False, True)
    return cases


def test_coordinate_guess_on_border_cases_matches_the_true_map():
    rows = []
    for name, (truth, data) in _border_cases().items():
        data = json.loads(json.dumps(data))  # what travels between nodes: plain JSON values
        expect = [render_pose(f) for f in truth]
        ours = sum(_diff(a, b) for a, b in zip(_ours(data), expect))
        aux = sum(_diff(aux_draw(d), b) for d, b in zip(data, expect))
        lit = sum(int(b.any(-1).sum()) for b in expect)
        rows.append((name, lit, ours, aux))
    print("\ncoordinate guess, differing pixels vs the true map (lit pixels | ours | comfyui_controlnet_aux):")
    for r in rows:
        print(f"  {r[0]:52s} {r[1]:7d} | {r[2]:5d} | {r[3]:6d}")
    figures.record("pose border cases: (case, lit px, ours diff, comfyui_controlnet_aux diff)", rows)
    assert all(ours == 0 for _, _, ours, _ in rows), rows
    assert any(aux > 0 for *_, aux in rows), "the table no longer shows comfyui_controlnet_aux's collapse"


def test_one_frame_cannot_flip_another():
    frames = [PoseFrame(512, 512, [_person()]) for _ in range(3)]
    data = _normalised_json(frames)
    data[2]["people"][0]["pose_keypoints_2d"][12:14] = [900.0, 40.0]  # a pixel-scale wrist in another frame
    got = pose_keypoint_to_frames(data)
    np.testing.assert_allclose(got[0].people[0].body[:, :2], frames[0].people[0].body[:, :2], atol=1e-9)
    assert got[2].people[0].body[4, 2] == 0  # 900 x 512 px: far off the canvas, a missing point


@pytest.mark.parametrize("coordinates", ["normalized", "pixels"])
def test_explicit_coordinates_override_the_guess(coordinates):
    frame = PoseFrame(512, 512, [_person(scale=0.004, offset=(0.1, 0.1))])  # a pixel person smaller than 2 px
    data = frames_to_pose_keypoint([frame], normalized=False, binary_confidence=True)
    got = pose_keypoint_to_frames(data, coordinates)[0].people[0].body
    factor = 512 if coordinates == "normalized" else 1
    on = frame.people[0].body[:, 2] > 0
    np.testing.assert_allclose(got[on, :2], frame.people[0].body[on, :2] * factor)
    with pytest.raises(ValueError, match="coordinates must be one of"):
        pose_keypoint_to_frames(data, "percent")


def _our_people() -> list[PoseFrame]:
    rng = np.random.default_rng(3)
    no_hands = _person(offset=(-120, 20), hands=False)
    no_body = Person(face=face_points(np.array([420.0, 120.0]), 60),
                     right_hand=hand_points(np.array([380.0, 300.0])))
    partial = _person(offset=(60, 30), rng=rng)
    partial.body[[3, 9, 13]] = 0.0
    partial.face[:10] = 0.0
    return [PoseFrame(512, 512, [no_hands, no_body, partial]), PoseFrame(512, 512, []),
            PoseFrame(640, 384, [_person(scale=0.7, offset=(150, -20))])]


@pytest.mark.parametrize("normalized", [False, True])
def test_what_we_write_comfyui_controlnet_aux_draws_the_same(normalized):
    """Our output (full part lists, c = 1.0, never null) decoded and drawn as comfyui_controlnet_aux does: the
    same map as ours, no TypeError for a person without a body, and the old null-body output would have raised."""
    frames = _our_people()
    data = json.loads(json.dumps(frames_to_pose_keypoint(frames, normalized=normalized, binary_confidence=True)))
    for d, f in zip(data, frames):
        for p in d["people"]:
            assert [len(p[k]) for k in ("pose_keypoints_2d", "face_keypoints_2d", "hand_left_keypoints_2d",
                                        "hand_right_keypoints_2d")] == [54, 210, 63, 63]
        assert _diff(aux_draw(d), render_pose(f)) == 0
    old = dict(data[0], people=[dict(data[0]["people"][1], pose_keypoints_2d=None)])
    with pytest.raises(TypeError):
        aux_draw(old)


def test_what_comfyui_controlnet_aux_writes_we_draw_the_same():
    """Its DWPose (pixels, null parts), its OpenPose (0-1) and a pose editor's single dict with ``version`` /
    ``animals`` keys: our map equals what it draws itself."""
    frames = _our_people()
    dwpose = [aux_dwpose_json(f) for f in frames]
    openpose = frames_to_pose_keypoint([f.transformed(lambda xy: np.clip(xy, 0, 383), f.width, f.height)
                                        for f in frames], normalized=True, binary_confidence=True)
    editor = dict(aux_dwpose_json(frames[2]), version="1.0", animals=[])
    for name, data in (("dwpose", dwpose), ("openpose", openpose), ("editor", [editor])):
        data = json.loads(json.dumps(data))
        for ours, d in zip(_ours(data), data):
            assert _diff(ours, aux_draw(d)) == 0, name


# ---------------------------------------------------------------------------------------------------------------
# comfyui_controlnet_aux OpenPose / DWPose -> Extract Pose (default smoothing) -> pose map

CLIP_W, CLIP_H, CLIP_T = AUX_CLIP_SIZE


def _maps(seq, settings) -> np.ndarray:
    return (render_sequence(seq, settings).numpy() * 255).round().astype(np.uint8)


def test_aux_markers_are_missing_points_per_part():
    """OpenPose's (-1/W, -1/H) marker (with c = 1.0, or any confidence) and (0, 0) in hands and faces are missing;
    body points are missing by confidence only (comfyui_controlnet_aux draws a body point at (0, 0) with c = 1);
    a face of 71 points loses the background point, a shorter one keeps its points in order."""
    frame = aux_clip_frames()[1]
    data = aux_openpose_json(frame, face_background=(200.0, 300.0))
    p = data["people"][0]
    assert len(p["face_keypoints_2d"]) == 3 * 71 and p["hand_right_keypoints_2d"][3 * 8:3 * 9] == pytest.approx(
        [-1 / CLIP_W, -1 / CLIP_H, 1.0])
    p["hand_left_keypoints_2d"][3 * 3:3 * 6] = [-1 / 600, -1 / 900, 0.7, 0.0, 0.0, 1.0, 0.3, -1 / 900, 1.0]
    p["pose_keypoints_2d"][3 * 17:] = [0.0, 0.0, 1.0]
    got = pose_keypoint_to_frames([data])[0]
    a, b = got.people
    truth = frame.people[0]
    on = truth.right_hand[:, 2] > 0
    assert (a.right_hand[:, 2] > 0).tolist() == on.tolist() and not on[FLICKER].any()
    np.testing.assert_allclose(a.right_hand[on, :2], truth.right_hand[on, :2], atol=1e-3)
    assert (a.left_hand[[3, 4, 5, NEVER], 2] == 0).all() and (a.left_hand[[0, 1, 2, 6], 2] == 1).all()
    np.testing.assert_allclose(a.face[:, :2], truth.face[:, :2], atol=1e-3)  # 70 landmarks, background dropped
    assert a.body[17].tolist() == [0.0, 0.0, 1.0]
    assert b.left_hand is not None and not (b.left_hand[:, 2] > 0).any() and b.right_hand is None and b.face is None
    # a face with missing landmarks left out (56 points): in order, the rest missing; more than 71: an error
    p["face_keypoints_2d"] = p["face_keypoints_2d"][:3 * 56]
    face = pose_keypoint_to_frames([data])[0].people[0].face
    assert (face[:56, 2] == 1).all() and not face[56:].any()
    p["face_keypoints_2d"] = [0.5, 0.5, 1.0] * 72
    with pytest.raises(ValueError, match="up to 71"):
        pose_keypoint_to_frames([data])


def test_convention_per_part_as_comfyui_controlnet_aux_decides():
    """Its consumers' rule (per part: all present |x|, |y| <= 1 -> 0-1) for every part it calls 0-1, even in a frame
    whose other parts are pixels; a part it would call pixels follows the frame's vote (a wrist past the edge of a
    0-1 frame stays 0-1). Checked on everything its two nodes write: each part read in the convention it has."""
    frame = PoseFrame(CLIP_W, CLIP_H, [_person(offset=(10, 160))])
    mixed = frames_to_pose_keypoint([frame], normalized=False, binary_confidence=True)[0]
    norm = frames_to_pose_keypoint([frame], normalized=True, binary_confidence=True)[0]
    mixed["people"][0]["hand_left_keypoints_2d"] = norm["people"][0]["hand_left_keypoints_2d"]
    got = pose_keypoint_to_frames([mixed])[0].people[0]
    for part in ("body", "face", "left_hand", "right_hand"):
        np.testing.assert_allclose(getattr(got, part), getattr(frame.people[0], part), atol=1e-9, err_msg=part)
    for writer in ("openpose", "dwpose"):
        for d, f in zip(aux_clip_json(writer), aux_clip_frames()):
            for q, truth in zip(pose_keypoint_to_frames(d)[0].people, f.people):
                for part in ("body", "face", "left_hand", "right_hand"):
                    got, want = getattr(q, part), getattr(truth, part)
                    if want is None or not (want[:, 2] > 0).any():
                        assert got is None or not (got[:, 2] > 0).any(), (writer, part)
                        continue
                    n = 68 if part == "face" else len(want)  # DWPose's face 68, 69 are the body's eyes
                    np.testing.assert_allclose(got[:n], want[:n], atol=1e-3, err_msg=f"{writer} {part}")


@pytest.mark.parametrize("writer", ["openpose", "dwpose"])
def test_aux_clip_through_extract_pose_with_default_smoothing(writer):
    """comfyui_controlnet_aux OpenPose / DWPose POSE_KEYPOINT -> Extract Pose's logic with its defaults (largest
    person, medium smoothing; output canvas = the POSE_KEYPOINT canvas): every present fingertip of A lands within
    1 px of where it is, in every frame; a fingertip missing for 2 frames is bridged (smoothing's gap filling) at its
    place, one never found stays absent; B's hands and face are absent. The pose map against comfyui_controlnet_aux's
    own drawing of the same keypoints: identical where no gap was bridged, once the background face dot we drop is
    left out of theirs; IoU of drawn pixels with their drawing as is >= 0.99 over the clip."""
    data = aux_clip_json(writer)
    truth = aux_clip_frames()
    settings = ExtractSettings(width=CLIP_W, height=CLIP_H, threshold=READ_THRESHOLD)
    seq = process_sequence(pose_keypoint_to_frames(data), settings)
    ta = truth[0].people[0]  # static: one true place per point
    err = []
    for f in seq.output:
        (a,) = f.people
        for hand, th, tips in ((a.right_hand, ta.right_hand, FINGERTIPS), (a.left_hand, ta.left_hand, FINGERTIPS[:-1])):
            assert (hand[tips, 2] > 0).all()
            err += np.hypot(*(hand[tips, :2] - th[tips, :2]).T).tolist()
        assert a.left_hand[NEVER, 2] == 0
    b_seq = process_sequence(pose_keypoint_to_frames(data), ExtractSettings(
        width=CLIP_W, height=CLIP_H, threshold=READ_THRESHOLD, person="index", person_index=1))
    for f in b_seq.output:
        (b,) = f.people
        assert b.left_hand is None and b.right_hand is None and b.face is None and (b.body[:, 2] > 0).all()
    # the map: ours (A only, default settings) vs comfyui_controlnet_aux drawing A
    no_bg = aux_clip_json(writer, background=False)  # their POSE_KEYPOINT minus the background face dot we drop
    ours = _maps(seq, settings)
    theirs = np.stack([aux_draw(dict(d, people=d["people"][:1])) for d in no_bg])
    theirs_bg = np.stack([aux_draw(dict(d, people=d["people"][:1])) for d in data])
    steady = [t for t in range(CLIP_T) if t % 3 != 1]
    exact = sum(_diff(ours[t], theirs[t]) for t in steady)
    iou = lit_iou(ours, theirs_bg)  # over the clip; per frame >= 0.98 (a bridged frame: 2 fingertips + 1 dot)
    assert min(lit_iou(o, x) for o, x in zip(ours, theirs_bg)) >= 0.98
    # every person, smoothing off: nothing bridged, so the map is theirs minus the background dot
    everyone = ExtractSettings(width=CLIP_W, height=CLIP_H, threshold=READ_THRESHOLD, person="all", smoothing="off")
    all_maps = _maps(process_sequence(pose_keypoint_to_frames(data), everyone), everyone)
    all_exact = sum(_diff(o, aux_draw(d)) for o, d in zip(all_maps, no_bg))
    figures.record(f"aux {writer} clip -> Extract Pose (max fingertip error px, differing px where nothing bridged, "
                   "IoU of drawn px vs aux's drawing over the clip, differing px person=all)",
                   [max(err), exact, iou, all_exact])
    print(f"\n{writer}: fingertips max {max(err):.3f} px; map vs aux: {exact} px differ (steady frames), "
          f"IoU {iou:.4f}; person=all {all_exact} px differ")
    assert max(err) <= 1.0
    assert exact == 0 and all_exact == 0 and iou >= 0.99
