"""POSE_KEYPOINT <-> PoseFrame: round trips in both coordinate conventions, controlnet_aux's own JSON, and
property-based tests that malformed input only ever raises ValueError with a clear message."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.pose_data import random_person, standing_person

from magicpose_core.pose.detect import as_rgb_uint8
from magicpose_core.pose.keypoints import Person, PoseFrame, frames_to_pose_keypoint, pose_keypoint_to_frames


def _frames(seed: int = 0) -> list[PoseFrame]:
    rng = np.random.default_rng(seed)
    frames = []
    for w, h in ((512, 512), (604, 1080), (333, 517)):
        people = []
        for _ in range(2):
            p = random_person(rng, w, h)
            for _, v in p.parts():  # on-canvas so 'auto' is unambiguous; x, y >= 1: drawable hand / face points
                v[:, 0] = np.clip(v[:, 0], 1, w - 1)
                v[:, 1] = np.clip(v[:, 1], 1, h - 1)
                v[v[:, 2] <= 0] = 0.0
            people.append(p)
        frames.append(PoseFrame(w, h, people))
    frames.append(PoseFrame(64, 64, []))
    return frames


def _assert_same(a: list[PoseFrame], b: list[PoseFrame], conf: bool = True) -> None:
    assert len(a) == len(b)
    for fa, fb in zip(a, b):
        assert (fa.width, fa.height) == (fb.width, fb.height)
        assert len(fa.people) == len(fb.people)
        for pa, pb in zip(fa.people, fb.people):
            for part in ("body", "face", "left_hand", "right_hand"):
                va, vb = getattr(pa, part), getattr(pb, part)
                if va is None or not (va[:, 2] > 0).any():
                    assert vb is None or not (vb[:, 2] > 0).any()
                    continue
                np.testing.assert_array_equal(va[:, 2] > 0, vb[:, 2] > 0)
                np.testing.assert_allclose(va[:, :2], vb[:, :2], atol=1e-9)
                if conf:
                    np.testing.assert_allclose(va[:, 2], vb[:, 2])


@pytest.mark.parametrize("normalized", [True, False])
def test_round_trip_both_conventions(normalized):
    frames = _frames()
    data = frames_to_pose_keypoint(frames, normalized=normalized)
    json.dumps(data)  # plain JSON types only
    coords = [v for f in data for p in f["people"] for k, v in p.items() if v for v in v]
    assert (max(abs(c) for c in coords) <= 1.0) == normalized
    _assert_same(frames, pose_keypoint_to_frames(data))                     # auto-detected convention
    _assert_same(frames, pose_keypoint_to_frames(data, "normalized" if normalized else "pixels"))
    _assert_same(frames, pose_keypoint_to_frames(json.dumps(data)))          # JSON text too


def test_binary_confidence_matches_controlnet_aux_encoder():
    frame = PoseFrame(512, 512, [standing_person()])
    frame.people[0].body[3] = [10, 10, 0.4]
    frame.people[0].body[4] = 0.0
    data = frames_to_pose_keypoint([frame], binary_confidence=True)[0]
    body = np.array(data["people"][0]["pose_keypoints_2d"]).reshape(-1, 3)
    assert body[3, 2] == 1.0 and body[4].tolist() == [0.0, 0.0, 0.0]
    assert data["canvas_width"] == 512 and len(data["people"][0]["face_keypoints_2d"]) == 210


def test_reads_controlnet_aux_encoded_poses():
    """controlnet_aux's OpenPose JSON (comfyui_controlnet_aux encode_poses_as_dict layout), normalised."""
    aux = pytest.importorskip("controlnet_aux.open_pose")
    from support.pose_data import to_controlnet_aux

    frame = PoseFrame(640, 480, [standing_person(offset=(40, 0))])
    poses = to_controlnet_aux(frame)

    def flat(kps):
        return None if kps is None else [v for k in kps for v in ([k.x, k.y, 1.0] if k is not None else [0, 0, 0])]

    data = {"people": [{"pose_keypoints_2d": flat(p.body.keypoints), "face_keypoints_2d": flat(p.face),
                        "hand_left_keypoints_2d": flat(p.left_hand), "hand_right_keypoints_2d": flat(p.right_hand)}
                       for p in poses], "canvas_width": 640, "canvas_height": 480}
    got = pose_keypoint_to_frames([data])[0]
    np.testing.assert_allclose(got.people[0].body[:, :2], frame.people[0].body[:, :2], atol=1e-9)
    assert aux is not None


def test_68_point_face_gets_pupils_and_body25_is_reduced():
    face68 = [v for i in range(68) for v in (100 + i, 200 + i, 0.9)]
    body25 = [v for i in range(25) for v in (10 + i, 20 + i, 1.0)]
    f = pose_keypoint_to_frames([{"people": [{"pose_keypoints_2d": body25, "face_keypoints_2d": face68}],
                                  "canvas_width": 1000, "canvas_height": 1000}])[0]
    face = f.people[0].face
    assert face.shape == (70, 3)
    np.testing.assert_allclose(face[68, :2], [100 + np.mean(range(36, 42)), 200 + np.mean(range(36, 42))])
    np.testing.assert_allclose(face[69, :2], [100 + np.mean(range(42, 48)), 200 + np.mean(range(42, 48))])
    body = f.people[0].body
    assert body[8, 0] == 10 + 9 and body[7, 0] == 10 + 7 and body[17, 0] == 10 + 18  # MidHip (8) skipped


@pytest.mark.parametrize("bad,match", [
    (42, "list of frame dicts"),
    ("{not json", "not valid JSON"),
    ([1], "must be a dict"),
    ([{"people": []}], "canvas_width"),
    ([{"people": [], "canvas_width": 0, "canvas_height": 10}], "positive integer"),
    ([{"people": [], "canvas_width": 10.5, "canvas_height": 10}], "positive integer"),
    ([{"people": {}, "canvas_width": 10, "canvas_height": 10}], "people must be a list"),
    ([{"people": [[1, 2]], "canvas_width": 10, "canvas_height": 10}], "person 0 must be a dict"),
    ([{"people": [{"pose_keypoints_2d": [1, 2]}], "canvas_width": 10, "canvas_height": 10}], "multiple of 3"),
    ([{"people": [{"pose_keypoints_2d": [1, 2, 3] * 17}], "canvas_width": 10, "canvas_height": 10}], "expected 18"),
    ([{"people": [{"pose_keypoints_2d": ["a", 2, 3] * 18}], "canvas_width": 10, "canvas_height": 10}], "a number"),
    ([{"people": [], "canvas_width": 65536, "canvas_height": 65536}], "limited to 16384"),
    ([{"people": [], "canvas_width": 10, "canvas_height": 10**400}], "limited to 16384"),
    ([{"people": [{"face_keypoints_2d": [1, 2, 1] * 72}], "canvas_width": 10, "canvas_height": 10}], "up to 71"),
    ([{"people": [{"pose_keypoints_2d": "1,2,3"}], "canvas_width": 10, "canvas_height": 10}], "flat list"),
])
def test_malformed_pose_keypoint_raises_clear_value_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        pose_keypoint_to_frames(bad)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=5),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=30)
keys = st.sampled_from(["pose_keypoints_2d", "face_keypoints_2d", "hand_left_keypoints_2d",
                        "hand_right_keypoints_2d", "other"])
point_lists = st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32) | st.integers(-5, 5000)
                       | st.none(), max_size=220)
people = st.lists(st.dictionaries(keys, point_lists | json_values, max_size=4) | json_values, max_size=3)
frames = st.fixed_dictionaries({"people": people | json_values},
                               optional={"canvas_width": json_values | st.integers(-5, 5000),
                                         "canvas_height": json_values | st.integers(-5, 5000)})


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(frames, max_size=3) | json_values)
def test_fuzzed_pose_keypoint_only_raises_value_error(data):
    try:
        out = pose_keypoint_to_frames(data)
    except ValueError as e:
        assert len(str(e)) > 15
        return
    for f in out:  # whatever was accepted is a valid, renderable frame
        assert f.width >= 1 and f.height >= 1
        for p in f.people:
            assert p.body.shape == (18, 3) and np.isfinite(p.body).all()


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=0, max_size=5),
       st.sampled_from([np.uint8, np.float32, np.int64, np.bool_]))
def test_odd_image_shapes_only_raise_value_error(shape, dtype):
    img = np.zeros(shape, dtype=dtype)
    try:
        out = as_rgb_uint8(img)
    except ValueError as e:
        assert "image" in str(e)
        return
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3


def test_person_validation():
    with pytest.raises(ValueError, match=r"\(18, 3\)"):
        Person(body=np.zeros((17, 3)))
    assert Person(body=np.full((18, 3), np.nan)).is_empty  # NaN / inf points are missing points
    with pytest.raises(ValueError, match="positive integer"):
        PoseFrame(0, 10)
    p = Person(body=np.c_[np.ones((18, 2)) * 5, -np.ones(18)])
    assert p.is_empty and (p.body == 0).all()  # negative confidence = missing = (0, 0, 0)


def test_unbounded_numbers_become_missing_points():
    """NaN / inf / null / 1e300 / 1e30 / ints beyond float range and negative confidences: missing, not a crash
    (OpenCV raised OverflowError on 1e300 and TypeError on 1e30); points within one canvas outside are kept (hand
    and face points only at x, y >= 1: ControlNet's drawing skips the others)."""
    from magicpose_core.pose.render import render_pose

    body = [256, 100, 1, 256, 150, 1]
    bad = [[float("nan"), 5, 1], [5, float("inf"), 1], [None, 5, 1], [1e300, 5, 1], [5, -1e30, 1], [10**400, 5, 1],
           [5, 5, -1], [5, 5, float("nan")], [1100, 300, 1], [-600, 300, 1]]
    kept = [[700, 300, 1], [900, 1000, 1]]
    pts = bad + kept
    body += [v for p in pts[:6] for v in p] + [-400, -500, 1] + [0, 0, 0] * 9
    hand = [v for p in (pts + [[0, 0, 0]] * 9)[:21] for v in p]
    frame = pose_keypoint_to_frames([{"people": [{"pose_keypoints_2d": body, "hand_left_keypoints_2d": hand}],
                                      "canvas_width": 512, "canvas_height": 512}], "pixels")[0]
    p = frame.people[0]
    assert (p.body[2:8] == 0).all() and (p.body[:2, 2] == 1).all() and p.body[8].tolist() == [-400, -500, 1]
    assert (p.left_hand[:10] == 0).all()
    np.testing.assert_array_equal(p.left_hand[10:12], kept)
    assert render_pose(frame).any()
    # render_pose bounds what other code paths (retargeting, detectors) hand it too
    far = Person(body=np.c_[np.full((18, 2), 1e300), np.ones(18)])
    assert not render_pose(PoseFrame(64, 64, [far])).any()
    with pytest.raises(ValueError, match="16384"):
        render_pose(PoseFrame(16385, 4, []))
