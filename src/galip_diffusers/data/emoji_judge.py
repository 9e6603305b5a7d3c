"""A nearest-neighbour judge for generated emoji, in pixel space.

Each generated image is compared with every real image of the emoji data set (7,572 with the held-out ones), all at
32x32 (box-filtered), composited on white, as RGB in [0, 1]; the distance is the root mean square pixel difference.
A prompt ``"{label}, {style} style"`` names one real image (its *target*); the judge reads, from the nearest real
images:

* ``emoji_top1`` / ``emoji_top5``: the nearest image / one of the 5 nearest shows the target's emoji (its
  ``concept``: any style, any skin tone);
* ``style_top1``: the nearest image is in the target's style;
* ``tone_among_variants`` (targets with one skin tone): among the target emoji's single-tone variants and its base
  image in the asked style (6 candidates, chance 1/6), the nearest is the asked tone.

Pixel nearest neighbours are strict on purpose: a blob of the right colours is far from every real emoji, and a
model that draws the right emoji in the wrong style lands next to the other style's image. Written here (numpy only)
because no maintained library judges generated images against a fixed reference set this way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import numpy as np
from PIL import Image

from galip_core.finite import check_number_in_range
from galip_core.images import rgb_on_white

JUDGE_SIZE = 32
#: the metadata every record of :meth:`EmojiJudge.from_records` needs
RECORD_KEYS = ("unified", "concept", "style", "tone", "label")
ImageBatch = Union[np.ndarray, Sequence[Image.Image]]


def to_judge_pixels(images: ImageBatch, size: int = JUDGE_SIZE) -> np.ndarray:
    """``(N, size*size*3)`` float32 in [0, 1] from a sequence of PIL images or a uint8 ``(N, H, W, 3)`` array.

    PIL images are read by :func:`galip_core.images.rgb_on_white`: transparency (an alpha mode, or ``P``/``L``/``RGB``
    with transparency info) is composited on white, and modes with no single reading as colour (``F``, ``I``,
    ``I;16``: float or 16/32-bit values of unknown range) are refused: convert them to 8 bits first. Numpy images must
    be uint8 ``(H, W, 3)``; one image without a batch axis is refused (pass ``image[None]``), and so is an image
    without pixels (0 wide or high). Every image is box-filtered to ``size`` x ``size``.
    """
    check_number_in_range("`size`", size, low=1, integer=True)
    check_image_batch(images)
    rows = []
    for index, image in enumerate(images):
        rgb = _to_rgb(image, f"`images[{index}]`")
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.BOX)
        rows.append(np.asarray(rgb, dtype=np.float32).reshape(-1) / 255.0)
    if not rows:
        return np.zeros((0, size * size * 3), np.float32)
    return np.stack(rows)


def check_judge_pixels(name: str, pixels: Any, width: int) -> np.ndarray:
    """``pixels`` as an array, or ``ValueError`` naming ``name`` unless it is judge pixels: floats in [0, 1] of shape
    ``(N, width)``, as :func:`to_judge_pixels` makes them (0..255 values or NaN would be judged without a word)."""
    side = int(round((width / 3) ** 0.5))
    if np.ndim(pixels) != 2 or np.shape(pixels)[1] != width:
        raise ValueError(f"{name} must be judge pixels of shape (N, {width}) (to_judge_pixels at size {side}, as the "
                         f"reference set: EmojiJudge.pixels rows), got shape {np.shape(pixels)}")
    pixels = np.asarray(pixels)
    if pixels.dtype.kind != "f":
        raise ValueError(f"{name} must be judge pixels: floats in [0, 1] (to_judge_pixels), got dtype {pixels.dtype}")
    if pixels.size and not (np.isfinite(pixels).all() and pixels.min() >= 0 and pixels.max() <= 1):
        bad, high = int(np.count_nonzero(~np.isfinite(pixels))), float(pixels.max())
        found = (f"{bad} non-finite value(s) (NaN or inf)" if bad else f"values from {float(pixels.min()):g} to "
                 f"{high:g}" + (" (0..255 values? divide them by 255)" if high > 1 else ""))
        raise ValueError(f"{name} must be judge pixels: finite floats in [0, 1] (to_judge_pixels), got {found}")
    return pixels


def check_image_batch(images: Any) -> None:
    """``ValueError`` unless ``images`` is a uint8 ``(N, H, W, 3)`` array or a sequence (not one PIL image)."""
    if isinstance(images, Image.Image):
        raise ValueError("`images` must be a sequence of PIL images or a uint8 (N, H, W, 3) array, got one PIL "
                         "image: pass [image]")
    if isinstance(images, np.ndarray) and (images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3):
        hint = (": one image without a batch axis, pass image[None]"
                if images.ndim == 3 and images.shape[-1] == 3 else "")
        raise ValueError(f"`images` as a numpy array must be uint8 of shape (N, H, W, 3), got {images.dtype} "
                         f"{images.shape}{hint}")


def _to_rgb(image: Any, name: str) -> Image.Image:
    """One image as RGB: see :func:`to_judge_pixels` for what is accepted."""
    if isinstance(image, np.ndarray):  # checked here, then read as the PIL image it makes
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"{name} must be a uint8 (H, W, 3) array or a PIL image, got {image.dtype} {image.shape}")
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise ValueError(f"{name} must be a uint8 (H, W, 3) array or a PIL image, got {type(image).__name__}")
    if 0 in image.size:  # PIL would box-filter it into a black image
        raise ValueError(f"{name} has no pixels (width x height {image.size[0]}x{image.size[1]}); every image needs "
                         "at least one pixel")
    return rgb_on_white(image, name)


@dataclass
class EmojiJudge:
    """Real emoji at 32x32 and their metadata; :meth:`score` judges generated images against them."""

    pixels: np.ndarray  # (R, D) float32
    unified: np.ndarray  # (R,) str
    concept: np.ndarray
    style: np.ndarray
    tone: np.ndarray
    label: np.ndarray

    @classmethod
    def from_records(cls, records: Sequence[Mapping[str, Any]], images: ImageBatch) -> "EmojiJudge":
        """From :func:`~galip_diffusers.data.emoji.read_emoji_images` output (or rows of the data set)."""
        if len(records) != len(images):
            raise ValueError(f"got {len(records)} records for {len(images)} images")
        for index, record in enumerate(records):
            missing = [name for name in RECORD_KEYS if not isinstance(record, Mapping) or name not in record]
            if missing:
                raise ValueError(f"`records[{index}]` has no {', '.join(map(repr, missing))}: every record needs the "
                                 f"keys {', '.join(RECORD_KEYS)}")
        column = lambda name: np.array([r[name] for r in records])  # noqa: E731
        return cls(to_judge_pixels(images), *(column(name) for name in RECORD_KEYS))

    @classmethod
    def from_dataset(cls, dataset) -> "EmojiJudge":
        """From a ``datasets.Dataset`` of the emoji data set built with ``split="all"``: the judge compares with every
        real image, held-out ones included. A data set whose ``held_out`` column is all false (``split="train"``) or
        all true (``split="held_out"``) is refused: judged against it, the held-out prompt sets would come out
        empty, or the seen ones."""
        if "held_out" in dataset.column_names and len(dataset):
            held = {bool(flag) for flag in dataset["held_out"]}
            if len(held) == 1:
                only = held.pop()
                raise ValueError(f"`dataset` holds {'only' if only else 'none'} of the held-out images (its `held_out` "
                                 f"column is all {only}, as in split={'held_out' if only else 'train'!r}): the judge "
                                 "compares with every real image, so build the data set with split='all', or use "
                                 "EmojiJudge.from_tarballs()")
        records = dataset.remove_columns("image").to_list()
        return cls.from_records(records, dataset["image"])

    @classmethod
    def from_tarballs(cls, tarballs: Optional[Mapping[str, str]] = None, cache_dir: Optional[str] = None
                      ) -> "EmojiJudge":
        """Every real image, read from the npm tarballs (fetched with ``npm pack`` into ``cache_dir`` if not given)."""
        from .emoji import PACKAGES, default_cache_dir, fetch_tarballs, read_emoji_images

        if tarballs is None:
            tarballs = fetch_tarballs(cache_dir if cache_dir is not None else default_cache_dir(), PACKAGES)
        records, images = read_emoji_images(tarballs)
        return cls.from_records(records, images)

    def __len__(self) -> int:
        return len(self.pixels)

    def index_of(self, unified: str, style: str) -> int:
        hits = np.flatnonzero((self.unified == unified) & (self.style == style))
        if len(hits) != 1:
            raise KeyError(f"no real image ({unified}, {style}) in the judge's reference set")
        return int(hits[0])

    def distances(self, images: ImageBatch) -> np.ndarray:
        """``(N, R)`` RMS pixel distances between the images and every real image."""
        return self.pixel_distances(to_judge_pixels(images))

    def pixel_distances(self, x: np.ndarray) -> np.ndarray:
        """``(N, R)`` RMS distances between judge pixels ``x`` (``(N, D)``, e.g. rows of :attr:`pixels`) and every
        real image."""
        x = check_judge_pixels("`x`", x, self.pixels.shape[1])
        sq = (x**2).sum(1)[:, None] + (self.pixels**2).sum(1)[None, :] - 2.0 * x @ self.pixels.T
        return np.sqrt(np.maximum(sq, 0.0) / self.pixels.shape[1])

    def _tone_candidates(self, target: int) -> np.ndarray:
        same = (self.concept == self.concept[target]) & (self.style == self.style[target])
        single = np.char.find(self.tone.astype(str), ",") < 0  # the base image and the one-tone variants
        return np.flatnonzero(same & single)

    def judge(self, images: ImageBatch, targets: Sequence[int], k: int = 5) -> List[Dict[str, Any]]:
        """Per image: the ``k`` nearest real images (``1 <= k <= len(self)``) and the checks of the module docstring
        against ``targets`` (integer indices into the reference set, ``0 <= t < len(self)``, e.g. from
        :meth:`index_of`; one per image)."""
        check_number_in_range("`k` (the number of nearest real images)", k, low=1, high=len(self), integer=True)
        if isinstance(targets, (str, bytes)) or np.ndim(targets) != 1:
            raise ValueError(f"`targets` must be a sequence of integer indices into the reference set, got {targets!r}")
        for index, target in enumerate(targets):
            check_number_in_range(f"`targets[{index}]` (an index into the {len(self)} reference images)", target,
                                  low=0, high=len(self), high_open=True, integer=True)
        pixels = to_judge_pixels(images)
        if len(pixels) != len(targets):
            raise ValueError(f"got {len(pixels)} images for {len(targets)} targets")
        dist = self.pixel_distances(pixels)
        nearest = np.argsort(dist, axis=1)[:, :k]
        verdicts = []
        for row, target in enumerate(targets):
            near = nearest[row]
            verdict = {
                "nearest": [str(self.unified[i]) + "/" + str(self.style[i]) for i in near],
                "distance": float(dist[row, near[0]]),
                "emoji_top1": bool(self.concept[near[0]] == self.concept[target]),
                "emoji_top5": bool((self.concept[near] == self.concept[target]).any()),
                "style_top1": bool(self.style[near[0]] == self.style[target]),
            }
            tone = str(self.tone[target])
            if tone and "," not in tone:
                candidates = self._tone_candidates(target)
                verdict["tone_among_variants"] = bool(candidates[np.argmin(dist[row, candidates])] == target)
                verdict["tone_candidates"] = int(len(candidates))
            verdicts.append(verdict)
        return verdicts


def summarize(verdicts: Iterable[Mapping[str, Any]]) -> Dict[str, float]:
    """Mean of every boolean check over the verdicts that have it, plus the count ``n``."""
    verdicts = list(verdicts)
    keys = sorted({k for v in verdicts for k, value in v.items() if isinstance(value, bool)})
    summary: Dict[str, float] = {"n": len(verdicts)}
    for key in keys:
        values = [v[key] for v in verdicts if key in v]
        summary[key] = float(np.mean(values)) if values else float("nan")
    return summary


def mean_distance_between(groups: Sequence[ImageBatch]) -> float:
    """Mean RMS pixel distance (32x32, [0, 1]) between the images of each group, averaged over groups: e.g. one
    prompt's images across seeds, or the two real styles of one emoji."""
    return mean_pairwise_rms([to_judge_pixels(group) for group in groups])


def mean_pairwise_rms(groups: Sequence[np.ndarray]) -> float:
    """Mean RMS distance between the rows of each ``(n, D)`` array (judge pixels), averaged over all pairs."""
    values = []
    for x in groups:
        for i in range(len(x)):
            for j in range(i + 1, len(x)):
                values.append(float(np.sqrt(((x[i] - x[j]) ** 2).mean())))
    if not values:
        raise ValueError("every group needs at least two images")
    return float(np.mean(values))
