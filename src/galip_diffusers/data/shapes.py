"""Procedural captioned-shapes data set and a pixel-level evaluator.

Every image is 64x64 RGB with exactly one flat-coloured shape on a flat background and
the caption ``"a {size} {color} {shape} on a {background} background"``. Captions that
contain a ``purple triangle`` or an ``orange circle`` are held out of training, so a
text-to-image model can be tested on unseen attribute combinations. :func:`score_images`
reads the four attributes back from pixels (numpy only) to measure caption faithfulness.

Geometry: a shape of ``size_px`` fills a ``size_px x size_px`` box whose top-left pixel is
``(x0, y0)``; its centre is ``(x0 + size_px / 2, y0 + size_px / 2)`` in pixel units (pixel
``j`` spans ``[j, j + 1)``). Pixels are either exactly the colour or exactly the background.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from galip_core.finite import check_number_in_range
from galip_core.images import rgb_on_white
from galip_core.paths import check_output_folder

from .imagefolder import dataset_rows, write_imagefolder
from .shape_judge import judge_shape

if TYPE_CHECKING:  # datasets is imported lazily at call time
    from datasets import Dataset

RGB = Tuple[int, int, int]

IMAGE_SIZE = 64
SIZES: Tuple[str, ...] = ("small", "large")
COLORS: Dict[str, RGB] = {
    "red": (220, 20, 20), "green": (20, 170, 40), "blue": (30, 60, 220),
    "yellow": (235, 210, 30), "purple": (140, 40, 180), "orange": (245, 130, 10),
}
SHAPES: Tuple[str, ...] = ("circle", "square", "triangle")
BACKGROUNDS: Dict[str, RGB] = {"white": (245, 245, 245), "black": (15, 15, 15), "gray": (128, 128, 128)}
SIZE_RANGES: Dict[str, Tuple[int, int]] = {"small": (14, 20), "large": (28, 40)}  # inclusive, px
HELD_OUT_PAIRS: Tuple[Tuple[str, str], ...] = (("purple", "triangle"), ("orange", "circle"))
SPLITS: Tuple[str, ...] = ("train", "held_out", "all")
SIZE_THRESHOLD_PX = 24  # evaluator: bounding-box side < 24 px (at 64x64) reads as "small"

_CAPTION_RE = re.compile(r"a (\w+) (\w+) (\w+) on a (\w+) background")
ImageLike = Union[Image.Image, np.ndarray, Any]


# ----------------------------------------------------------------------------- captions
def _check(name: str, value: Any, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ValueError(f"invalid {name}={value!r}; allowed values: {', '.join(allowed)}")
    return value


def make_caption(size: str, color: str, shape: str, background: str) -> str:
    """Return ``"a {size} {color} {shape} on a {background} background"`` after validation."""
    _check("size", size, SIZES)
    _check("color", color, tuple(COLORS))
    _check("shape", shape, SHAPES)
    _check("background", background, tuple(BACKGROUNDS))
    return f"a {size} {color} {shape} on a {background} background"


def parse_caption(caption: str) -> Dict[str, str]:
    """Parse a caption into ``{"size", "color", "shape", "background"}`` (strict grammar)."""
    match = _CAPTION_RE.fullmatch(caption) if isinstance(caption, str) else None
    if match is None:
        grammar = "a {size} {color} {shape} on a {background} background"
        raise ValueError(f"caption {caption!r} does not match the grammar {grammar!r}")
    size, color, shape, background = match.groups()
    try:
        make_caption(size, color, shape, background)
    except ValueError as err:
        raise ValueError(f"caption {caption!r}: {err}") from None
    return {"size": size, "color": color, "shape": shape, "background": background}


def is_held_out(caption_or_attrs: Union[str, Mapping[str, str]]) -> bool:
    """True if the caption (or attribute dict) contains a held-out colour/shape pair."""
    attrs = parse_caption(caption_or_attrs) if isinstance(caption_or_attrs, str) else caption_or_attrs
    return (attrs["color"], attrs["shape"]) in HELD_OUT_PAIRS


@lru_cache(maxsize=None)
def _captions(split: str) -> Tuple[str, ...]:
    caps = [make_caption(s, c, sh, b) for s in SIZES for c in COLORS for sh in SHAPES for b in BACKGROUNDS]
    return tuple(c for c in caps if split == "all" or is_held_out(c) == (split == "held_out"))


def all_captions(split: str = "train") -> List[str]:
    """All captions of ``split`` ("train": 96, "held_out": 12, "all": 108) in a fixed order."""
    return list(_captions(_check("split", split, SPLITS)))


# ----------------------------------------------------------------------------- rendering
@lru_cache(maxsize=None)
def _box_offsets(size_px: int) -> Tuple[np.ndarray, np.ndarray]:
    """``(dy, dx)``: pixel centres of a ``size_px`` box relative to its centre, as a column and a row."""
    centres = np.arange(size_px) + 0.5 - size_px / 2.0
    return centres[:, None], centres[None, :]


def _shape_mask(shape: str, size_px: int) -> np.ndarray:
    """Boolean ``(size_px, size_px)`` mask of a shape filling its box (read-only, cached)."""
    dy, dx = _box_offsets(size_px)
    if shape == "square":
        mask = np.ones((size_px, size_px), dtype=bool)
    elif shape == "circle":
        mask = dx**2 + dy**2 <= (size_px / 2.0) ** 2
    else:  # upright isosceles triangle: row i spans the triangle's width at the row's lower edge
        rows = np.arange(size_px)[:, None]
        mask = np.abs(dx) <= (rows + 1) / 2.0
    mask.setflags(write=False)
    return mask


def render_shape(size_px: int, color: str, shape: str, background: str,
                 center: Optional[Tuple[float, float]] = None, image_size: int = IMAGE_SIZE,
                 as_array: bool = False) -> Union[Image.Image, np.ndarray]:
    """Draw one shape (box side ``size_px``) centred at ``center=(cx, cy)`` (default: image centre).

    Returns a PIL RGB image, or a ``(H, W, 3)`` uint8 array when ``as_array=True``. The box
    must lie fully inside the frame, otherwise ValueError.
    """
    _check("color", color, tuple(COLORS))
    _check("shape", shape, SHAPES)
    _check("background", background, tuple(BACKGROUNDS))
    if not isinstance(size_px, (int, np.integer)) or not 1 <= size_px <= image_size:
        raise ValueError(f"invalid size_px={size_px!r}; must be an integer in [1, {image_size}]")
    img = _paint(_shape_mask(shape, int(size_px)), color, background, center, image_size)
    return img if as_array else Image.fromarray(img)


def _paint(mask: np.ndarray, color: str, background: str, center: Optional[Tuple[float, float]],
           image_size: int = IMAGE_SIZE) -> np.ndarray:
    """A ``(H, W, 3)`` uint8 image of ``background`` with ``mask``'s box (side ``len(mask)``) centred at ``center``
    (default: the image centre) painted in ``color``; ValueError if the box leaves the frame."""
    size_px = mask.shape[0]
    cx, cy = center if center is not None else (image_size / 2.0, image_size / 2.0)
    x0, y0 = int(np.floor(cx - size_px / 2.0 + 0.5)), int(np.floor(cy - size_px / 2.0 + 0.5))
    if not (0 <= x0 <= image_size - size_px and 0 <= y0 <= image_size - size_px):
        raise ValueError(f"invalid center={center!r}: a {size_px}px shape would leave the "
                         f"{image_size}x{image_size} frame")
    img = np.empty((image_size, image_size, 3), dtype=np.uint8)
    img[:] = BACKGROUNDS[background]
    img[y0:y0 + size_px, x0:x0 + size_px][mask] = COLORS[color]
    return img


# ----------------------------------------------------------------------------- sampling
def _as_rng(rng: Union[np.random.Generator, int]) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)):
        return np.random.Generator(np.random.PCG64(int(rng)))
    raise TypeError(f"rng must be a numpy.random.Generator or an int seed, got {type(rng).__name__}")


def sample_attributes(rng: Union[np.random.Generator, int], split: str = "train") -> Dict[str, Any]:
    """Draw a caption uniformly from ``split``, then a box side and a position.

    Returns the four attributes plus ``caption``, ``size_px`` and ``center``.
    """
    rng = _as_rng(rng)
    captions = _captions(_check("split", split, SPLITS))
    caption = captions[int(rng.integers(len(captions)))]
    attrs: Dict[str, Any] = parse_caption(caption)
    lo, hi = SIZE_RANGES[attrs["size"]]
    size_px = int(rng.integers(lo, hi + 1))
    x0, y0 = (int(v) for v in rng.integers(0, IMAGE_SIZE - size_px + 1, size=2))
    attrs.update(caption=caption, size_px=size_px, center=(x0 + size_px / 2.0, y0 + size_px / 2.0))
    return attrs


def generate_example(rng: Union[np.random.Generator, int], split: str = "train",
                     as_array: bool = False) -> Tuple[Union[Image.Image, np.ndarray], str, Dict[str, Any]]:
    """Return ``(image, caption, meta)``; ``meta`` holds the attributes, ``size_px``, ``center``."""
    meta = sample_attributes(rng, split)
    image = render_shape(meta["size_px"], meta["color"], meta["shape"], meta["background"],
                         center=meta["center"], as_array=as_array)
    return image, meta["caption"], meta


def generate_shapes(num_images: int, seed: int = 0, split: str = "train", as_array: bool = False,
                    return_meta: bool = False) -> List[tuple]:
    """Deterministic list of ``(image, caption)`` (or ``(image, caption, meta)``) tuples.

    Uses ``numpy.random.Generator(PCG64(seed))``: same arguments, identical pixels and captions.
    """
    check_number_in_range("num_images", num_images, low=0, integer=True)
    check_number_in_range("seed", seed, low=0, integer=True)
    _check("split", split, SPLITS)
    rng = np.random.Generator(np.random.PCG64(seed))
    out = []
    for _ in range(int(num_images)):
        image, caption, meta = generate_example(rng, split, as_array=as_array)
        out.append((image, caption, meta) if return_meta else (image, caption))
    return out


def make_dataset(num_images: int, seed: int = 0, split: str = "train") -> "Dataset":
    """Build a ``datasets.Dataset`` with columns ``image`` (``datasets.Image``), ``text`` and ``held_out`` (bool,
    :func:`is_held_out`): the training scripts drop the held-out rows, so a ``"held_out"`` or ``"all"`` folder is
    never trained on by mistake."""
    from datasets import Dataset, Features, Value  # noqa: F811
    from datasets import Image as ImageFeature

    pairs = generate_shapes(num_images, seed=seed, split=split)
    features = Features({"image": ImageFeature(), "text": Value("string"), "held_out": Value("bool")})
    return Dataset.from_dict({"image": [p[0] for p in pairs], "text": [p[1] for p in pairs],
                              "held_out": [is_held_out(p[1]) for p in pairs]}, features=features)


def to_imagefolder(dataset_or_num_images: Any, directory: Union[str, Path], seed: int = 0,
                   split: str = "train", overwrite: bool = False) -> Path:
    """Write PNGs plus ``metadata.jsonl`` (``{"file_name", "text", "held_out"}``) for the ``imagefolder`` loader.

    ``dataset_or_num_images`` is a number of images to generate, or a ``datasets.Dataset`` with ``image``/``text``
    columns (``seed`` and ``split`` are then ignored; a boolean ``held_out`` column is copied, else it is computed
    from the shapes captions). The folder is built beside ``directory`` and swapped in when complete
    (:mod:`galip_diffusers.data.imagefolder`): an error, Ctrl-C or SIGTERM leaves ``directory`` as it was. A
    non-empty ``directory`` raises ValueError unless ``overwrite=True``, which replaces an earlier export: it
    deletes ``metadata.jsonl`` and the files it lists, and refuses (deleting nothing) a folder holding other files.
    Every argument is checked, and the images are generated, before anything is written.
    """
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite must be True or False, got {overwrite!r}")
    if not isinstance(directory, (str, os.PathLike)) or not str(directory):
        raise ValueError(f"directory must be a non-empty str or path of a folder, got {directory!r}")
    check_output_folder("directory", os.fspath(directory))  # a file, or a path under one
    if isinstance(dataset_or_num_images, (int, np.integer)) and not isinstance(dataset_or_num_images, bool):
        check_number_in_range("dataset_or_num_images (a number of images)", dataset_or_num_images, low=0, integer=True)
        rows: Iterable = [(image, text, is_held_out(text))
                          for image, text in generate_shapes(dataset_or_num_images, seed=seed, split=split)]
    elif hasattr(dataset_or_num_images, "column_names"):
        rows = dataset_rows(dataset_or_num_images, is_held_out)
    else:
        raise TypeError(f"dataset_or_num_images must be a datasets.Dataset or an int, got "
                        f"{type(dataset_or_num_images).__name__}")
    return write_imagefolder(rows, directory, overwrite)


# ----------------------------------------------------------------------------- evaluator
def _to_255(arr: np.ndarray, name: str) -> np.ndarray:
    """``arr`` (images of any shape) as float32 in 0..255, or ``ValueError`` naming ``name``. Integer arrays (uint8
    or any other integer dtype) hold pixel values in 0..255; float arrays hold [0, 1], and values down to -0.25 or
    up to 1.25 are clipped (rounding, not another range); NaN/inf and other dtypes are refused."""
    expected = "uint8 (or other integer) pixel values in 0..255, or floats in [0, 1]"
    if 0 in arr.shape[-3:-1]:  # an image of height or width 0: resized, it would be scored as a black image
        raise ValueError(f"{name} has no pixels (shape {arr.shape}); every image needs at least one pixel")
    if arr.dtype.kind in "iu":
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 255):
            raise ValueError(f"{name} must hold {expected}; got integer values from {int(arr.min())} to "
                             f"{int(arr.max())}")
        return arr.astype(np.float32)
    if arr.dtype.kind != "f":
        raise ValueError(f"{name} must hold {expected}; got dtype {arr.dtype}")
    if not arr.size:
        return arr.astype(np.float32)
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    if bad:
        raise ValueError(f"{name} holds {bad} non-finite value(s) (NaN or inf) out of {arr.size}; it must hold "
                         f"{expected}")
    low, high = float(np.min(arr)), float(np.max(arr))
    if low < -0.25:
        raise ValueError(f"{name} must hold {expected}; got float values down to {low:g} (rescale [-1, 1] outputs "
                         "with (x + 1) / 2)")
    if high > 1.25:
        raise ValueError(f"{name} must hold {expected}; got float values up to {high:g} (0..255 values as floats? "
                         "divide them by 255, or pass uint8)")
    return np.clip(arr.astype(np.float32), 0.0, 1.0) * 255.0


def _resize(arr: np.ndarray) -> np.ndarray:
    """Resize one ``(H, W, 3)`` 0..255 float array to 64x64 (PIL BOX = area average)."""
    if arr.shape[:2] == (IMAGE_SIZE, IMAGE_SIZE):
        return arr
    img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))
    return np.asarray(img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BOX), dtype=np.float32)


def _to_batch(images: Any, name: str = "images") -> np.ndarray:
    """Convert supported inputs (see :func:`score_images`) to a float32 ``(N, 64, 64, 3)`` array in 0..255;
    ``ValueError`` naming ``name`` for anything else or an empty batch. PIL images: as the emoji judge and training
    read them (:func:`~galip_core.images.rgb_on_white`; ``convert("RGB")`` makes float, 16-bit, transparent black)."""
    if type(images).__module__.split(".")[0] == "torch":  # torch imported only if given a tensor
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"{name} as a torch tensor must have shape (N, 3, H, W), got {tuple(images.shape)}")
        images = images.detach().cpu().permute(0, 2, 3, 1)
        images = (images.float() if images.is_floating_point() else images).numpy()  # numpy has no bfloat16
    if isinstance(images, (list, tuple)):
        arrays = [np.asarray(rgb_on_white(im, f"{name}[{i}]") if isinstance(im, Image.Image) else im)
                  for i, im in enumerate(images)]
        if any(a.ndim != 3 or a.shape[-1] != 3 for a in arrays):
            raise ValueError(f"every image in the list {name} must be a PIL image or an (H, W, 3) array")
        arrays = [_to_255(a, f"{name}[{index}]") for index, a in enumerate(arrays)]
    elif isinstance(images, np.ndarray):
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"{name} as a numpy array must have shape (N, H, W, 3), got {images.shape}")
        arrays = _to_255(images, name)
    else:
        raise ValueError(f"{name} must be a list of PIL images, an (N, H, W, 3) numpy array or an "
                         f"(N, 3, H, W) torch tensor, got {type(images).__name__}")
    if not len(arrays):  # no accuracy to report: 0.0 would read as a model that gets everything wrong
        raise ValueError(f"{name} is empty; give at least one image")
    return np.stack([_resize(a) for a in arrays])


def _nearest(colour: np.ndarray, palette: Mapping[str, RGB]) -> str:
    names = list(palette)
    dists = np.linalg.norm(np.asarray([palette[n] for n in names], np.float32) - colour, axis=1)
    return names[int(np.argmin(dists))]


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """Largest 4-connected component of a boolean mask (numpy-only label propagation)."""
    h, w = mask.shape
    labels = np.where(mask, np.arange(1, h * w + 1).reshape(h, w), 0)
    while True:
        p = np.pad(labels, 1)
        new = np.maximum.reduce([labels, p[:-2, 1:-1], p[2:, 1:-1], p[1:-1, :-2], p[1:-1, 2:]]) * mask
        if np.array_equal(new, labels):
            break
        labels = new
    ids, counts = np.unique(labels[mask], return_counts=True)
    return labels == ids[np.argmax(counts)] if ids.size else mask


def _box_blur3(img: np.ndarray) -> np.ndarray:
    """3x3 mean filter with edge padding."""
    p = np.pad(img, ((1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = img.shape[:2]
    return sum(p[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)) / 9.0


def _predict_array(img: np.ndarray) -> Dict[str, Any]:
    """Predict attributes of one float ``(64, 64, 3)`` 0..255 image.

    Background = nearest named colour to the median of the 2-px border ring. If the border is
    noisy (robust std > 2), the image is 3x3-mean-filtered before segmentation. Object colour =
    median of pixels > 50 away from the background; the object mask = largest 4-connected
    component of pixels closer to that colour than to the background.
    """
    border = np.concatenate([img[:2].reshape(-1, 3), img[-2:].reshape(-1, 3),
                             img[2:-2, :2].reshape(-1, 3), img[2:-2, -2:].reshape(-1, 3)])
    bg_colour = np.median(border, axis=0)
    pred: Dict[str, Any] = {"background": _nearest(bg_colour, BACKGROUNDS), "color": None, "shape": None,
                            "size": None, "size_px": None, "center": None}
    noise = 1.4826 * np.median(np.abs(border - bg_colour))
    seg = _box_blur3(img) if noise > 2.0 else img
    dist_bg = np.linalg.norm(seg - bg_colour, axis=-1)
    candidates = dist_bg > 50.0  # the closest object/background pair is ~103 apart
    if candidates.sum() < 9:
        return pred
    obj_colour = np.median(seg[candidates], axis=0)
    mask = _largest_component(np.linalg.norm(seg - obj_colour, axis=-1) < dist_bg)
    if mask.sum() < 9:
        return pred
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    side = int(max(y1 - y0, x1 - x0))
    pred.update(color=_nearest(np.median(img[mask], axis=0), COLORS),
                shape=judge_shape(mask)[0],
                size="small" if side < SIZE_THRESHOLD_PX else "large", size_px=side,
                center=(float(x0 + x1) / 2.0, float(y0 + y1) / 2.0))
    return pred


def predict_attributes(image: ImageLike) -> Dict[str, Any]:
    """Read ``background``, ``color``, ``shape``, ``size``, ``size_px`` and ``center`` from pixels.

    ``image``: one PIL image, ``(H, W, 3)`` array or ``(3, H, W)`` torch tensor, with values as in
    :func:`score_images`; other resolutions are area-resized to 64x64 first (``size_px`` and
    ``center`` are in 64x64 pixel units). Object fields are None when no object is found.
    """
    if isinstance(image, Image.Image):
        return _predict_array(_to_batch([image], "image")[0])
    if not (isinstance(image, np.ndarray) or type(image).__module__.split(".")[0] == "torch"):
        raise ValueError("image must be one PIL image, an (H, W, 3) numpy array or a (3, H, W) torch tensor, got "
                         f"{type(image).__name__} (score_images takes a list)")
    return _predict_array(_to_batch(image[None], "image")[0])


def object_center(image: ImageLike) -> Optional[Tuple[float, float]]:
    """Centre ``(cx, cy)`` of the detected object's bounding box (64x64 units), or None."""
    return predict_attributes(image)["center"]


def score_images(images: Any, captions: Sequence[str], return_predictions: bool = False) -> Dict[str, Any]:
    """Per-attribute accuracy of ``images`` against ``captions`` read back from pixels.

    ``images``: list of PIL images or ``(H, W, 3)`` arrays, ``(N, H, W, 3)`` numpy array or
    ``(N, 3, H, W)`` torch tensor; non-64x64 inputs are area-resized to 64x64. Arrays and tensors of
    an integer dtype (uint8, int64, ...) hold pixel values in 0..255; float ones hold [0, 1]
    (values down to -0.25 and up to 1.25 are clipped as rounding). Anything else, such as floats
    in 0..255 or [-1, 1], NaN/inf, or bool/complex dtypes, is refused with a ``ValueError``.
    Returns ``{"background", "color", "shape", "size", "mean", "all", "n"}`` (plus
    ``"per_image"`` predictions if requested). A missing object counts as wrong.
    """
    if isinstance(captions, str):
        raise ValueError("captions must be a sequence of caption strings, not a single string")
    targets = [parse_caption(c) for c in captions]
    batch = _to_batch(images)
    if len(batch) != len(targets):
        raise ValueError(f"got {len(batch)} images but {len(targets)} captions; lengths must match")
    keys = ("background", "color", "shape", "size")
    preds = [_predict_array(img) for img in batch]
    hits = np.array([[p[k] == t[k] for k in keys] for p, t in zip(preds, targets)], dtype=bool).reshape(-1, 4)
    n = len(targets)
    result: Dict[str, Any] = {k: float(hits[:, i].mean()) if n else 0.0 for i, k in enumerate(keys)}
    result.update(mean=float(np.mean([result[k] for k in keys])),
                  all=float(hits.all(axis=1).mean()) if n else 0.0, n=n)
    if return_predictions:
        result["per_image"] = preds
    return result


if __name__ == "__main__":  # python -m galip_diffusers.data.shapes OUT [...]: the command line lives in shapes_cli.py,
    import runpy  # which imports this module; run by name, so that this module never imports its own command line

    runpy.run_module("galip_diffusers.data.shapes_cli", run_name="__main__", alter_sys=True)
