"""The one fit code path (magicpose_core.media.geometry): crop/box numbers for portrait and landscape sources in every
fit mode, the official centre crop against torchvision, letterbox -> crop back, and point mapping."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from magicpose_core.media.geometry import FIT_MODES, PAD_MODES, FitGeometry, crop_back, fit_geometry, fit_images

# (src_w, src_h, dst_w, dst_h, mode) -> (crop x, y, w, h), (box x, y, w, h), worked out by hand:
#   centre crop keeps the largest centred region of the target aspect; letterbox scales by
#   min(dst_w/src_w, dst_h/src_h), rounds the box and centres it with floor division.
EXPECTED = {
    # portrait 604x1080 (the official example pose frames) -> 512x512, docs/method.md §5.5
    (604, 1080, 512, 512, "center_crop"): ((0, 238, 604, 604), (0, 0, 512, 512)),      # rows 238-842
    (604, 1080, 512, 512, "letterbox"): ((0, 0, 604, 1080), (113, 0, 286, 512)),       # 604*512/1080 = 286.3
    (604, 1080, 512, 512, "stretch"): ((0, 0, 604, 1080), (0, 0, 512, 512)),
    # landscape 1920x1080 -> 512x512
    (1920, 1080, 512, 512, "center_crop"): ((420, 0, 1080, 1080), (0, 0, 512, 512)),
    (1920, 1080, 512, 512, "letterbox"): ((0, 0, 1920, 1080), (0, 112, 512, 288)),     # 1080*512/1920 = 288
    (1920, 1080, 512, 512, "stretch"): ((0, 0, 1920, 1080), (0, 0, 512, 512)),
    # landscape source, portrait target 512x768: crop width 1080*512/768 = 720
    (1920, 1080, 512, 768, "center_crop"): ((600, 0, 720, 1080), (0, 0, 512, 768)),
    (1920, 1080, 512, 768, "letterbox"): ((0, 0, 1920, 1080), (0, 240, 512, 288)),
    # portrait source, landscape target 768x512: crop height 720*512/768 = 480; letterbox scale 0.4
    (720, 1280, 768, 512, "center_crop"): ((0, 400, 720, 480), (0, 0, 768, 512)),
    (720, 1280, 768, 512, "letterbox"): ((0, 0, 720, 1280), (240, 0, 288, 512)),
    # same aspect: nothing cut, nothing padded
    (1024, 1024, 512, 512, "center_crop"): ((0, 0, 1024, 1024), (0, 0, 512, 512)),
    (1024, 1024, 512, 512, "letterbox"): ((0, 0, 1024, 1024), (0, 0, 512, 512)),
}


@pytest.mark.parametrize("key", list(EXPECTED), ids=lambda k: f"{k[0]}x{k[1]}->{k[2]}x{k[3]}-{k[4]}")
def test_fit_geometry_numbers(key):
    crop, box = EXPECTED[key]
    g = fit_geometry(*key)
    assert (g.crop_x, g.crop_y, g.crop_w, g.crop_h) == crop
    assert (g.box_x, g.box_y, g.box_w, g.box_h) == box
    assert (g.src_w, g.src_h, g.dst_w, g.dst_h, g.mode) == key


@pytest.mark.parametrize("mode", FIT_MODES)
@pytest.mark.parametrize("src", [(60, 108), (192, 108)], ids=["portrait", "landscape"])
def test_fit_images_output_and_content(mode, src):
    """The fitted image has the target size; inside the box it is the resized crop, outside it the pad."""
    w, h = src
    torch.manual_seed(0)
    img = torch.rand(2, h, w, 3)
    g = fit_geometry(w, h, 64, 48, mode)
    out = fit_images(img, g, pad="white")
    assert out.shape == (2, 48, 64, 3)
    crop = img[:, g.crop_y:g.crop_y + g.crop_h, g.crop_x:g.crop_x + g.crop_w]
    ref = torch.nn.functional.interpolate(crop.movedim(-1, 1), size=(g.box_h, g.box_w), mode="bilinear",
                                          antialias=True).movedim(1, -1)
    torch.testing.assert_close(out[:, g.box_y:g.box_y + g.box_h, g.box_x:g.box_x + g.box_w], ref)
    outside = torch.ones(48, 64, dtype=torch.bool)
    outside[g.box_y:g.box_y + g.box_h, g.box_x:g.box_x + g.box_w] = False
    assert (out[:, outside] == 1.0).all()
    assert (mode == "letterbox") == bool(outside.any())


@pytest.mark.parametrize("size", [(48, 96), (97, 31), (300, 200), (512, 600), (604, 1080)])
def test_center_crop_matches_torchvision_random_resized_crop(size):
    """Official prep is RandomResizedCrop(512, scale=(1, 1), ratio=(1, 1)); its crop box must equal ours.

    (Only for sources that are not nearly square: when round(sqrt(W * H)) <= min(W, H), e.g. 512x513,
    torchvision's first random try succeeds and the offset is random within a pixel; ours stays centred.)"""
    from torchvision.transforms import RandomResizedCrop

    w, h = size
    top, left, ch, cw = RandomResizedCrop.get_params(torch.zeros(3, h, w), scale=[1.0, 1.0], ratio=[1.0, 1.0])
    g = fit_geometry(w, h, 512, 512, "center_crop")
    assert (g.crop_x, g.crop_y, g.crop_w, g.crop_h) == (left, top, cw, ch)


@pytest.mark.parametrize("src", [(60, 108), (192, 108), (77, 51)], ids=["portrait", "landscape", "odd"])
def test_letterbox_crop_back_restores_original(src):
    w, h = src
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    img = torch.stack([xx, yy, 0.5 * (xx + yy)], dim=-1)[None]  # smooth (1, h, w, 3): resampling error stays small
    g = fit_geometry(w, h, 64, 64, "letterbox")
    fitted = fit_images(img, g, pad="black")
    back = crop_back(fitted, g, resize=True)
    assert back.shape == img.shape
    assert (back - img).abs().mean() < 0.02
    unpadded = crop_back(fitted, g, resize=False)
    assert unpadded.shape == (1, g.box_h, g.box_w, 3)
    torch.testing.assert_close(unpadded, fitted[:, g.box_y:g.box_y + g.box_h, g.box_x:g.box_x + g.box_w])


def test_crop_back_center_crop_gives_the_crop_size_and_stretch_the_source_size():
    img = torch.rand(3, 108, 192, 3)
    g = fit_geometry(192, 108, 64, 64, "center_crop")
    assert crop_back(fit_images(img, g), g).shape == (3, 108, 108, 3)
    g = fit_geometry(192, 108, 64, 64, "stretch")
    assert crop_back(fit_images(img, g), g).shape == (3, 108, 192, 3)


def test_crop_back_rejects_frames_of_another_size():
    g = fit_geometry(192, 108, 64, 64, "letterbox")
    with pytest.raises(ValueError, match="fitted to 64x64"):
        crop_back(torch.rand(1, 32, 32, 3), g)


@settings(max_examples=60, deadline=None)
@given(sw=st.integers(1, 4000), sh=st.integers(1, 4000), dw=st.integers(1, 256).map(lambda v: v * 8),
       dh=st.integers(1, 256).map(lambda v: v * 8), mode=st.sampled_from(FIT_MODES),
       pts=st.lists(st.tuples(st.floats(-10, 1.1), st.floats(-10, 1.1)), min_size=1, max_size=8))
def test_map_points_inverse_and_bounds(sw, sh, dw, dh, mode, pts):
    g = fit_geometry(sw, sh, dw, dh, mode)
    assert 0 <= g.crop_x and g.crop_x + g.crop_w <= sw and 0 <= g.crop_y and g.crop_y + g.crop_h <= sh
    assert 0 <= g.box_x and g.box_x + g.box_w <= dw and 0 <= g.box_y and g.box_y + g.box_h <= dh
    xy = np.array(pts) * [sw, sh]
    np.testing.assert_allclose(g.unmap_points(g.map_points(xy)), xy, rtol=1e-9, atol=1e-6)
    corners = np.array([[g.crop_x, g.crop_y], [g.crop_x + g.crop_w, g.crop_y + g.crop_h]])
    np.testing.assert_allclose(g.map_points(corners), [[g.box_x, g.box_y], [g.box_x + g.box_w, g.box_y + g.box_h]])
    assert FitGeometry.from_dict(g.to_dict()) == g


@pytest.mark.parametrize("mode", FIT_MODES)
def test_map_points_follows_the_pixels(mode):
    """A bright dot in the source lands where map_points says (pixel centres: +0.5), within a pixel."""
    w, h, dw, dh = 240, 160, 96, 128
    dots = [(130, 40), (100, 120), (150, 80)]
    for x, y in dots:
        img = torch.zeros(1, h, w, 3)
        img[0, y - 2:y + 3, x - 2:x + 3] = 1.0  # 5x5 dot centred on pixel (x, y)
        g = fit_geometry(w, h, dw, dh, mode)
        out = fit_images(img, g)[0, ..., 0]
        if out.max() == 0:  # centre crop may cut the dot away; then map_points must say it is outside
            mx, my = g.map_points(np.array([x + 0.5, y + 0.5]))
            assert not (0 <= mx < dw and 0 <= my < dh)
            continue
        ys, xs = torch.meshgrid(torch.arange(dh), torch.arange(dw), indexing="ij")
        cx = float((out * xs).sum() / out.sum()) + 0.5
        cy = float((out * ys).sum() / out.sum()) + 0.5
        mx, my = g.map_points(np.array([x + 0.5, y + 0.5]))
        assert abs(cx - mx) < 1.0 and abs(cy - my) < 1.0


@pytest.mark.parametrize("pad", PAD_MODES)
def test_letterbox_pad_modes(pad):
    img = torch.rand(1, 20, 40, 3) * 0.5 + 0.25  # values in [0.25, 0.75]
    g = fit_geometry(40, 20, 40, 40, "letterbox")
    out = fit_images(img, g, pad=pad)
    assert (g.box_y, g.box_h) == (10, 20)
    bar = out[0, :g.box_y]
    if pad in ("black", "white", "gray"):
        assert (bar == {"black": 0.0, "white": 1.0, "gray": 0.5}[pad]).all()
    elif pad == "edge":
        torch.testing.assert_close(bar, out[0, g.box_y:g.box_y + 1].expand_as(bar))
    else:  # reflect: row box_y - k mirrors row box_y + k
        torch.testing.assert_close(out[0, g.box_y - 1], out[0, g.box_y + 1])


def test_fit_errors_are_clear():
    with pytest.raises(ValueError, match="fit mode"):
        fit_geometry(10, 10, 8, 8, "zoom")
    with pytest.raises(ValueError, match="positive integer"):
        fit_geometry(0, 10, 8, 8)
    g = fit_geometry(10, 10, 8, 8)
    with pytest.raises(ValueError, match="computed for 10x10"):
        fit_images(torch.rand(1, 12, 10, 3), g)
    with pytest.raises(ValueError, match="pad mode"):
        fit_images(torch.rand(1, 10, 10, 3), g, pad="blue")
