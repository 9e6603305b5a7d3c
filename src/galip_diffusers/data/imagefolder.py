"""Writing an ``imagefolder`` data set (PNGs + ``metadata.jsonl``, read by ``load_dataset("imagefolder")`` and by the
training scripts' ``--train_data_dir``) without ever losing a file: the export behind
:func:`galip_diffusers.data.shapes.to_imagefolder`.

* The folder is built beside its target and swapped in when complete (:func:`galip_core.swap.build_and_swap`), so a
  failure part-way (a bad row, a full disk), Ctrl-C or SIGTERM leaves the target as it was.
* Replacing a folder deletes only an earlier export, ``metadata.jsonl`` and the files it lists; a folder holding any
  other file (a user's own photo) is refused before anything is written, and nothing is deleted.
* Every row carries a boolean ``held_out``: the training scripts drop the rows where it is true.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Tuple, Union

from PIL import Image

from galip_core.images import rgb_on_white
from galip_core.swap import Snapshot, build_and_swap

#: one row of the export: an RGB image, its caption and whether no model may train on it
Row = Tuple[Image.Image, str, bool]
METADATA = "metadata.jsonl"


def write_imagefolder(rows: Iterable[Row], directory: Union[str, os.PathLike], overwrite: bool) -> Path:
    """Write ``rows`` as ``00000.png``, ... plus ``metadata.jsonl`` (``file_name``, ``text``, ``held_out``) into a
    folder built beside ``directory``, then swap it in. A non-empty ``directory`` is a ValueError unless
    ``overwrite``; with it, only an earlier export is replaced (:func:`check_replaceable`)."""
    build_and_swap(directory, lambda tmp: _write_rows(rows, Path(tmp)), label="directory", work="export",
                   check=lambda found: check_replaceable(Path(directory), found, overwrite))
    return Path(directory)


def _write_rows(rows: Iterable[Row], folder: Path) -> None:
    with open(folder / METADATA, "w", encoding="utf-8") as meta_file:
        for index, (image, text, held_out) in enumerate(rows):
            name = f"{index:05d}.png"
            image.save(folder / name)
            meta_file.write(json.dumps({"file_name": name, "text": text, "held_out": held_out}) + "\n")


def check_replaceable(directory: Path, found: Optional[Snapshot], overwrite: bool) -> None:
    """Refuse to replace a non-empty ``directory`` (its entries ``found``) without ``overwrite``, or one holding a
    file that an earlier export did not list in its ``metadata.jsonl``: the swap deletes every entry it found."""
    if not found:
        return
    if not overwrite:
        raise ValueError(f"directory {str(directory)!r} is not empty; pass overwrite=True to replace it")
    listed = listed_files(directory / METADATA)
    others = sorted(path for path, (is_folder, *_) in found.items() if not is_folder and path not in listed)
    if others:
        shown = ", ".join(others[:5]) + (f", ... ({len(others)} files)" if len(others) > 5 else "")
        raise ValueError(f"directory {str(directory)!r} holds files that no earlier export listed in its {METADATA} "
                         f"({shown}); overwrite=True replaces only an export, so nothing was deleted: move them, or "
                         "choose another folder")


def listed_files(metadata: Path) -> set:
    """``metadata.jsonl`` and the ``file_name`` values it lists; nothing if it cannot be read (not an export)."""
    try:
        lines = metadata.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return set()
    listed = {metadata.name}
    for line in lines:
        try:
            name = json.loads(line).get("file_name")
        except (ValueError, AttributeError):  # not JSON, or not an object: lists nothing
            continue
        if isinstance(name, str):
            listed.add(os.path.normpath(name))
    return listed


def dataset_rows(dataset: Any, held_out_of: Callable[[str], bool],
                 name: str = "dataset_or_num_images") -> Iterator[Row]:
    """The rows of a ``datasets.Dataset`` with an ``image`` (``datasets.Image``) and a ``text`` column, checked now
    (``ValueError`` naming ``name``); each row is read and checked as it is written, named by its index. A
    ``held_out`` column must be boolean; where it is missing or None, ``held_out_of(text)`` decides."""
    from datasets import Image as ImageFeature, Value

    features = getattr(dataset, "features", None) or {}
    if "text" not in (dataset.column_names or ()) or not isinstance(features.get("image"), ImageFeature):
        found = {column: type(feature).__name__ for column, feature in features.items()}
        raise ValueError(f"{name} must have an 'image' column of datasets.Image and a 'text' column, got columns "
                         f"{found or dataset.column_names}")
    if features.get("held_out", Value("bool")) != Value("bool"):
        raise ValueError(f"{name}'s 'held_out' column must be Value('bool'), got {features['held_out']}")
    return (_checked_row(f"{name} row {index}", row, held_out_of) for index, row in enumerate(dataset))


def _checked_row(where: str, row: Mapping[str, Any], held_out_of: Callable[[str], bool]) -> Row:
    image, text, held_out = row["image"], row["text"], row.get("held_out")
    if not isinstance(image, Image.Image) or not isinstance(text, str):
        raise ValueError(f"{where} needs an image and a caption string, got image={type(image).__name__} and "
                         f"text={type(text).__name__}")
    try:
        held_out = held_out_of(text) if held_out is None else bool(held_out)
    except ValueError as error:
        raise ValueError(f"{where}: {error}; a boolean 'held_out' column marks other captions") from None
    return rgb_on_white(image, f"{where}'s image"), text, held_out
