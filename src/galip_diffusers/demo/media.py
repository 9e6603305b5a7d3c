"""Pictures the demo shows and serves, made from PIL frames (no gradio): upscaled copies, a strip, an animated GIF."""

from __future__ import annotations

import math
import os
from typing import Sequence

import PIL.Image


def upscale(images: Sequence[PIL.Image.Image], min_size: int = 256) -> list[PIL.Image.Image]:
    """Enlarge small images by the smallest integer factor that makes their shorter side >= ``min_size`` (nearest
    neighbour: GAN pixels stay crisp, nothing is invented). Images already that large are returned as they are."""
    out = []
    for image in images:
        factor = max(1, math.ceil(min_size / max(1, min(image.size))))
        out.append(image if factor == 1 else image.resize((image.width * factor, image.height * factor),
                                                          PIL.Image.NEAREST))
    return out


def make_strip(
    frames: Sequence[PIL.Image.Image], columns: int | None = None, gap: int = 2,
    background: tuple[int, int, int] = (255, 255, 255),
) -> PIL.Image.Image:
    """Paste ``frames`` left to right (wrapping after ``columns`` frames; default: one row) with ``gap`` pixels
    between them. All frames must have the same size."""
    if not frames:
        raise ValueError("make_strip: `frames` is empty.")
    width, height = frames[0].size
    if any(f.size != (width, height) for f in frames):
        raise ValueError(f"make_strip: all frames must have the size of the first, {width}x{height}.")
    if gap < 0:
        raise ValueError(f"make_strip: `gap` must be >= 0, got {gap}.")
    columns = len(frames) if columns is None else columns
    if columns < 1:
        raise ValueError(f"make_strip: `columns` must be >= 1, got {columns}.")
    columns = min(columns, len(frames))
    rows = math.ceil(len(frames) / columns)
    strip = PIL.Image.new("RGB", (columns * width + (columns - 1) * gap, rows * height + (rows - 1) * gap), background)
    for index, frame in enumerate(frames):
        row, col = divmod(index, columns)
        strip.paste(frame.convert("RGB"), (col * (width + gap), row * (height + gap)))
    return strip


def make_gif(
    frames: Sequence[PIL.Image.Image], path: str | os.PathLike, duration_ms: int = 120, boomerang: bool = True,
) -> str:
    """Write an animated GIF that loops forever and return its path. With ``boomerang`` the frames play forward and
    then back (without repeating the two ends), so the loop has no jump."""
    if len(frames) < 2:
        raise ValueError(f"make_gif: an animation needs at least 2 frames, got {len(frames)}.")
    if duration_ms < 1:
        raise ValueError(f"make_gif: `duration_ms` must be >= 1, got {duration_ms}.")
    sequence = list(frames) + (list(frames[-2:0:-1]) if boomerang else [])
    # One adaptive palette per frame; no dithering, so flat colours stay flat.
    sequence = [f.convert("RGB").quantize(colors=256, dither=PIL.Image.Dither.NONE) for f in sequence]
    path = os.fspath(path)
    sequence[0].save(path, format="GIF", save_all=True, append_images=sequence[1:], duration=duration_ms, loop=0,
                     disposal=1)
    return path
