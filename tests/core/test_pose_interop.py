"""POSE_KEYPOINT both ways with comfyui_controlnet_aux, and the coordinate guess on border cases.

"What comfyui_controlnet_aux draws" is ``support.pose_data.aux_draw``: its decoding and per-part convention guess
(described there) with controlnet_aux's real drawing functions. The border table compares, per case, the map we
draw from the JSON and the map comfyui_controlnet_aux draws with the map of the true pixel keypoints; it is printed
and recorded (figures) for the closing note. Core SDPose is tested in tests/nodes/test_pose_sdpose.py.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from support import figures
from support.pose_data import aux_draw, face_points, hand_points, standing_person

from magicpose_core.pose.keypoints import (
    READ_THRESHOLD,
    Person,
    PoseFrame,
    frames_to_pose_keypoint,
    pose_keypoint_to_frames,
)
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


def _aux_dwpose_json(frame: PoseFrame) -> dict:
    """A frame as comfyui_controlnet_aux's DWPose preprocessor writes it (its ``format_result`` +
    ``encode_poses_as_dict``, described): pixels, c = 1 / [0, 0, 0], a part with no point at all is null (the body
    is 18 x [0, 0, 0] instead), the face is 68 points + body REye + body LEye."""
    def part(v, n):
        if v is None or not (v[:, 2] > 0).any():
            return None if n != 18 else [0.0] * 54
        return [float(c) for x, y, s in v for c in ((x, y, 1.0) if s > 0 else (0.0, 0.0, 0.0))]

    people = []
    for p in frame.people:
        face = None if p.face is None else np.concatenate([p.face[:68], p.body[[14, 15]]])
        people.append({"pose_keypoints_2d": part(p.body, 18), "face_keypoints_2d": part(face, 70),
                       "hand_left_keypoints_2d": part(p.left_hand, 21),
                       "hand_right_keypoints_2d": part(p.right_hand, 21)})
    return {"people": people, "canvas_height": frame.height, "canvas_width": frame.width}


def test_what_comfyui_controlnet_aux_writes_we_draw_the_same():
    """Its DWPose (pixels, null parts), its OpenPose (0-1) and a pose editor's single dict with ``version`` /
    ``animals`` keys: our map equals what it draws itself."""
    frames = _our_people()
    dwpose = [_aux_dwpose_json(f) for f in frames]
    openpose = frames_to_pose_keypoint([f.transformed(lambda xy: np.clip(xy, 0, 383), f.width, f.height)
                                        for f in frames], normalized=True, binary_confidence=True)
    editor = dict(_aux_dwpose_json(frames[2]), version="1.0", animals=[])
    for name, data in (("dwpose", dwpose), ("openpose", openpose), ("editor", [editor])):
        data = json.loads(json.dumps(data))
        for ours, d in zip(_ours(data), data):
            assert _diff(ours, aux_draw(d)) == 0, name
