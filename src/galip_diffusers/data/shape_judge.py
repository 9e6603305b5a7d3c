"""A strict, human-like shape judge for one object mask: ``"circle"``, ``"square"``, ``"triangle"`` or ``"other"``.

Why it is written here, in numpy only: the package depends on numpy and Pillow, not on OpenCV, scipy or
scikit-image, and the captioned-shapes evaluator (:func:`galip_diffusers.data.shapes.score_images`) must run wherever
the package installs. Why it exists: the first evaluator classified a mask by its bounding-box fill ratio and the
ratio of its top and bottom widths alone, so a square with strongly rounded corners, a dome or a blob read as
whichever of the three prototypes was nearest. A person calls such shapes neither a circle nor a square.

Method: the mask is fitted with two families of outlines that run *through* the near misses, and the judge reads
which member fits best:

* rounded rectangles whose corner radius is ``a / 16`` of half the shorter side: ``a = 0`` is the square, ``a = 16``
  the circle, everything between is a rounded square (:data:`ROUNDING`);
* upright triangles with a horizontal base, the apex at a fraction ``u`` of the width (a skewed triangle is still a
  triangle) and a flat top ``t`` of the base wide (``t > 0``: a trapezoid, or a triangle with a blunt apex,
  :data:`APEX`, :data:`TOP`, :data:`WIDE_TOP`).

Each outline is drawn by the data set's rule (a pixel belongs to the shape when its centre lies inside the outline),
so a clean render of the data set matches its own member exactly. For every member the judge searches the box width,
height and integer position of best intersection over union (IoU). The answer is

* ``"square"`` when a rounded rectangle fits best with a corner radius up to ~22% of the side
  (:data:`MAX_SQUARE_ROUNDING`) and a square box (:func:`aspect_ok`: a rectangle is not a square);
* ``"circle"`` when a rounded rectangle fits best with a corner radius from ~41% of the side on
  (:data:`MIN_CIRCLE_ROUNDING`) and a round box (an ellipse of aspect 1.2 is not a circle);
* ``"triangle"`` when a triangle fits best with a flat top of at most 20% of the base or 5 px
  (:data:`MAX_TRIANGLE_TOP`, :data:`MAX_TRIANGLE_TOP_PX`: a generator blurs a few pixels off an apex);
* ``"other"`` otherwise (rounded squares, ellipses, rectangles, trapezoids, strongly rounded triangles), and also when
  the best member's IoU is below :data:`MIN_IOU` for its shape (blobs, smears, two objects).

Before fitting, one pass of a 3x3 majority filter removes one-pixel spurs and notches, the fringe a generator leaves
along edges that a reader ignores. Orientation: the data set's triangles are upright and its squares axis-aligned,
and so are the outlines; a rotated square or an inverted triangle reads as ``"other"``. Thresholds are calibrated on
rendered near misses and checked on held-back seeds in ``tests/test_shape_judge.py``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Dict, Tuple

import numpy as np

SHAPE_NAMES: Tuple[str, ...] = ("circle", "square", "triangle")
OTHER = "other"
#: corner radius as a fraction of half the shorter side (0: square, 16: circle), in sixteenths
ROUNDING: Tuple[int, ...] = tuple(range(17))
MAX_SQUARE_ROUNDING = 7  # sixteenths: a corner radius up to 7/32 ~ 22% of the side is still a square's corner
MIN_CIRCLE_ROUNDING = 13  # sixteenths: from a corner radius of 13/32 ~ 41% of the side on, it is a circle
#: triangles: apex position across the width and flat-top width, as fractions of the width, in twentieths
APEX: Tuple[int, ...] = (6, 8, 10, 12, 14)
TOP: Tuple[int, ...] = (0, 2, 4, 6, 8)
WIDE_TOP: Tuple[int, ...] = (10, 12, 14)  # centred trapezoids up to a top of 70% of the base: not squares either
MAX_TRIANGLE_TOP = 4  # twentieths: a blunt top up to 20% of the base is still an apex ...
MAX_TRIANGLE_TOP_PX = 5.0  # ... or up to 5 px: a small triangle's apex is blurred away over a few pixels
#: below this IoU with the best member the mask is not that shape (a blob, a smear, two objects)
MIN_IOU: Dict[str, float] = {"circle": 0.90, "square": 0.90, "triangle": 0.85}
#: circles and squares: the longer side may exceed the shorter by this factor, or by one pixel
MAX_ASPECT = 1.15
_SEARCH = (-2, 2)  # template box sizes tried, relative to the mask's box (px)


@lru_cache(maxsize=1024)
def rounded_rect(width: int, height: int, rounding: int) -> np.ndarray:
    """Boolean ``(height, width)`` rounded rectangle with corner radius ``rounding / 16`` of half the shorter side;
    ``rounding=0`` is the data set's square, ``16`` (with ``width == height``) its circle, pixel for pixel."""
    r2 = rounding * min(width, height)  # 32 x the radius, so that all arithmetic below is exact in integers
    dx, dy = np.abs(32 * np.arange(width) + 16 - 16 * width), np.abs(32 * np.arange(height) + 16 - 16 * height)[:, None]
    qx, qy = np.maximum(dx - (16 * width - r2), 0), np.maximum(dy - (16 * height - r2), 0)
    mask = qx**2 + qy**2 <= r2**2
    mask.setflags(write=False)
    return mask


@lru_cache(maxsize=1024)
def upright_triangle(width: int, height: int, apex: int = 10, top: int = 0) -> np.ndarray:
    """Boolean ``(height, width)`` upright triangle (``top > 0``: trapezoid) with a full-width base on the last row,
    its apex at ``apex / 20`` of the width and a flat top ``top / 20`` of the width wide; row ``i`` spans the
    outline at the row's lower edge. ``apex=10, top=0`` with ``width == height`` is the data set's triangle."""
    j2 = 20 * height * (2 * np.arange(width) + 1)  # 40 h x the pixel centre
    below = height - np.arange(height)[:, None] - 1  # rows below row i's lower edge, up to the base
    left = (2 * apex - top) * width * below
    right = (2 * apex + top) * width * below + 40 * width * (height - below)
    mask = (j2 >= left) & (j2 <= right)
    mask.setflags(write=False)
    return mask


def aspect_ok(width: int, height: int) -> bool:
    """Whether a ``width x height`` box is square enough for a circle or a square."""
    return abs(width - height) <= 1 or max(width, height) <= MAX_ASPECT * min(width, height)


def majority_filter(mask: np.ndarray) -> np.ndarray:
    """One pass of a 3x3 majority vote (at least 5 of 9 pixels set), zero-padded."""
    p = np.pad(mask.astype(np.uint8), 1)
    h, w = mask.shape
    votes = sum(p[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3))
    return votes >= 5


#: every family member, in the order of :func:`_member_stack`: ``("rect", rounding, 0)`` or ``("tri", apex, top)``
MEMBERS: Tuple[Tuple[str, int, int], ...] = tuple(
    [("rect", a, 0) for a in ROUNDING] + [("tri", u, t) for u in APEX for t in TOP]
    + [("tri", 10, t) for t in WIDE_TOP])


@lru_cache(maxsize=512)
def _member_stack(width: int, height: int) -> Tuple[np.ndarray, np.ndarray]:
    """All members drawn in a ``width x height`` box as the columns of a ``(height * width, len(MEMBERS))`` float32
    matrix (counts stay exact in float32), and their areas."""
    stack = np.stack([rounded_rect(width, height, p) if family == "rect" else upright_triangle(width, height, p, q)
                      for family, p, q in MEMBERS]).reshape(len(MEMBERS), -1).T.astype(np.float32)
    stack.setflags(write=False)
    return stack, stack.sum(axis=0)


def fit_families(mask: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best IoU of a mask (cropped to its box) with each of :data:`MEMBERS` over box sizes near the mask's and every
    integer position (the box may reach one pixel past the crop): ``(iou, width, height)``, arrays in that order."""
    bh, bw = mask.shape
    padded = np.pad(mask, 1).astype(np.float32)
    area = int(mask.sum())
    best = np.zeros(len(MEMBERS))
    best_w, best_h = np.zeros(len(MEMBERS), dtype=int), np.zeros(len(MEMBERS), dtype=int)
    for h in range(max(2, bh + _SEARCH[0]), min(bh + _SEARCH[1], bh + 2) + 1):
        for w in range(max(2, bw + _SEARCH[0]), min(bw + _SEARCH[1], bw + 2) + 1):
            stack, t_area = _member_stack(w, h)
            windows = np.lib.stride_tricks.sliding_window_view(padded, (h, w)).reshape(-1, h * w)
            inter = windows @ stack  # (positions, members)
            iou = (inter / (area + t_area - inter)).max(axis=0)
            better = iou > best
            best[better], best_w[better], best_h[better] = iou[better], w, h
    return best, best_w, best_h


def _member_name(member: Tuple[str, int, int], width: int, height: int, crop_shape: Tuple[int, int]) -> str:
    """What a reader calls a best-fitting member (``width x height``) of a mask whose own box is ``crop_shape``."""
    family, p, q = member
    if family == "tri":
        return "triangle" if q <= MAX_TRIANGLE_TOP or q * width / 20 <= MAX_TRIANGLE_TOP_PX else OTHER
    if not (aspect_ok(width, height) and aspect_ok(*crop_shape)):  # the member's box and the mask's own box
        return OTHER
    return "square" if p <= MAX_SQUARE_ROUNDING else "circle" if p >= MIN_CIRCLE_ROUNDING else OTHER


def judge_shape(mask: np.ndarray) -> Tuple[str, Dict[str, float]]:
    """``(shape, scores)``: what a strict reader calls the object in ``mask`` (boolean, any size, one object, e.g.
    the largest connected component) and its best IoU with the circle, square and triangle members.

    When several members fit equally well (small shapes draw, e.g., corner radii of 22% and 25% of the side
    alike), the pixels cannot tell them apart: the mask reads as the one shape named among them, and as ``"other"``
    when they name none or two."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be a 2-d boolean array (height, width), got shape {mask.shape}")
    mask = majority_filter(mask)
    if not mask.any():
        return OTHER, {name: 0.0 for name in SHAPE_NAMES}
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    crop = mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    iou, width, height = fit_families(crop)
    index = {member: i for i, member in enumerate(MEMBERS)}
    scores = {"circle": float(iou[index["rect", 16, 0]]), "square": float(iou[index["rect", 0, 0]]),
              "triangle": float(max(iou[i] for m, i in index.items() if m[0] == "tri" and m[2] <= MAX_TRIANGLE_TOP))}
    best = float(iou.max())
    names = {_member_name(MEMBERS[i], int(width[i]), int(height[i]), crop.shape)
             for i in np.flatnonzero(iou >= best - 1e-9)}
    named = names - {OTHER}
    name = named.pop() if len(named) == 1 else OTHER
    return (name if name == OTHER or best >= MIN_IOU[name] else OTHER), scores
