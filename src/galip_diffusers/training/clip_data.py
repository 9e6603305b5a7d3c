"""Train and evaluate a small CLIP on any image-caption data set (e.g. the emoji data set), not only the shapes.

``training/train_clip.py --train_data_dir DIR`` keeps the images of a ``save_to_disk`` folder (or an imagefolder) as
uint8 in memory, draws one caption per image for each batch (a list column gives several captions per image), and
contrasts every image with the batch's distinct captions: identical strings share one embedding and count as
positives for each other (:func:`~galip_diffusers.clip_training.multi_positive_contrastive_loss`).

Every problem with such a folder is a :class:`CaptionDataError`: one line that names the flag to fix, raised while
the folder is loaded, before the training script writes anything.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from transformers import CLIPModel, CLIPTokenizer

from .clip import encode_images, encode_texts
from .checkpoints import SetupError
from .data import (
    CAPTION_TYPES,
    caption_list,
    check_columns,
    dataset_column_names,
    decode_image,
    image_files,
    lazy_image_column,
    load_image_text_dataset,
)
from .held_out import HELD_OUT_COLUMN, held_out_mask

logger = logging.getLogger(__name__)

class CaptionDataError(SetupError):
    """An image-caption folder that cannot be used as given, in one line naming the flag to fix. The training script
    ends with this message instead of a traceback; it is raised before anything is written to ``--output_dir``."""


@dataclass
class CaptionPool:
    """The rows of an image-caption folder, decoded: what training and the retrieval evaluation read."""

    images: torch.Tensor  #: ``(N, 3, S, S)`` uint8
    captions: list[list[str]]  #: each row's captions (one or more)
    extras: list[dict] = field(default_factory=list)  #: each row's other columns (e.g. ``held_out``)
    num_held_out: int = 0  #: rows dropped because their ``held_out`` column is true
    num_unreadable: int = 0  #: rows skipped because their image could not be decoded
    num_uncaptioned: int = 0  #: rows skipped because they hold no non-empty caption


def square_image(image: Image.Image, size: int) -> Image.Image:
    """Crop the centre square, then resize it to ``size`` x ``size`` (bicubic).

    Cropping rather than stretching keeps the geometry train_galip.py gives the generator and discriminator (its
    ``--center_crop``: shorter side to the resolution, centre crop), so the CLIP that judges GALIP sees shapes with
    the same aspect; only the ends of the longer side are lost."""
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    if (width, height) == (size, size):
        return image
    return image.resize((size, size), Image.BICUBIC, box=(left, top, left + side, top + side))


def _captions_of(value: Any, where: str, caption_column: str) -> list[str]:
    """The non-empty captions of one row (:func:`caption_list`); ``[]`` when it holds none (the row is skipped, as
    train_galip.py skips it). A value that is not a caption at all (a number, an image) names the wrong column."""
    if not isinstance(value, CAPTION_TYPES):
        raise CaptionDataError(f"--caption_column {caption_column!r} holds {type(value).__name__} values, not "
                               f"captions ({where}: {value!r}); give a column of strings or lists of strings.")
    try:
        return caption_list(value)
    except ValueError:
        return []


def _is_saved_dataset(folder: str) -> bool:
    """Whether ``folder`` was written by ``Dataset.save_to_disk`` (one data set, no splits)."""
    return all(os.path.isfile(os.path.join(folder, name)) for name in ("state.json", "dataset_info.json"))


def _pick_split(data_dir: str, flag: str, split: Optional[str], split_flag: str) -> Optional[str]:
    """The split of ``data_dir`` to read, never a silent choice: ``split`` (which must exist), the only one, or an
    error listing the splits. ``None`` for a folder holding one data set without splits (``split`` must be ``None``).
    Also refuses a folder that is neither a ``save_to_disk`` folder nor holds images, naming ``flag``."""
    if not os.path.isdir(data_dir):
        raise CaptionDataError(f"{flag} {data_dir!r} is not a folder.")
    if os.path.isfile(os.path.join(data_dir, "dataset_dict.json")):  # DatasetDict.save_to_disk
        with open(os.path.join(data_dir, "dataset_dict.json"), encoding="utf-8") as f:
            splits = [str(s) for s in json.load(f).get("splits", [])]
    elif _is_saved_dataset(data_dir):  # Dataset.save_to_disk: one data set
        if split is not None:
            raise CaptionDataError(f"{flag} {data_dir!r} holds a single data set without splits; leave out "
                                   f"{split_flag} ({split!r}).")
        return None
    elif not image_files(data_dir):
        raise CaptionDataError(f"{flag} {data_dir!r} holds no image files; give an imagefolder (images + "
                               "metadata.jsonl) or a save_to_disk folder.")
    else:  # an imagefolder: datasets reads train/, test/, validation/ ... subfolders as splits, else one "train"
        from datasets.data_files import get_data_patterns

        splits = [str(s) for s in get_data_patterns(os.path.abspath(data_dir))]
    if split is not None:
        if split not in splits:
            raise CaptionDataError(f"{split_flag} {split!r} not found in {flag} {data_dir!r}; its splits: {splits}.")
        return split
    if len(splits) == 1:
        return splits[0]
    raise CaptionDataError(f"{flag} {data_dir!r} holds the splits {splits}; choose one with {split_flag} (e.g. "
                           f"{split_flag} {splits[0]}).")


def _check_image_column(dataset, image_column: str, source: str) -> None:
    """Refuse an image column of numbers or booleans up front (the usual sign of a wrong ``--image_column``)."""
    feature = dataset.features.get(image_column)
    dtype = getattr(feature, "dtype", None)
    if getattr(feature, "_type", None) == "Value" and dtype not in ("string", "large_string", "binary"):
        sample = dataset[0][image_column] if len(dataset) else None
        raise CaptionDataError(f"{source}: --image_column {image_column!r} holds {dtype} values, not images (row 0: "
                               f"{sample!r}); columns: {dataset_column_names(dataset)}.")


def _decode_row_image(value: Any, image_size: int) -> np.ndarray:
    """One row's image as ``(S, S, 3)`` uint8 (:func:`square_image`)."""
    return np.asarray(square_image(decode_image(value), image_size), dtype=np.uint8)


def load_caption_folder(
    data_dir: str, image_column: str = "image", caption_column: str = "text", image_size: int = 64,
    drop_held_out: bool = True, flag: str = "--train_data_dir", split: Optional[str] = None,
    split_flag: str = "--train_split",
) -> CaptionPool:
    """Every usable row of an image-caption folder, with its images cropped to the centre square and resized to
    ``image_size`` (:func:`square_image`).

    * ``drop_held_out`` (the default, for training): rows whose ``held_out`` column is true, and pairs of the shipped
      held-out list found by their identifying columns, are dropped (:func:`~.held_out.held_out_mask`, the check
      train_galip.py makes), so a folder that holds held-out pairs can never be trained on by mistake;
      :attr:`CaptionPool.num_held_out` counts them. A ``held_out`` column that is not boolean is refused.
    * A row whose image cannot be decoded is skipped with a warning and counted (:attr:`CaptionPool.num_unreadable`),
      as train_galip.py skips it; if no image can be read, the ``--image_column`` is refused. A row without a
      non-empty caption is skipped the same way (:attr:`CaptionPool.num_uncaptioned`).
    * A folder with several splits (``DatasetDict``) needs ``split``; ``flag`` and ``split_flag`` are the script's
      flags, named in the errors.

    Every problem is a one-line :class:`CaptionDataError`. The held-out rows are dropped while reading, not with
    ``Dataset.filter``, which would write a cache file into the input folder.
    """
    if image_column == caption_column:
        raise CaptionDataError(f"--image_column and --caption_column are both {image_column!r}; give the image column "
                               f"and the caption column of {flag}.")
    chosen = _pick_split(data_dir, flag, split, split_flag)
    try:
        dataset = load_image_text_dataset(train_data_dir=data_dir, split=chosen or "train")
        check_columns(dataset, image_column, caption_column)
    except (ValueError, OSError) as error:  # columns, metadata.jsonl, arrow files: the message names the problem
        raise CaptionDataError(f"{flag} {data_dir!r}: {error}") from None
    _check_image_column(dataset, image_column, f"{flag} {data_dir!r}")
    dataset = lazy_image_column(dataset, image_column)  # decoded here, so that a corrupt file is skipped by name
    try:  # the held_out column (true/false only, as train_galip.py reads it) and the shipped held-out list
        held_out = held_out_mask(dataset, f"{flag} {data_dir!r}") if drop_held_out else [False] * len(dataset)
    except ValueError as error:
        raise CaptionDataError(f"{flag} {data_dir!r}: {error}") from None
    images, captions, extras, first_error, num_unreadable, num_uncaptioned = [], [], [], None, 0, 0
    for index, is_held_out in enumerate(held_out):
        if is_held_out:
            continue
        row = dataset[index]
        value = row.pop(image_column)
        path = value.get("path") if isinstance(value, dict) else value if isinstance(value, str) else None
        where = f"row {index}" + (f" ({path})" if path else "")
        caption = row.pop(caption_column)
        row_captions = _captions_of(caption, f"{flag} {data_dir!r} {where}", caption_column)
        if not row_captions:
            logger.warning(f"Skipping {flag} {where}: --caption_column {caption_column!r} holds no non-empty "
                           f"caption ({caption!r})")
            num_uncaptioned += 1
            continue
        try:
            image = _decode_row_image(value, image_size)
        except Exception as error:  # a corrupt file can raise almost anything from PIL
            logger.warning(f"Skipping the unreadable image of {flag} {where}: {type(error).__name__}: {error}")
            first_error = first_error or f"{where}: {type(error).__name__}: {error}"
            num_unreadable += 1
            continue
        images.append(image)
        captions.append(row_captions)
        extras.append(row)
    num_held_out = sum(held_out)
    if not images and num_unreadable:
        raise CaptionDataError(f"{flag} {data_dir!r}: none of the {num_unreadable} images could be read (e.g. "
                               f"{first_error}); check --image_column {image_column!r} (columns: "
                               f"{dataset_column_names(dataset)}).")
    if not images:
        raise CaptionDataError(f"{flag} {data_dir!r} has no rows to use ({num_held_out} held-out rows dropped, "
                               f"{num_uncaptioned} without a caption in --caption_column {caption_column!r}).")
    return CaptionPool(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(), captions, extras,
                       num_held_out, num_unreadable, num_uncaptioned)


def load_caption_pool(
    data_dir: str, image_column: str = "image", caption_column: str = "text", image_size: int = 64,
    drop_held_out: bool = True, flag: str = "--train_data_dir", split: Optional[str] = None,
    split_flag: str = "--train_split",
) -> tuple[torch.Tensor, list[list[str]], list[dict]]:
    """Images ``(N, 3, S, S)`` uint8, their caption lists and their other columns, from a data set folder: the
    tuple form of :func:`load_caption_folder` (same arguments, same checks)."""
    pool = load_caption_folder(data_dir, image_column, caption_column, image_size, drop_held_out, flag, split,
                               split_flag)
    return pool.images, pool.captions, pool.extras


def check_caption_lengths(tokenizer: CLIPTokenizer, captions: Sequence[str], source: str) -> None:
    """Refuse captions with more tokens than ``tokenizer.model_max_length`` (train_clip.py's ``--context_length``).

    They would be cut without a word; two captions that differ only after the cut would then become the same token
    ids while the contrastive loss still treats them as different classes. The error names the flag, the longest
    caption's length (the value to pass) and that caption, and how many distinct captions would collide."""
    limit = tokenizer.model_max_length
    distinct = sorted(set(captions))
    ids = tokenizer(distinct, verbose=False).input_ids  # verbose=False: no "longer than" warning while counting
    too_long = [i for i, caption_ids in enumerate(ids) if len(caption_ids) > limit]
    if not too_long:
        return
    longest = max(too_long, key=lambda i: len(ids[i]))
    shared = Counter(tuple(caption_ids[:limit]) for caption_ids in ids)
    collided = sum(count for count in shared.values() if count > 1)
    collisions = f", {collided} distinct captions becoming the same token ids" if collided else ""
    raise CaptionDataError(
        f"{len(too_long)} of the {len(distinct)} captions of {source} are longer than --context_length {limit} "
        f"tokens and would be cut{collisions}; the longest has {len(ids[longest])} tokens ({distinct[longest]!r}): "
        f"pass --context_length {len(ids[longest])} or more."
    )


def sample_batch_captions(caption_lists: Sequence[Sequence[str]], rng: random.Random
                          ) -> tuple[list[str], torch.Tensor]:
    """One caption per image, then the distinct captions and each image's column among them."""
    picked = [captions[rng.randrange(len(captions))] for captions in caption_lists]
    unique = sorted(set(picked))
    column = {caption: i for i, caption in enumerate(unique)}
    return unique, torch.tensor([column[c] for c in picked], dtype=torch.long)


@torch.no_grad()
def retrieval_accuracy(
    model: CLIPModel, tokenizer: CLIPTokenizer, images: torch.Tensor, targets: Sequence[str],
    candidates: Sequence[str], batch_size: int = 512, top_k: Sequence[int] = (1, 5),
) -> dict[str, float]:
    """Image-to-text retrieval: the share of images whose target caption is among the ``k`` most similar
    ``candidates`` (cosine of the projected embeddings), for each ``k`` in ``top_k``."""
    index = {caption: i for i, caption in enumerate(candidates)}
    missing = [t for t in targets if t not in index]
    if missing:
        raise ValueError(f"{len(missing)} target captions are not among the candidates, e.g. {missing[0]!r}")
    text = torch.cat([encode_texts(model, tokenizer, candidates[i:i + batch_size])
                      for i in range(0, len(candidates), batch_size)])
    image = encode_images(model, images.permute(0, 2, 3, 1).numpy(), batch_size)
    ranks = (image @ text.T).argsort(dim=1, descending=True)[:, : max(top_k)]
    hits = ranks == torch.tensor([index[t] for t in targets])[:, None]
    return {f"top{k}": float(hits[:, :k].any(dim=1).float().mean()) for k in top_k} | {"n": len(targets)}


def retrieval_targets(pool: CaptionPool) -> list[str]:
    """Each row's most specific caption (the last of its list): what the retrieval evaluation looks for."""
    return [captions[-1] for captions in pool.captions]


def evaluate_caption_pool(model: CLIPModel, tokenizer: CLIPTokenizer, pool: CaptionPool,
                          split_column: str = HELD_OUT_COLUMN) -> dict[str, Any]:
    """Retrieval of each image's most specific caption among every such caption of the pool, reported per value of
    ``split_column`` when the rows have that column (e.g. seen / held-out)."""
    targets = retrieval_targets(pool)
    candidates = sorted(set(targets))
    was_training = model.training
    model.eval()
    groups = {"all": list(range(len(targets)))}
    if pool.extras and split_column in pool.extras[0]:
        groups = {f"{split_column}={value}": [i for i, e in enumerate(pool.extras) if e[split_column] == value]
                  for value in sorted({e[split_column] for e in pool.extras}, key=str)}
    report = {name: retrieval_accuracy(model, tokenizer, pool.images[rows], [targets[i] for i in rows], candidates)
              for name, rows in groups.items() if rows}
    model.train(was_training)
    return {"candidates": len(candidates), **report}


def evaluate_on_folder(model: CLIPModel, tokenizer: CLIPTokenizer, data_dir: str, image_size: int = 64,
                       caption_column: str = "text", split_column: str = HELD_OUT_COLUMN,
                       image_column: str = "image", flag: str = "--eval_data_dir", split: Optional[str] = None,
                       split_flag: str = "--eval_split") -> dict[str, Any]:
    """:func:`evaluate_caption_pool` on every row of a folder, held-out rows included (:func:`load_caption_folder`;
    ``flag`` and ``split_flag`` are the flags named in its errors)."""
    pool = load_caption_folder(data_dir, image_column, caption_column, image_size, drop_held_out=False, flag=flag,
                               split=split, split_flag=split_flag)
    return evaluate_caption_pool(model, tokenizer, pool, split_column)
