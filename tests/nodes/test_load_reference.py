"""MagicPose Load Reference in-process on real ComfyUI with the factory SD1.5 VAE: geometry for portrait and
landscape photos in every fit mode, the latent is ComfyUI's VAE encode of the fitted image, the official
posterior-sample option, batches, and clear errors."""
from __future__ import annotations

import logging
import types

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.comfy

W, H = 96, 64  # a small non-square model size keeps the random VAE fast on CPU

# (src_w, src_h, mode) -> crop (x, y, w, h), box (x, y, w, h) for a 96x64 target, worked out by hand
EXPECTED = {
    (120, 240, "center_crop"): ((0, 80, 120, 80), (0, 0, 96, 64)),        # keep 120 x 120*64/96 = 80 rows
    (120, 240, "letterbox"): ((0, 0, 120, 240), (32, 0, 32, 64)),         # scale 64/240: 32x64, centred
    (120, 240, "stretch"): ((0, 0, 120, 240), (0, 0, 96, 64)),
    (300, 100, "center_crop"): ((75, 0, 150, 100), (0, 0, 96, 64)),       # keep 100*96/64 = 150 columns
    (300, 100, "letterbox"): ((0, 0, 300, 100), (0, 16, 96, 32)),         # scale 96/300: 96x32, centred
    (300, 100, "stretch"): ((0, 0, 300, 100), (0, 0, 96, 64)),
}


@pytest.fixture(scope="module")
def vae(comfy):
    import comfy.sd
    from support import factories

    _, _, vae, _ = comfy.sd.load_checkpoint_guess_config(str(factories.sd15_checkpoint()), output_vae=True,
                                                         output_clip=False, output_model=False)
    return vae


@pytest.fixture(scope="module")
def node(pack):
    import importlib

    importlib.import_module("magicpose_pack.nodes.vae_encode")
    importlib.import_module("magicpose_pack.nodes.pose_detectors")
    return importlib.import_module("magicpose_pack.nodes.load_reference").LoadReference


def photo(w: int, h: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand((1, h, w, 3), generator=g)


def run(node, image, vae, fit="center_crop", pad="black", encode="mode (deterministic)", seed=42, w=W, h=H,
        detector="none"):
    with torch.inference_mode():  # as ComfyUI's executor runs nodes
        return node.execute(image, vae, w, h, fit, pad, encode, seed, detector)


def test_schema_and_registration(pack, node):
    import asyncio

    schema = node.define_schema()
    assert (schema.node_id, schema.display_name, schema.category) == (
        "MagicPoseLoadReference", "MagicPose Load Reference", "MagicPose")
    assert all(i.tooltip for i in schema.inputs) and all(o.tooltip for o in schema.outputs)
    assert "posterior mode" in schema.description and "sample" in schema.description
    nodes = asyncio.run(pack.nodes.MagicPoseExtension().get_node_list())
    assert node in nodes


@pytest.mark.parametrize("key", list(EXPECTED), ids=lambda k: f"{'portrait' if k[1] > k[0] else 'landscape'}-{k[2]}")
def test_geometry_image_and_latent(node, vae, pack, key):
    sw, sh, mode = key
    src = photo(sw, sh)
    out = run(node, src, vae, fit=mode, pad="gray")
    ref, image = out.result
    g = ref.geometry
    assert ((g.crop_x, g.crop_y, g.crop_w, g.crop_h), (g.box_x, g.box_y, g.box_w, g.box_h)) == EXPECTED[key]
    assert (ref.width, ref.height) == (W, H) and image.shape == (1, H, W, 3)
    assert ref.latent.shape == (1, 4, H // 8, W // 8) and ref.latent.dtype == torch.float32
    # the prepared image is the crop resized into the box, the rest is the pad
    crop = src[:, g.crop_y:g.crop_y + g.crop_h, g.crop_x:g.crop_x + g.crop_w]
    box = torch.nn.functional.interpolate(crop.movedim(-1, 1), size=(g.box_h, g.box_w), mode="bilinear",
                                          antialias=True).movedim(1, -1)
    torch.testing.assert_close(image[:, g.box_y:g.box_y + g.box_h, g.box_x:g.box_x + g.box_w], box)
    if mode == "letterbox":
        assert (image[0, :g.box_y] == 0.5).all() and (image[0, :, :g.box_x] == 0.5).all()
    # the latent is ComfyUI's own VAE encode of that image (posterior mode), unscaled
    with torch.inference_mode():
        torch.testing.assert_close(ref.latent, vae.encode(image).float())
    assert ref.image is image and ref.keypoints is None
    assert ref.source_hash == pack.magicpose_core.model.reference.tensor_hash(src)


def test_sample_encode_is_the_official_posterior_sample(node, vae):
    src = photo(80, 120, seed=3)
    ref_mode, image = run(node, src, vae).result
    ref_a = run(node, src, vae, encode="sample (official)", seed=7).result[0]
    ref_b = run(node, src, vae, encode="sample (official)", seed=7).result[0]
    ref_c = run(node, src, vae, encode="sample (official)", seed=8).result[0]
    torch.testing.assert_close(ref_a.latent, ref_b.latent)
    assert not torch.allclose(ref_a.latent, ref_c.latent)
    # independent oracle: posterior moments straight from encoder + quant_conv (the regulariser's input)
    fsm = vae.first_stage_model
    with torch.inference_mode():
        moments = fsm.quant_conv(fsm.encoder(image.movedim(-1, 1) * 2 - 1))  # (1, 8, h, w)
    mean, logvar = moments.chunk(2, dim=1)
    std = torch.exp(0.5 * logvar.clamp(-30, 20))
    torch.testing.assert_close(ref_mode.latent, mean, atol=1e-5, rtol=1e-5)  # ComfyUI's mode is the mean
    eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(ref_a.latent, mean + std * eps, atol=1e-5, rtol=1e-5)
    # the hook is gone: a plain encode gives the mode again
    assert not fsm.regularization._forward_hooks
    with torch.inference_mode():
        torch.testing.assert_close(vae.encode(image).float(), ref_mode.latent)


def test_sample_encode_needs_a_gaussian_vae(pack):
    fake = types.SimpleNamespace(first_stage_model=types.SimpleNamespace(regularization=None))
    with pytest.raises(ValueError, match="mode \\(deterministic\\)"):
        pack.nodes.vae_encode.encode_reference(fake, photo(8, 8), "sample (official)", 0)


def test_batch_uses_the_first_image_and_warns(node, vae, caplog):
    first, second = photo(64, 96, seed=1), photo(64, 96, seed=2)
    with caplog.at_level(logging.WARNING, logger="MagicPose"):
        ref = run(node, torch.cat([first, second]), vae).result[0]
    assert "got 2 images" in caplog.text
    single = run(node, first, vae).result[0]
    torch.testing.assert_close(ref.latent, single.latent)
    assert ref.source_hash == single.source_hash != run(node, second, vae).result[0].source_hash


@pytest.mark.parametrize("image,match", [
    (torch.rand(1, 32, 32, 4), "RGB image \\(3 channels\\), got 4.*alpha"),
    (torch.rand(1, 32, 32, 1), "got 1.*greyscale"),
    (torch.zeros(0, 32, 32, 3), "empty image"),
    (torch.zeros(1, 0, 32, 3), "empty image"),
])
def test_bad_images_raise_clear_errors(node, vae, image, match):
    with pytest.raises(ValueError, match=match):
        run(node, image, vae)


def test_reference_feeds_the_geometry_to_crop_back(node, vae, pack):
    """The fit stored in the reference undoes itself: letterbox -> crop back gives the source size."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 100), torch.linspace(0, 1, 300), indexing="ij")
    src = torch.stack([xx, yy, (xx * 6).sin() * 0.5 + 0.5], dim=-1)[None]  # smooth (1, 100, 300, 3)
    ref, image = run(node, src, vae, fit="letterbox").result
    back = pack.magicpose_core.media.geometry.crop_back(image, ref.geometry)
    assert back.shape == src.shape
    assert float((back - src).abs().mean()) < 0.02


def _body(frame) -> np.ndarray:
    people = [p for p in frame.people if not p.is_empty]
    assert people, "no person detected"
    return max(people, key=lambda p: p.area()).body  # (18, 3)


@pytest.mark.parametrize("photo_name,fit", [("grace_hopper", "letterbox"), ("grace_hopper", "center_crop"),
                                            ("astronaut_landscape", "center_crop"), ("astronaut_landscape", "stretch")])
def test_reference_keypoints_are_in_prepared_pixels(node, vae, pack, photo_name, fit):
    """MediaPipe on the whole source photo, mapped through the fit, lands where MediaPipe finds the same joints
    on the prepared image itself."""
    pytest.importorskip("mediapipe")
    from support import pose_data

    rgb = pose_data.grace_hopper() if photo_name == "grace_hopper" else pose_data.astronaut()[:320]
    src = torch.from_numpy(rgb.copy()).float().div(255)[None]  # (1, H, W, 3)
    size = 256
    ref, image = run(node, src, vae, fit=fit, detector="mediapipe", w=size, h=size).result
    kp = ref.keypoints
    assert (kp.width, kp.height) == (size, size)
    direct = pack.nodes.pose_detectors.detect_pose(image, "mediapipe")[0]
    a, b = _body(kp), _body(direct)
    both = (a[:, 2] > 0) & (b[:, 2] > 0)
    assert both.sum() >= 4
    dist = np.linalg.norm(a[both, :2] - b[both, :2], axis=1)
    assert np.median(dist) < 0.04 * size, dist
    # and it is not the unmapped source position
    src_body = _body(pack.nodes.pose_detectors.detect_pose(src, "mediapipe")[0])
    if fit != "stretch" or rgb.shape[0] != rgb.shape[1]:
        assert np.median(np.linalg.norm(src_body[both, :2] - a[both, :2], axis=1)) > 0.04 * size


def test_reference_with_no_person_warns(node, vae, caplog):
    pytest.importorskip("mediapipe")
    with caplog.at_level(logging.WARNING, logger="MagicPose"):
        ref = run(node, torch.zeros(1, 64, 64, 3), vae, detector="mediapipe").result[0]
    assert ref.keypoints is not None and ref.keypoints.is_empty
    assert "found no person" in caplog.text
