"""The shapes scorer reads PIL images as the emoji judge and training do (``galip_core.images.rgb_on_white``), and
refuses an empty batch or an image without pixels: before, float and 16-bit images were scored as black, a transparent
background as black, and an empty batch as an accuracy of 0.0."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from galip_diffusers.data import shapes as S

CAPTION = "a large red circle on a white background"


def _red_circle() -> np.ndarray:
    return S.render_shape(32, "red", "circle", "white", as_array=True)


@pytest.mark.parametrize("mode, make", [
    ("F", lambda a: Image.fromarray((a[..., 0] / 255.0).astype(np.float32), "F")),
    ("I;16", lambda a: Image.fromarray(a[..., 0].astype(np.uint16) * 257)),
    ("I", lambda a: Image.fromarray(a[..., 0].astype(np.int32))),
])
def test_float_and_16_bit_images_are_refused_not_scored_black(mode, make):
    image = make(_red_circle())
    assert image.mode == mode
    with pytest.raises(ValueError, match=rf"images\[0\] is a PIL image of mode '{mode}', which has no single reading "
                                         r"as colour; accepted modes: 1, L, P, RGB.*convert it to 8 bits first"):
        S.score_images([image], [CAPTION])
    with pytest.raises(ValueError, match=rf"image\[0\] is a PIL image of mode '{mode}'"):
        S.predict_attributes(image)


def test_a_transparent_background_reads_as_white():
    shape = Image.fromarray(_red_circle()).convert("RGBA")
    alpha = (np.asarray(shape)[..., :3] != S.BACKGROUNDS["white"]).any(-1)
    shape.putalpha(Image.fromarray(np.where(alpha, 255, 0).astype(np.uint8)))  # the background's RGB stays grey
    black = Image.new("RGBA", shape.size, (0, 0, 0, 0))
    black.paste(shape, mask=shape)  # transparent pixels hold black, as in most exported PNGs
    for image in (shape, black):
        prediction = S.score_images([image], [CAPTION], return_predictions=True)["per_image"][0]
        assert (prediction["background"], prediction["color"], prediction["shape"]) == ("white", "red", "circle")


def test_palette_and_grey_images_still_read_as_their_colours():
    rgb = Image.fromarray(_red_circle())
    assert S.score_images([rgb.convert("P")], [CAPTION])["all"] == 1.0
    blue = S.render_shape(32, "blue", "circle", "white", as_array=True)
    grey = S.predict_attributes(Image.fromarray(blue[..., 0]))  # mode L: read as grey levels (dark on light)
    assert (grey["shape"], grey["size"]) == ("circle", "large")


@pytest.mark.parametrize("images", [[], (), np.zeros((0, 64, 64, 3), np.uint8), np.zeros((0, 64, 64, 3), np.float32)],
                         ids=["list", "tuple", "uint8-array", "float-array"])
def test_an_empty_batch_is_refused_not_scored_zero(images):
    with pytest.raises(ValueError, match=r"^images is empty; give at least one image$"):
        S.score_images(images, [])


def test_an_empty_tensor_batch_is_refused():
    import torch

    with pytest.raises(ValueError, match=r"^images is empty"):
        S.score_images(torch.zeros(0, 3, 64, 64), [])


@pytest.mark.parametrize("images, name", [
    (np.zeros((1, 0, 0, 3), np.uint8), r"images has no pixels \(shape \(1, 0, 0, 3\)\)"),
    (np.zeros((1, 64, 0, 3), np.float32), r"images has no pixels \(shape \(1, 64, 0, 3\)\)"),
    ([Image.new("RGB", (0, 0))], r"images\[0\] has no pixels \(shape \(0, 0, 3\)\)"),
    ([_red_circle(), np.zeros((0, 5, 3), np.uint8)], r"images\[1\] has no pixels \(shape \(0, 5, 3\)\)"),
], ids=["array-0x0", "float-64x0", "pil-0x0", "second-in-list"])
def test_images_without_pixels_are_refused_not_scored_black(images, name):
    with pytest.raises(ValueError, match=name + r"; every image needs at least one pixel"):
        S.score_images(images, [CAPTION] * len(images))


@pytest.mark.parametrize("bad, message", [
    (np.full((1, 64, 64, 3), np.nan, np.float32), r"images holds 12288 non-finite value\(s\)"),
    (np.full((1, 64, 64, 3), 200.0, np.float32), r"got float values up to 200 \(0\.\.255 values as floats\?"),
])
def test_nan_and_0_255_floats_are_still_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        S.score_images(bad, [CAPTION])


def test_one_pixel_and_rgb_images_are_still_scored():
    assert S.score_images(np.zeros((1, 1, 1, 3), np.uint8), [CAPTION])["n"] == 1
    assert S.score_images([Image.fromarray(_red_circle())], [CAPTION])["all"] == 1.0
