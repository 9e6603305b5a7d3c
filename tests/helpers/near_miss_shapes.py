"""Near-miss outlines for the strict shape judge's tests: rounded squares, ellipses and trapezoids drawn by the shapes
data set's pixel rule (pixel centres inside the outline), so they differ from real shapes only where they should."""

from __future__ import annotations

import numpy as np

from galip_diffusers.data.shapes import _box_offsets


def near_miss_mask(kind: str, size_px: int, amount: float, vertical: bool) -> np.ndarray:
    """``rounded_square``: corners are quarter circles of radius ``amount * size_px / 2``; ``ellipse``: a disc whose
    height (width when ``vertical``) is squeezed to ``amount``; ``trapezoid``: an upright isosceles trapezoid whose top
    edge is ``amount`` of its base (0: the triangle, 1: the square)."""
    dy, dx = _box_offsets(size_px)
    half = size_px / 2.0
    if kind == "trapezoid":
        rows = np.arange(size_px)[:, None]
        return np.abs(dx) <= half * (amount + (1.0 - amount) * (rows + 1) / size_px)
    if kind == "rounded_square":
        r = amount * half
        cy, cx = np.maximum(np.abs(dy) - (half - r), 0.0), np.maximum(np.abs(dx) - (half - r), 0.0)
        return cx**2 + cy**2 <= r**2
    ry, rx = (half, half * amount) if vertical else (half * amount, half)
    return (dx / rx) ** 2 + (dy / ry) ** 2 <= 1.0
