"""Extract Pose's inputs from outside, in-process on real ComfyUI: the size rule shared with Load Reference, no
person in any frame, the coordinates choice, unknown keys kept, core SDPose both ways, and a property-based fuzz of
the node's entry point (only readable ValueErrors may come out)."""
from __future__ import annotations

import importlib
import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import figures
from support.pose_data import (
    AUX_CLIP_SIZE,
    FINGERTIPS,
    NEVER,
    STANDING,
    aux_clip_frames,
    aux_clip_json,
    face_points,
    hand_points,
    standing_person,
)

pytestmark = pytest.mark.comfy


@pytest.fixture(scope="module")
def mods(pack):
    names = ("nodes.extract_pose", "nodes.load_reference", "magicpose_core.pose.keypoints",
             "magicpose_core.pose.render")
    return {n.rsplit(".", 1)[1]: importlib.import_module(f"magicpose_pack.{n}") for n in names}


def run(mods, pose_keypoint=None, images=None, **kw):
    args = dict(detector="mediapipe", body=True, hands=True, face=True, person="largest", smoothing="off",
                fps=30.0, retarget="none", strength=1.0, face_transfer=True, width=512, height=512,
                fit="center_crop")
    args.update(kw)
    with torch.inference_mode():
        return mods["extract_pose"].ExtractPose.execute(images=images, pose_keypoint=pose_keypoint, **args)


def _frame(mods, w=512, h=512, people=1, **extra) -> dict:
    kp = mods["keypoints"]
    frame = kp.PoseFrame(w, h, [standing_person(offset=(40 * i, 0)) for i in range(people)])
    return dict(kp.frames_to_pose_keypoint([frame], normalized=False, binary_confidence=True)[0], **extra)


def test_sizes_not_multiple_of_8_are_rejected_at_validation_by_every_node(mods):
    """The one rule (geometry.model_size_problem) on both nodes that take a size: rejected, with the nearest
    valid size in the message; valid sizes and linked (unknown) sizes pass; execute checks too."""
    for node, name in ((mods["extract_pose"].ExtractPose, "Extract Pose"),
                       (mods["load_reference"].LoadReference, "Load Reference")):
        msg = node.validate_inputs(width=101, height=512)
        assert isinstance(msg, str) and name in msg and "multiples of 8" in msg and "104x512" in msg
        assert "outside" in node.validate_inputs(width=8, height=512)     # min/max are ours to check now
        assert node.validate_inputs(width=512, height=768) is True
        assert node.validate_inputs(width=None, height=100) is True       # a linked input: execute decides
    with pytest.raises(ValueError, match="multiples of 8"):
        run(mods, [_frame(mods)], width=100)


def test_no_person_in_any_frame_is_an_error_naming_the_fix(mods):
    empty = [{"people": [], "canvas_width": 512, "canvas_height": 512}] * 3
    with pytest.raises(ValueError, match="no person found in any of the 3 frame.*coordinates"):
        run(mods, empty)
    pytest.importorskip("mediapipe")
    with pytest.raises(ValueError, match="no person found in any of the 2 frame.*another detector"):
        run(mods, images=torch.zeros(2, 64, 64, 3))
    # a few empty frames stay a warning (tests/nodes/test_extract_pose.py covers the bridging)
    maps, _ = run(mods, [_frame(mods), empty[0]]).result
    assert maps[0].any() and not maps[1].any()


def test_coordinates_choice_and_unknown_keys_kept(mods):
    kp = mods["keypoints"]
    tiny = kp.PoseFrame(512, 512, [standing_person(scale=0.002)])        # a person 1 px tall, in pixels
    data = kp.frames_to_pose_keypoint([tiny], normalized=False, binary_confidence=True)
    data[0].update(version="ap10k", animals=[[[0.5, 0.5, 1.0], [0.25, 0.75, 1.0]]], note={"any": [1, 2]})
    _, auto = run(mods, data).result                                      # 0-1 by the guess: drawn full size
    _, pixels = run(mods, data, coordinates="pixels").result
    body = lambda out: np.array(out[0]["people"][0]["pose_keypoints_2d"]).reshape(18, 3)  # noqa: E731
    assert np.ptp(body(auto)[:, 1]) > 100 and np.ptp(body(pixels)[:, 1]) < 2
    for out in (auto, pixels):
        assert out[0]["version"] == "ap10k" and out[0]["note"] == {"any": [1, 2]}
        assert out[0]["animals"] == [[[256.0, 256.0, 1.0], [128.0, 384.0, 1.0]]]   # moved onto the output canvas
    _, normed = run(mods, data, output_coordinates="normalized").result
    assert normed[0]["animals"] == [[[0.5, 0.5, 1.0], [0.25, 0.75, 1.0]]]
    assert np.abs(body(normed)[:, :2]).max() <= 1.0


def test_comfyui_controlnet_aux_openpose_clip_through_the_node(mods):
    """The node on real ComfyUI with its defaults (auto coordinates, largest person, medium smoothing) on a clip as
    comfyui_controlnet_aux's OpenPose node writes it ((-1/W, -1/H, 1.0) for hand points it did not find, a 71-point
    face, a second person whose hand has no point found; tests/core/test_pose_interop.py has the details): every
    present fingertip within 1 px in the output POSE_KEYPOINT, the never-found one [0, 0, 0], and the map equal to
    comfyui_controlnet_aux's own drawing of the person in the frames where smoothing bridged nothing."""
    pytest.importorskip("controlnet_aux.open_pose")
    from support.pose_data import aux_draw

    w, h, n = AUX_CLIP_SIZE
    maps, out = run(mods, aux_clip_json("openpose"), smoothing="medium", width=w, height=h).result
    truth = aux_clip_frames()[0].people[0]
    for f in out:
        (p,) = f["people"]
        for key, want, tips in (("hand_right_keypoints_2d", truth.right_hand, FINGERTIPS),
                                ("hand_left_keypoints_2d", truth.left_hand, FINGERTIPS[:-1])):
            got = np.array(p[key]).reshape(21, 3)
            assert (got[tips, 2] == 1).all() and np.abs(got[tips, :2] - want[tips, :2]).max() <= 1.0
        assert p["hand_left_keypoints_2d"][3 * NEVER:3 * NEVER + 3] == [0.0, 0.0, 0.0]
    ours = (maps.numpy() * 255).round().astype(np.uint8)
    theirs = [aux_draw(dict(d, people=d["people"][:1])) for d in aux_clip_json("openpose", background=False)]
    assert all(not (ours[t] != theirs[t]).any() for t in range(n) if t % 3 != 1)


def _sdpose_raw(rng: np.random.Generator, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """COCO-WholeBody-133 keypoints (133, 2) and scores (133,) of a standing person, as SDPose's heatmap head
    returns them: some low scores, an invalid point at (-1, -1), a hand partly off the canvas."""
    from magicpose_core.pose.mapping import COCO17_TO_OPENPOSE

    s = min(w, h) / 512
    xy = np.zeros((133, 2))
    for op, coco in enumerate(COCO17_TO_OPENPOSE):
        if coco >= 0:
            xy[coco] = STANDING[op] * s
    xy[17:23] = STANDING[[13, 13, 13, 10, 10, 10]] * s + [[5, 20], [15, 22], [-5, 18], [5, 20], [-15, 22], [5, 18]]
    xy[23:91] = face_points(STANDING[0] * s + [0, 5], 50 * s)[:68, :2]
    xy[91:112] = hand_points(STANDING[7] * s, s)[:, :2]
    xy[112:133] = hand_points(np.array([w - 6.0, STANDING[4, 1] * s]), 1.5 * s)[:, :2]  # partly off the right
    xy += rng.normal(0, 1.0, xy.shape)
    score = rng.uniform(0.5, 0.95, 133)
    score[rng.choice(133, 20, replace=False)] = rng.uniform(0.02, 0.29, 20)
    xy[5] = -1.0
    score[5] = 0.1                                     # SDPose writes invalid points as (-1, -1)
    return xy.astype(np.float32), score.astype(np.float32)


def test_core_sdpose_both_ways(mods):
    """SDPose's own frame writer (comfy_extras.nodes_sdpose._to_openpose_frames) -> Extract Pose -> our POSE_KEYPOINT
    drawn by SDPose Draw Keypoints: pixel-identical to SDPose drawing its own frames (what we emit is read and
    drawn by it the same; feet are ours to drop). Our map of SDPose's frames equals controlnet_aux's openpose_full
    drawing of the points SDPose draws (score >= 0.3); SDPose's own style (undimmed limbs) differs, recorded."""
    sd = importlib.import_module("comfy_extras.nodes_sdpose")
    aux = pytest.importorskip("controlnet_aux.open_pose")
    from support.pose_data import to_controlnet_aux

    kp = mods["keypoints"]
    rng = np.random.default_rng(0)
    w, h = 512, 768
    raws = [_sdpose_raw(rng, w, h) for _ in range(3)]
    frames = sd._to_openpose_frames([[k] for k, _ in raws], [[s] for _, s in raws], h, w)
    frames = json.loads(json.dumps(frames))
    maps, ours = run(mods, frames, width=w, height=h).result
    assert len(ours) == 3 and all(len(f["people"]) == 1 for f in ours)

    def draw(data):
        out = sd.SDPoseDrawKeypoints.execute(data, draw_body=True, draw_hands=True, draw_face=True, draw_feet=False,
                                             stick_width=4, face_point_size=3, score_threshold=0.3, draw_head=True)
        return (out.result[0].float() * 255).round().to(torch.uint8).numpy()

    theirs_of_theirs, theirs_of_ours = draw(frames), draw(ours)
    round_trip = int((theirs_of_theirs != theirs_of_ours).any(-1).sum())
    ref = []
    for f in kp.pose_keypoint_to_frames(frames):
        ref.append(aux.draw_poses(to_controlnet_aux(f.thresholded(kp.READ_THRESHOLD)), h, w))
    ours_map = (maps.numpy() * 255).round().astype(np.uint8)
    vs_openpose_full = int((ours_map != np.stack(ref)).any(-1).sum())
    style = int((ours_map != theirs_of_theirs).any(-1).sum())
    lit = int(theirs_of_theirs.any(-1).sum())
    figures.record("SDPose interop (lit px of SDPose's drawing, SDPose draws ours vs its own, our map vs "
                   "openpose_full of SDPose's points, our map vs SDPose's own style)",
                   [lit, round_trip, vs_openpose_full, style])
    print(f"\nSDPose: lit {lit}, round trip {round_trip}, ours vs openpose_full {vs_openpose_full}, "
          f"ours vs SDPose style {style}")
    assert lit > 5000 and round_trip == 0 and vs_openpose_full == 0


# ---------------------------------------------------------------------------------------------------------------
# fuzz

FUZZ_EXAMPLES = 1000
_count = {"runs": 0, "ok": 0, "value_error": 0, "no_person": 0}

wild = (st.floats(allow_nan=True, allow_infinity=True) | st.integers(-10**30, 10**30) | st.none()
        | st.sampled_from([0, -1, 1e300, 10**400]))
coord = st.floats(-0.3, 1.3) | st.floats(-60, 220) | wild
conf = st.sampled_from([0.0, 1.0, 1.0, 1.0, 0.5, 0.2]) | wild
triplet = st.tuples(st.floats(-0.3, 1.3), st.floats(-0.3, 1.3), st.just(1.0)) | st.tuples(coord, coord, conf)
junk = st.text(max_size=3) | st.booleans() | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)


def part(n: int):
    flat = st.lists(triplet, min_size=n, max_size=n).map(lambda ts: [v for t in ts for v in t])
    return st.one_of(flat, flat, flat, st.lists(coord | junk, max_size=8), st.none(), junk)


person = st.fixed_dictionaries({}, optional={
    "pose_keypoints_2d": st.one_of(part(18), part(25)), "face_keypoints_2d": st.one_of(part(70), part(68)),
    "hand_left_keypoints_2d": part(21), "hand_right_keypoints_2d": part(21), "foot_keypoints_2d": part(6)})
canvas = st.integers(1, 160) | st.integers(1, 160) | st.sampled_from([0, -3, 16385, 65536, 2.5, float("nan"), "512",
                                                                      None, True])
frame = st.fixed_dictionaries(
    {"canvas_width": canvas, "canvas_height": canvas},
    optional={"people": st.lists(person, max_size=3) | st.lists(person | junk, max_size=3) | junk | st.none(),
              "animals": st.lists(st.lists(st.lists(coord, max_size=3), max_size=4), max_size=2) | junk,
              "version": junk})
body_triplets = st.lists(triplet, min_size=18, max_size=18).map(lambda ts: [v for t in ts for v in t])
def good_part(n: int):
    return st.lists(triplet, min_size=n, max_size=n).map(lambda ts: [v for t in ts for v in t]) | st.none()


good_person = st.fixed_dictionaries({"pose_keypoints_2d": body_triplets}, optional={
    "face_keypoints_2d": good_part(70) | good_part(68), "hand_left_keypoints_2d": good_part(21),
    "hand_right_keypoints_2d": good_part(21)})
good_frame = st.fixed_dictionaries({"canvas_width": st.integers(1, 160), "canvas_height": st.integers(1, 160),
                                    "people": st.lists(good_person, min_size=1, max_size=2)},
                                   optional={"animals": st.lists(st.lists(st.lists(coord, max_size=3), max_size=4),
                                                                 max_size=2), "version": junk})
choice = st.fixed_dictionaries({
    "coordinates": st.sampled_from(["auto", "normalized", "pixels"]),
    "output_coordinates": st.sampled_from(["pixels", "normalized"]),
    "fit": st.sampled_from(["center_crop", "letterbox", "stretch"]),
    "smoothing": st.sampled_from(["off", "medium"]), "person": st.sampled_from(["largest", "index", "all"]),
    "render_canvas": st.sampled_from(["source", "training", "output"]),
    "width": st.sampled_from([64, 72, 96]), "height": st.sampled_from([64, 80]),
    "body": st.booleans(), "hands": st.booleans(), "face": st.booleans()})


def _fuzz_one(mods, data, options):
    _count["runs"] += 1
    try:
        maps, out = run(mods, data, **options).result
    except ValueError as e:
        _count["value_error"] += 1
        _count["no_person"] += "no person found" in str(e)
        assert len(str(e)) > 20 and "\n" not in str(e).strip(), str(e)
        return
    _count["ok"] += 1
    assert maps.shape[1:] == (options["height"], options["width"], 3) and torch.isfinite(maps).all()
    for f in out:  # plain, finite JSON people (unknown keys like `animals` pass through as they came)
        json.dumps(f["people"], allow_nan=False)
        for p in f["people"]:
            assert len(p["pose_keypoints_2d"]) == 54


_SETTINGS = dict(deadline=None, derandomize=True,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])


@settings(max_examples=FUZZ_EXAMPLES, **_SETTINGS)
@given(data=st.lists(good_frame, min_size=1, max_size=3), options=choice)
def _fuzz_values(mods, data, options):
    """Well-formed frames, wild numbers: NaN, inf, null, 1e300, 10**400, negative scores, points far outside."""
    _fuzz_one(mods, data, options)


@settings(max_examples=FUZZ_EXAMPLES // 4, **_SETTINGS)
@given(data=st.lists(frame, max_size=3) | frame | junk, options=choice)
def _fuzz_structure(mods, data, options):
    """Malformed structure: wrong types, lengths, canvases (0, 16385, 65536, NaN, text), junk anywhere."""
    _fuzz_one(mods, data, options)


def test_fuzzed_pose_keypoint_into_the_node_only_raises_readable_value_errors(mods):
    _count.update(runs=0, ok=0, value_error=0, no_person=0)
    _fuzz_values(mods)
    values = dict(_count)
    _fuzz_structure(mods)
    print(f"\nfuzz: {_count['runs']} examples of ExtractPose.execute ({values['runs']} well-formed with wild numbers: "
          f"{values['ok']} drawn, {values['value_error']} ValueError of which {values['no_person']} 'no person in "
          f"any frame'; {_count['runs'] - values['runs']} malformed: "
          f"{_count['value_error'] - values['value_error']} ValueError), 0 other exceptions")
    figures.record("pose fuzz (examples, drawn, ValueError)", [_count["runs"], _count["ok"], _count["value_error"]])
    assert _count["runs"] >= FUZZ_EXAMPLES
    assert values["ok"] >= FUZZ_EXAMPLES // 2, "the fuzz hardly reaches the drawing path"


def test_comfyui_validation_rejects_the_size_before_anything_runs(mods, monkeypatch):
    """Through ComfyUI's own prompt validation (execution.validate_inputs): the size error is a validation error
    on the node, shown before the queue runs anything."""
    import asyncio

    import execution

    import nodes

    monkeypatch.setitem(nodes.NODE_CLASS_MAPPINGS, "MagicPoseExtractPose", mods["extract_pose"].ExtractPose)

    def validate(width):
        inputs = dict(detector="mediapipe", body=True, hands=True, face=True, person="largest", smoothing="off",
                      fps=30.0, retarget="none", strength=1.0, face_transfer=True, width=width, height=512,
                      fit="center_crop")
        prompt = {"1": {"class_type": "MagicPoseExtractPose", "inputs": inputs}}
        return asyncio.run(execution.validate_inputs("p", prompt, "1", {}))

    ok, errors, _ = validate(100)
    assert not ok and errors[0]["type"] == "custom_validation_failed" and "use 96x512" in errors[0]["details"]
    ok, errors, _ = validate(8000)
    assert not ok and "outside 64-4096" in errors[0]["details"]
    assert validate(512)[0]
