"""The renderer against controlnet_aux 0.0.10's draw_bodypose / draw_handpose / draw_facepose (ControlNet 1.1
openpose_full): 0 differing pixels, and the official draw-at-source-then-crop geometry (docs/pose.md §1.6)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from support.pose_data import random_person, standing_person, to_controlnet_aux

from magicpose_core.media.geometry import fit_geometry
from magicpose_core.pose.keypoints import Person, PoseFrame
from magicpose_core.pose.render import canvas_scale, render_pose, render_pose_fitted

draw_poses = pytest.importorskip("controlnet_aux.open_pose").draw_poses


def _diff(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
    return int((a != b).any(axis=-1).sum())


def _reference(frame: PoseFrame, threshold: float = 0.0, body=True, hands=True, face=True) -> np.ndarray:
    return draw_poses(to_controlnet_aux(frame, threshold), frame.height, frame.width, body, hands, face)


CANVASES = [(512, 512), (604, 1080), (333, 517), (1280, 720), (97, 61)]


@pytest.mark.parametrize("width,height", CANVASES)
def test_random_people_match_controlnet_aux_pixel_for_pixel(width, height):
    rng = np.random.default_rng(width * 7 + height)
    total = 0
    for _ in range(6):
        frame = PoseFrame(width, height, [random_person(rng, width, height) for _ in range(rng.integers(1, 4))])
        ours, ref = render_pose(frame), _reference(frame)
        assert ref.any(), "the reference drew nothing: the test set is degenerate"
        total += _diff(ours, ref)
    assert total == 0


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.6])
def test_low_confidence_points_match_with_threshold(threshold):
    rng = np.random.default_rng(11)
    frame = PoseFrame(604, 1080, [random_person(rng, 604, 1080, missing=0.1, low_conf=0.4) for _ in range(3)])
    assert _diff(render_pose(frame, threshold=threshold), _reference(frame, threshold)) == 0


def test_plausible_person_with_hands_and_face_matches():
    frame = PoseFrame(512, 512, [standing_person(rng=np.random.default_rng(0))])
    ours = render_pose(frame)
    assert _diff(ours, _reference(frame)) == 0
    # the standard palette is there: a limb (Neck-RShoulder, 255 x 0.6), hand blue dots and white face dots
    colours = {tuple(c) for c in ours.reshape(-1, 3)}
    assert {(153, 0, 0), (0, 0, 255), (255, 255, 255)} <= colours


@pytest.mark.parametrize("body,hands,face", [(True, False, False), (False, True, False), (False, False, True),
                                             (True, True, False)])
def test_part_switches_match(body, hands, face):
    rng = np.random.default_rng(5)
    frame = PoseFrame(400, 300, [random_person(rng, 400, 300, missing=0.0, low_conf=0.0) for _ in range(2)])
    ours = render_pose(frame, body=body, hands=hands, face=face)
    assert _diff(ours, _reference(frame, 0.0, body, hands, face)) == 0
    assert ours.any()


def test_empty_frame_and_missing_parts_render_black():
    assert not render_pose(PoseFrame(64, 48, [])).any()
    assert not render_pose(PoseFrame(64, 48, [Person()])).any()
    assert render_pose(PoseFrame(64, 48, [])).shape == (48, 64, 3)


def test_source_render_then_center_crop_reproduces_the_training_geometry():
    """604x1080 frame, drawn at source, centre-cropped to rows 238-842 and resized to 512 (MagicDance
    center_crop_pose_to_512): compare with an independent crop + PIL bilinear resize of the source drawing."""
    p = standing_person(scale=1.5, offset=(-80, 250))
    frame = PoseFrame(604, 1080, [p])
    g = fit_geometry(604, 1080, 512, 512, "center_crop")
    assert (g.crop_x, g.crop_y, g.crop_w, g.crop_h) == (0, 238, 604, 604)
    ours = render_pose_fitted(frame, g)
    source = render_pose(frame)
    expect = np.asarray(Image.fromarray(source[238:842]).resize((512, 512), Image.BILINEAR)).astype(np.float32) / 255
    diff = np.abs(ours.numpy() - expect)
    assert diff.mean() < 0.004 and np.percentile(diff, 99.9) < 0.2
    # stroke width after 604 -> 512: an 8 px limb becomes ~6.8 px (docs/pose.md §1.6)
    col = (ours.numpy()[:, :, 0] > 0.3) & (ours.numpy()[:, :, 1] < 0.1) & (ours.numpy()[:, :, 2] < 0.1)
    neck_sh = p.body[[1, 2], :2].mean(0)
    x, y = g.map_points(neck_sh)
    width = col[int(y) - 8:int(y) + 9, int(x)].sum()
    assert 5 <= width <= 8


def test_letterbox_pads_black_and_output_canvas_matches_direct_drawing():
    frame = PoseFrame(640, 360, [standing_person(scale=0.6, offset=(150, 20))])
    g = fit_geometry(640, 360, 512, 512, "letterbox")
    out = render_pose_fitted(frame, g)
    assert out.shape == (512, 512, 3)
    assert not out[: g.box_y].any() and not out[g.box_y + g.box_h:].any() and out.any()
    # "output" canvas = the same people mapped to the output and drawn there at full stroke width
    assert canvas_scale(g, "output") == pytest.approx(512 / 640)
    direct = render_pose_fitted(frame, g, render_canvas="output")
    mapped = frame.transformed(g.map_points, 512, 512)
    expect = torch.from_numpy(render_pose(mapped)).float() / 255
    assert (direct - expect).abs().mean() < 0.01


def test_training_canvas_gives_training_stroke_widths():
    frame = PoseFrame(512, 512, [standing_person()])
    g = fit_geometry(512, 512, 512, 512, "center_crop")
    assert canvas_scale(g, "training") == pytest.approx(604 / 512)
    thin = render_pose_fitted(frame, g, render_canvas="training")
    direct = render_pose_fitted(frame, g, render_canvas="source")
    assert (thin > 0.3).sum() < (direct > 0.3).sum()
    with pytest.raises(ValueError, match="render canvas"):
        render_pose_fitted(frame, g, render_canvas="nope")
    with pytest.raises(ValueError, match="fit was computed"):
        render_pose_fitted(PoseFrame(100, 100, []), g)


def test_pure_crop_fast_path_equals_the_shared_fit():
    from magicpose_core.media.geometry import fit_images
    from magicpose_core.media.images import from_uint8

    frame = PoseFrame(768, 512, [standing_person(offset=(128, 0))])
    g = fit_geometry(768, 512, 512, 512, "center_crop")
    assert torch.equal(render_pose_fitted(frame, g), fit_images(from_uint8(render_pose(frame)), g)[0])
