"""Training data for GALIP: loading image-text data sets, the official real-image augmentation, corrupt-image skipping.

Everything random here (crop, flip, caption choice) is drawn from a generator seeded by ``(seed, epoch, index)``, so a
sample's augmentation does not depend on which process, worker or resumed run loads it. That is what makes resumed
runs continue bit-exactly.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import random
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from galip_core.images import rgb_on_white

from .held_out import check_held_out_feature, held_out_mask, stream_row_check

logger = logging.getLogger(__name__)

#: The official GALIP augmentation: resize the shorter side to ``resolution * 76 / 64``, random crop, random flip.
AUGMENT_SCALE = 76 / 64


# ----------------------------------------------------------------------------------------------------------- loading
def is_saved_dataset_dir(path: str) -> bool:
    """Whether ``path`` was written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``."""
    def has(name: str) -> bool:
        return os.path.isfile(os.path.join(path, name))

    return os.path.isdir(path) and (has("dataset_dict.json") or (has("state.json") and has("dataset_info.json")))


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return {list: "a list", dict: "an object"}.get(type(value), "a string")


def check_imagefolder_metadata(folder: str) -> None:
    """Check every ``metadata.jsonl`` under an imagefolder before ``datasets`` reads it, whose own errors on these
    cases are an ``IndexError`` or a pyarrow parse error: raise ``ValueError`` naming the file (and line and column)
    if one is empty, holds a line that is not a JSON object, or mixes lists and strings in a column. Also log a
    warning for image files that no ``metadata.jsonl`` lists, which ``datasets`` leaves out without a word."""
    listed, found = set(), False
    for root, _, files in os.walk(folder):
        if "metadata.jsonl" in files:
            found = True
            for row in _checked_metadata_rows(os.path.join(root, "metadata.jsonl")):
                if isinstance(row.get("file_name"), str):
                    listed.add(os.path.normpath(os.path.join(root, row["file_name"])))
    if found:
        unlisted = sorted(os.path.relpath(path, folder) for path in image_files(folder) - listed)
        if unlisted:
            logger.warning(f"{len(unlisted)} image file(s) under {folder!r} are not listed in a metadata.jsonl and are "
                           f"not used (e.g. {', '.join(unlisted[:3])}).")


def image_files(folder: str) -> set[str]:
    """Every image file under ``folder`` (by extension, :data:`IMAGE_EXTENSIONS`), as normalised paths."""
    return {os.path.normpath(os.path.join(root, name)) for root, _, files in os.walk(folder)
            for name in files if name.lower().endswith(IMAGE_EXTENSIONS)}


def _checked_metadata_rows(path: str) -> list[dict]:
    """The rows of one ``metadata.jsonl`` (see :func:`check_imagefolder_metadata` for the checks)."""
    kinds: dict[str, tuple[str, int]] = {}  # column -> (list or scalar, first line seen)
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as err:
                raise ValueError(f"{path!r} line {number} is not valid JSON: {err}.") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path!r} line {number} is not a JSON object: {line.strip()[:80]!r}.")
            rows.append(row)
            for column, value in row.items():
                if value is None:  # a missing value fits any column type
                    continue
                kind = _json_kind(value)
                first = kinds.setdefault(column, (kind, number))
                if first[0] != kind:
                    raise ValueError(
                        f"{path!r}: column {column!r} is {first[0]} on line {first[1]} but {kind} on line "
                        f"{number}; give every row the same type (e.g. a list of strings for several captions)."
                    )
    if not rows:
        raise ValueError(f"{path!r} is empty: an imagefolder's metadata.jsonl needs one JSON object per image "
                         '(e.g. {"file_name": "0.png", "text": "a caption"}).')
    return rows


def load_image_text_dataset(
    dataset_name: Optional[str] = None,
    dataset_config_name: Optional[str] = None,
    train_data_dir: Optional[str] = None,
    split: Optional[str] = "train",
    streaming: bool = False,
    cache_dir: Optional[str] = None,
):
    """Load one split of an image-text data set, the way diffusers' text-to-image example does.

    * ``dataset_name``: a Hub/``datasets`` name or a local data set script/folder (``load_dataset``), or a folder
      written by ``save_to_disk`` (``load_from_disk``).
    * ``train_data_dir``: an ``imagefolder`` (images + ``metadata.jsonl`` with ``file_name`` and caption columns), or a
      ``save_to_disk`` folder.

    ``split=None`` picks ``validation``, else ``test``, else ``train``, else the only split. A folder holding one data
    set without splits is read whole for ``split`` ``None`` or ``"train"``; another split name is a ``ValueError``
    (it would otherwise be ignored). Returns a ``datasets.Dataset`` (or ``IterableDataset`` with ``streaming=True``)
    of plain values of every column: the format a ``save_to_disk`` folder keeps (``with_format("torch")``, some
    columns only) is reset.
    """
    import datasets

    if dataset_name is None and train_data_dir is None:
        raise ValueError("Need either a dataset name (--dataset_name) or a training folder (--train_data_dir).")
    source = dataset_name if dataset_name is not None else train_data_dir
    if dataset_name is None and not os.path.isdir(train_data_dir):
        raise FileNotFoundError(f"--train_data_dir {train_data_dir!r} is not a directory.")
    if is_saved_dataset_dir(source):
        loaded = datasets.load_from_disk(source)
    elif dataset_name is not None:
        loaded = datasets.load_dataset(
            dataset_name, dataset_config_name, cache_dir=cache_dir, data_dir=train_data_dir, streaming=streaming
        )
    else:
        if not image_files(train_data_dir):
            raise ValueError(f"The training data set is empty: --train_data_dir {train_data_dir!r} holds no image files "
                             "(expected an imagefolder: images + metadata.jsonl, or a save_to_disk folder).")
        check_imagefolder_metadata(train_data_dir)
        loaded = datasets.load_dataset("imagefolder", data_dir=train_data_dir, cache_dir=cache_dir, streaming=streaming)
    if isinstance(loaded, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        if split is None:
            preferred = [s for s in ("validation", "test", "train") if s in loaded] or sorted(loaded.keys())
            split = preferred[0] if preferred else "train"
        if split not in loaded:
            raise ValueError(f"Split {split!r} not found in {source!r}; available splits: {sorted(loaded.keys())}.")
        loaded = loaded[split]
    elif split not in (None, "train"):  # one data set without splits: it is not the split asked for
        recorded = f" (recorded as split {str(loaded.split)!r})" if getattr(loaded, "split", None) else ""
        raise ValueError(f"Split {split!r} not found in {source!r}: it holds a single data set without splits"
                         f"{recorded}; leave out the split flag (or pass 'train') to use all of it.")
    if isinstance(loaded, datasets.Dataset):  # save_to_disk keeps a format (torch, numpy, some columns): the loaders
        loaded = loaded.with_format(None)  # read plain values of every column, as the held-out check must
    if streaming and isinstance(loaded, datasets.Dataset):
        loaded = loaded.to_iterable_dataset()
    return loaded


def dataset_column_names(dataset) -> list[str]:
    """Column names of a ``Dataset`` or ``IterableDataset`` (peeks at the first example if the features are unknown)."""
    names = getattr(dataset, "column_names", None)
    if names is None:
        try:
            names = list(next(iter(dataset)).keys())
        except StopIteration:
            names = []
    return list(names)


def check_columns(dataset, image_column: str, caption_column: Optional[str]) -> None:
    """Raise a ``ValueError`` naming the missing column and listing the available ones, or naming
    ``--caption_column`` when its column holds no text (numbers, or the image column given by mistake).
    ``caption_column=None``: images only (e.g. the FID statistics of a data set)."""
    names = dataset_column_names(dataset)
    for flag, column in (("--image_column", image_column), ("--caption_column", caption_column)):
        if column is not None and column not in names:
            raise ValueError(f"{flag} {column!r} not found; available columns: {names}.")
    features = getattr(dataset, "features", None)
    if features is not None and caption_column is not None and caption_column in features:
        if not _is_text_feature(features[caption_column]):
            raise ValueError(f"--caption_column {caption_column!r} holds {features[caption_column]}, not text: it must "
                             "be strings or lists of strings. Pick the caption column with --caption_column "
                             f"(columns: {names}).")


def _is_text_feature(feature: Any) -> bool:
    """A ``datasets`` feature of strings, or of lists of strings."""
    dtype = getattr(feature, "dtype", None)
    if getattr(feature, "_type", None) == "Value":
        return dtype in ("string", "large_string")
    inner = feature[0] if isinstance(feature, list) and len(feature) == 1 else getattr(feature, "feature", None)
    return inner is not None and _is_text_feature(inner)


def drop_held_out_rows(dataset) -> tuple[Any, Optional[int]]:
    """The data set without the rows no model may train on, and how many were dropped (``None`` for a stream, whose
    length is unknown): rows whose ``held_out`` column is true, and the pairs of the shipped held-out list found by
    their identifying columns even where that column was renamed, removed or false (:mod:`.held_out`). The values
    are tested as plain values, whatever the data set's format. A ``held_out`` column that is not boolean is a
    ``ValueError`` (its rows cannot be told apart safely). The result keeps the data set's format."""
    if hasattr(dataset, "__len__"):
        mask = held_out_mask(dataset)
        if not any(mask):
            return dataset, 0
        kept = [i for i, held in enumerate(mask) if not held]  # keep_in_memory: no cache file in the user's folder
        return dataset.select(kept, keep_in_memory=True), sum(mask)
    check_held_out_feature(getattr(dataset, "features", None))
    check = stream_row_check(dataset_column_names(dataset))
    return (dataset.filter(check[1], input_columns=check[0]), None) if check else (dataset, 0)


def lazy_image_column(dataset, image_column: str):
    """Switch an ``Image`` column to ``decode=False`` so that images are decoded (and corrupt ones skipped) by us."""
    import datasets

    features = getattr(dataset, "features", None)
    if features is not None and isinstance(features.get(image_column), datasets.Image):
        return dataset.cast_column(image_column, datasets.Image(decode=False))
    return dataset


# ---------------------------------------------------------------------------------------------------- preprocessing
def decode_image(value: Any) -> Image.Image:
    """Decode an image column value (PIL image, ``{"bytes", "path"}`` dict, file path, or HWC uint8 array) to RGB,
    with transparency composited on white, as the emoji data set does (:func:`galip_core.images.rgb_on_white`; a
    16-bit or float image is a ``ValueError``, so the example is skipped with that reason, not read as white)."""
    if isinstance(value, Image.Image):
        image = value
    elif isinstance(value, dict) and (value.get("bytes") is not None or value.get("path")):
        data = value.get("bytes")
        image = Image.open(io.BytesIO(data)) if data is not None else Image.open(value["path"])
    elif isinstance(value, (str, os.PathLike)):
        image = Image.open(value)
    elif isinstance(value, np.ndarray):
        image = Image.fromarray(value)
    else:
        raise TypeError(f"Cannot decode an image from a value of type {type(value).__name__}.")
    image.load()  # force decoding now, so that truncated files fail here
    return rgb_on_white(image, "the image")


#: what a caption column value may be: one caption, or several (non-strings in a list are ignored)
CAPTION_TYPES = (str, list, tuple, np.ndarray)


def caption_list(value: Any) -> list[str]:
    """The non-empty captions of a caption column value (a string, or a list of strings); ``ValueError`` if none."""
    captions = [value] if isinstance(value, str) else (
        [c for c in value if isinstance(c, str)] if isinstance(value, CAPTION_TYPES) else [])
    captions = [c for c in captions if c.strip()]
    if not captions:
        raise ValueError(f"Caption must be a non-empty string or a list of strings, got {value!r}.")
    return captions


def pick_caption(value: Any, rng: random.Random) -> str:
    """A caption from a string or a list of strings (one at random, as the official code does)."""
    captions = caption_list(value)
    return captions[rng.randrange(len(captions))] if len(captions) > 1 else captions[0]


#: ``--image_interpolation_mode`` -> PIL resampling filter of the resize
INTERPOLATIONS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST,
                  "lanczos": Image.LANCZOS, "box": Image.BOX, "hamming": Image.HAMMING}  # fmt: skip


def official_augment(
    image: Image.Image, resolution: int, rng: random.Random, random_flip: bool = True, center_crop: bool = False,
    interpolation: str = "bilinear",
) -> torch.Tensor:
    """GALIP's real-image augmentation, with PIL: resize the shorter side to ``int(resolution * 76 / 64)`` (bilinear,
    aspect kept), crop ``resolution`` x ``resolution`` at a random position, flip horizontally with probability 1/2.

    With ``center_crop=True`` (diffusers' ``--center_crop``): resize the shorter side to ``resolution`` instead (a
    no-op for square images of that size) and crop the centre, so objects keep their scale and are never cut.
    ``interpolation`` (``--image_interpolation_mode``) names the resize filter, one of :data:`INTERPOLATIONS`.

    Returns a float tensor (3, resolution, resolution) in [-1, 1]."""
    width, height = image.size
    scale_size = resolution if center_crop else int(resolution * AUGMENT_SCALE)
    if width <= height:
        new_size = (scale_size, int(scale_size * height / width))
    else:
        new_size = (int(scale_size * width / height), scale_size)
    if new_size != (width, height):
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {sorted(INTERPOLATIONS)}, got {interpolation!r}.")
        image = image.resize(new_size, INTERPOLATIONS[interpolation])
    if center_crop:
        left, top = (new_size[0] - resolution) // 2, (new_size[1] - resolution) // 2
    else:
        left = rng.randint(0, new_size[0] - resolution)
        top = rng.randint(0, new_size[1] - resolution)
    image = image.crop((left, top, left + resolution, top + resolution))
    if random_flip and rng.random() < 0.5:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array.transpose(2, 0, 1).copy())


def sample_rng(seed: int, epoch: int, index: int, *extra: int) -> random.Random:
    """The per-sample generator: deterministic in ``(seed, epoch, index, *extra)`` (``str`` seeds hash with SHA-512,
    independently of ``PYTHONHASHSEED``)."""
    return random.Random("-".join(str(v) for v in (seed, epoch, index, *extra)))


def noise_seed(seed: int, epoch: int, batch_index: int, process_index: int) -> int:
    """Seed of the generator noise for one micro-batch on one process (stateless, so resuming is exact)."""
    return sample_rng(seed, epoch, batch_index, process_index, 0x6E6F).getrandbits(63)


class _SkipCorrupt:
    """Shared logic: turn one raw example into a training sample, or raise."""

    def __init__(
        self,
        dataset,
        image_column: str = "image",
        caption_column: str = "text",
        resolution: int = 256,
        seed: int = 0,
        random_flip: bool = True,
        center_crop: bool = False,
        interpolation: str = "bilinear",
    ):
        self.dataset = lazy_image_column(dataset, image_column)
        self.interpolation = interpolation
        self.image_column = image_column
        self.caption_column = caption_column
        self.resolution = resolution
        self.seed = seed
        self.random_flip = random_flip
        self.center_crop = center_crop
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def process(self, example: dict, rng: random.Random) -> tuple[torch.Tensor, str]:
        caption = pick_caption(example[self.caption_column], rng)
        image = decode_image(example[self.image_column])
        return official_augment(image, self.resolution, rng, self.random_flip, self.center_crop,
                                self.interpolation), caption


class GALIPTrainDataset(torch.utils.data.Dataset, _SkipCorrupt):
    """Map-style training data: lazily decoded, augmented images and one caption per sample.

    An example whose image cannot be decoded (or whose caption is invalid) is skipped: the next readable example is
    returned instead (so batches keep their size, which keeps processes in step), and ``num_skipped`` in the sample
    counts the skipped ones. Call :meth:`set_epoch` at the start of every epoch.
    """

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        num_skipped = 0
        for offset in range(len(self)):
            position = (index + offset) % len(self)
            # a replacement gets its own augmentation stream, so it is not a copy of the example at `position`
            rng = sample_rng(self.seed, self.epoch, index, *((offset,) if offset else ()))
            try:
                pixel_values, caption = self.process(self.dataset[position], rng)
            except Exception as err:  # a corrupt file can raise almost anything from PIL
                num_skipped += 1
                logger.warning(f"Skipping unreadable training example {position}: {type(err).__name__}: {err}")
                continue
            return {"pixel_values": pixel_values, "caption": caption, "num_skipped": num_skipped}
        raise ValueError(f"None of the {len(self)} training examples could be read: every image is unreadable or "
                         "every caption invalid (each example's reason is logged above).")


class GALIPIterableTrainDataset(torch.utils.data.IterableDataset, _SkipCorrupt):
    """Streaming counterpart of :class:`GALIPTrainDataset` over a ``datasets.IterableDataset``."""

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker = torch.utils.data.get_worker_info()
        worker_id = worker.id if worker is not None else 0
        num_skipped = 0
        for position, example in enumerate(self.dataset):
            try:
                pixel_values, caption = self.process(example, sample_rng(self.seed, self.epoch, position, worker_id))
            except Exception as err:
                num_skipped += 1
                logger.warning(f"Skipping unreadable streamed example {position}: {type(err).__name__}: {err}")
                continue
            yield {"pixel_values": pixel_values, "caption": caption, "num_skipped": num_skipped}
            num_skipped = 0


class GALIPCollator:
    """Stack images, tokenize captions (padded to ``model_max_length``, truncated) and collect the skip counts.

    The batch holds tensors only (``pixel_values``, ``input_ids``, ``num_skipped``), so accelerate can dispatch it."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        input_ids = self.tokenizer(
            [e["caption"] for e in examples],
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        return {
            "pixel_values": torch.stack([e["pixel_values"] for e in examples]).contiguous(),
            "input_ids": input_ids,
            "num_skipped": torch.tensor([int(e["num_skipped"]) for e in examples]),  # per example (concatenable)
        }


def default_resolution(output_size: int) -> int:
    """The real-image crop size of the official setup for a generator output size: the power of two at or above it
    (224 -> 256)."""
    return 2 ** math.ceil(math.log2(output_size))


def check_resolution(resolution: int, output_size: int) -> None:
    """Real images must be cropped to a size between the generator's output size and the next power of two, as in the
    official setup (224 px generated vs 256 px real), so that real and fake reach the CLIP encoder at similar scales."""
    upper = default_resolution(output_size)
    if not output_size <= resolution <= upper:
        raise ValueError(
            f"--resolution {resolution} is incompatible with the generator config (output_size={output_size}): it must "
            f"be in [{output_size}, {upper}] (the official setup crops real images to {upper} for a {output_size} px "
            f"generator). Change --resolution or the generator's output_size."
        )
