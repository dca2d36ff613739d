"""MagicPose Extract Pose in-process on real ComfyUI: schema, frames -> maps + POSE_KEYPOINT with MediaPipe on a
real photo, the POSE_KEYPOINT path with the official draw-at-source geometry, retargeting onto a reference
(IMAGE or MAGICPOSE_REFERENCE), empty frames, interruption and errors."""
from __future__ import annotations

import importlib
import logging

import numpy as np
import pytest
import torch
from PIL import Image
from support.pose_data import STANDING, astronaut

pytestmark = pytest.mark.comfy


@pytest.fixture(scope="module")
def mods(pack):
    names = ("nodes.extract_pose", "nodes.pose_detectors", "magicpose_core.pose.keypoints",
             "magicpose_core.pose.render", "magicpose_core.media.geometry", "magicpose_core.model.reference",
             "magicpose_core.pose.retarget")
    return {n.rsplit(".", 1)[1]: importlib.import_module(f"magicpose_pack.{n}") for n in names}


@pytest.fixture(scope="module")
def node(mods):
    return mods["extract_pose"].ExtractPose


def run(node, images=None, pose_keypoint=None, reference=None, **kw):
    args = dict(detector="mediapipe", body=True, hands=True, face=True, person="largest", smoothing="off",
                fps=30.0, retarget="none", strength=1.0, face_transfer=True, width=512, height=512,
                fit="center_crop")
    args.update(kw)
    with torch.inference_mode():
        return node.execute(images=images, pose_keypoint=pose_keypoint, reference=reference, **args)


def _person(mods, scale=1.0, offset=(0.0, 0.0), face=True):
    kp = mods["keypoints"]
    xy = STANDING * scale + np.asarray(offset)
    body = np.c_[xy, np.ones(18)]
    face_pts = None
    if face:
        c = xy[0] + [0, 5 * scale]
        ang = np.linspace(0, 2 * np.pi, 71)[:-1]
        face_pts = np.c_[c[0] + 20 * scale * np.cos(ang), c[1] + 24 * scale * np.sin(ang), np.ones(70)]
    return kp.Person(body=body, face=face_pts)


def _astro_batch() -> torch.Tensor:
    return torch.from_numpy(astronaut()).float().div(255)[None]


def test_schema_and_registration(pack, node):
    import asyncio

    schema = node.define_schema()
    assert (schema.node_id, schema.display_name, schema.category) == (
        "MagicPoseExtractPose", "MagicPose Extract Pose", "MagicPose")
    assert {"openpose", "dwpose", "skeleton"} <= set(schema.search_aliases)
    assert all(i.tooltip for i in schema.inputs) and all(o.tooltip for o in schema.outputs)
    ids = [i.id for i in schema.inputs]
    assert {"images", "pose_keypoint", "detector", "reference", "fit", "fps", "strength"} <= set(ids)
    assert node in asyncio.run(pack.nodes.MagicPoseExtension().get_node_list())


def test_frames_to_pose_maps_and_keypoints_with_mediapipe(node, mods):
    pytest.importorskip("mediapipe")
    img = _astro_batch()
    wide = torch.zeros((2, 512, 768, 3))
    wide[:, :, 128:640] = img                        # the astronaut in the middle of a 768 x 512 frame
    out = run(node, images=wide, render_canvas="output")
    maps, kps = out.result
    assert maps.shape == (2, 512, 512, 3) and maps.dtype == torch.float32 and 0 <= maps.min() and maps.max() <= 1
    assert len(kps) == 2 and kps[0]["canvas_width"] == 512 and len(kps[0]["people"]) == 1
    assert out.ui.as_dict()["images"]
    # the POSE_KEYPOINT output, drawn at the output size, is the pose map (centre crop = the astronaut image)
    frame = mods["keypoints"].pose_keypoint_to_frames(kps)[0]
    redraw = torch.from_numpy(mods["render"].render_pose(frame)).float() / 255
    assert (redraw != maps[0]).any(-1).float().mean() < 1e-3
    # ... and the detections on the wide frame moved by the centre crop (128 px to the left)
    direct = mods["pose_detectors"].detect_pose(wide[:1], "mediapipe")[0].people[0]
    on = direct.body[:, 2] > 0
    assert on.sum() >= 8 and ((frame.people[0].body[:, 2] > 0) == on).all()
    np.testing.assert_allclose(frame.people[0].body[on, :2], direct.body[on, :2] - [128, 0], atol=1e-4)


def test_pose_keypoint_input_is_drawn_at_source_then_centre_cropped(node, mods):
    kp = mods["keypoints"]
    src = kp.PoseFrame(604, 1080, [_person(mods, scale=1.2, offset=(-5, 300))])
    data = kp.frames_to_pose_keypoint([src], normalized=True)
    maps, out_kps = run(node, pose_keypoint=data).result
    # independent reference: draw at 604 x 1080, crop rows 238-842, PIL bilinear to 512
    full = mods["render"].render_pose(src)
    expect = np.asarray(Image.fromarray(full[238:842]).resize((512, 512), Image.BILINEAR)).astype(np.float32) / 255
    assert np.abs(maps[0].numpy() - expect).mean() < 0.004
    got = kp.pose_keypoint_to_frames(out_kps)[0].people[0].body
    np.testing.assert_allclose(got[:, 0], src.people[0].body[:, 0] * 512 / 604, atol=1e-6)
    np.testing.assert_allclose(got[:, 1], (src.people[0].body[:, 1] - 238) * 512 / 604, atol=1e-6)


def test_retarget_per_bone_onto_a_reference_image(node, mods):
    pytest.importorskip("mediapipe")
    kp = mods["keypoints"]
    ref = mods["pose_detectors"].detect_pose(_astro_batch(), "mediapipe")[0].people[0]
    driver = [kp.PoseFrame(512, 512, [_person(mods, scale=0.8, offset=(40 + 9 * t, 60 - 4 * t))])
              for t in range(4)]
    out = run(node, pose_keypoint=kp.frames_to_pose_keypoint(driver), reference=_astro_batch(),
              retarget="per_bone", face_transfer=False)
    maps, kps = out.result
    res = kp.pose_keypoint_to_frames(kps)
    bones = [b for b in mods["retarget"].BONES if (ref.body[list(b), 2] > 0).all()]
    assert len(bones) >= 6
    for f in res:
        body = f.people[0].body
        for a, b in bones:
            if body[a, 2] > 0 and body[b, 2] > 0:
                assert np.linalg.norm(body[b, :2] - body[a, :2]) == pytest.approx(
                    np.linalg.norm(ref.body[b, :2] - ref.body[a, :2]), abs=1e-6)
    assert len(out.ui.as_dict()["images"]) == 5                # the overlay on the reference + 4 frames


def test_retarget_global_with_a_magicpose_reference(node, mods):
    kp, ref_mod = mods["keypoints"], mods["reference"]
    target = _person(mods, scale=1.25, offset=(-40, -30))
    reference = ref_mod.MagicPoseReference(latent=torch.zeros(1, 4, 64, 64), width=512, height=512, source_hash="t",
                                           keypoints=kp.PoseFrame(512, 512, [target]))
    driver = kp.PoseFrame(512, 512, [_person(mods, scale=0.9, offset=(30, 20))])
    _, kps = run(node, pose_keypoint=kp.frames_to_pose_keypoint([driver]), reference=reference,
                 retarget="global", face_transfer=False).result
    got = kp.pose_keypoint_to_frames(kps)[0].people[0]
    np.testing.assert_allclose(got.body[:, :2], target.body[:, :2], atol=1e-6)
    _, half = run(node, pose_keypoint=kp.frames_to_pose_keypoint([driver]), reference=reference,
                  retarget="global", strength=0.5, face_transfer=False).result
    mid = kp.pose_keypoint_to_frames(half)[0].people[0].body[:, :2]
    np.testing.assert_allclose(mid, (target.body[:, :2] + driver.people[0].body[:, :2]) / 2, atol=1e-6)


def test_frame_without_person_gives_an_empty_map_and_one_warning(node, mods, caplog):
    kp = mods["keypoints"]
    frames = [kp.PoseFrame(512, 512, [_person(mods)]), kp.PoseFrame(512, 512, []),
              kp.PoseFrame(512, 512, [_person(mods)])]
    data = kp.frames_to_pose_keypoint(frames)
    with caplog.at_level(logging.WARNING, logger="MagicPose"):
        maps, kps = run(node, pose_keypoint=data).result
    assert maps[0].any() and not maps[1].any() and maps[2].any() and kps[1]["people"] == []
    lines = [r for r in caplog.records if "no person" in r.getMessage()]
    assert len(lines) == 1 and "1 of 3" in lines[0].getMessage()
    with pytest.raises(ValueError, match="on_missing"):
        run(node, pose_keypoint=data, on_missing="error")
    maps, _ = run(node, pose_keypoint=data, smoothing="medium").result   # a 1-frame gap is interpolated
    assert maps[1].any()


def test_interrupt_between_frames(node, mods):
    import comfy.model_management as mm

    kp = mods["keypoints"]
    data = kp.frames_to_pose_keypoint([kp.PoseFrame(512, 512, [_person(mods)])] * 3)
    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            run(node, pose_keypoint=data)
    finally:
        mm.interrupt_current_processing(False)


def test_input_errors_are_value_errors(node, mods):
    with pytest.raises(ValueError, match="exactly one"):
        run(node)
    with pytest.raises(ValueError, match="exactly one"):
        run(node, images=torch.zeros(1, 64, 64, 3), pose_keypoint=[])
    with pytest.raises(ValueError, match="canvas_width"):
        run(node, pose_keypoint=[{"people": []}])
    with pytest.raises(ValueError, match="reference"):
        run(node, pose_keypoint=mods["keypoints"].frames_to_pose_keypoint(
            [mods["keypoints"].PoseFrame(512, 512, [_person(mods)])]), retarget="per_bone")
    missing = importlib.import_module("magicpose_pack.magicpose_core.pose.detect").MissingWeightsError
    with pytest.raises(missing, match=r"magicpose[/\\]dwpose"):
        run(node, images=torch.zeros(1, 64, 64, 3), detector="dwpose")
