"""Any PIL image read as 8-bit RGB, with transparency composited on white: one implementation for the training data
(:func:`galip_diffusers.training.data.decode_image`), the emoji data set builder and the emoji judge.

PIL's own ``image.convert("RGB")`` drops the alpha channel, so a transparent pixel becomes whatever colour it stores
(usually black), and it clips 16-bit values to 255 (a 16-bit image turns white). Both would silently change what a
model is trained on or judged against, hence this function.
"""

from __future__ import annotations

from PIL import Image

#: PIL modes read as colour images: opaque ones, and ones with an alpha channel (composited on white)
OPAQUE_MODES = ("1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")
ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")
WHITE = (255, 255, 255, 255)


def has_transparency(image: Image.Image) -> bool:
    """Pillow >= 10.1's ``Image.has_transparency_data``, for older Pillow too: an alpha mode, transparency info, or a
    palette with alpha."""
    palette_alpha = image.mode == "P" and image.palette is not None and image.palette.mode == "RGBA"
    return image.mode in ALPHA_MODES or "transparency" in image.info or palette_alpha


def rgb_on_white(image: Image.Image, name: str = "the image") -> Image.Image:
    """``image`` as RGB: an image with transparency (an alpha mode, or ``P``/``L``/``RGB`` with transparency info) is
    composited on white; the other modes of :data:`OPAQUE_MODES` are converted by PIL. Modes with no single reading as
    colour (``F``, ``I``, ``I;16``: float or 16/32-bit values of unknown range) are a ``ValueError`` naming ``name``:
    convert them to 8 bits first."""
    if image.mode not in OPAQUE_MODES + ALPHA_MODES:
        raise ValueError(f"{name} is a PIL image of mode {image.mode!r}, which has no single reading as colour; "
                         f"accepted modes: {', '.join(OPAQUE_MODES + ALPHA_MODES)} (convert it to 8 bits first)")
    if has_transparency(image):
        rgba = (image.convert("LA") if image.mode == "La" else image).convert("RGBA")  # PIL has no La -> RGBA
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, WHITE), rgba)
    return image.convert("RGB")
