"""Cheap checks of ``galip eval``'s reference data (``--dataset``), made before any model is loaded.

Loading the GALIP pipeline, CLIP and Inception takes tens of seconds on a CPU, so a reference data set that cannot
serve is refused first, in one line naming the flag: a path that does not exist or is a file, a folder that cannot
be read or holds no images (:func:`check_dataset_source`), and, when FID reads the data set's images, a data set whose
first reference images cannot be decoded (:func:`probe_reference_images`). Only a few images are decoded here; the
rest are decoded lazily, batch by batch, as the evaluation reaches them (:func:`.evaluate.add_reference_images`).
"""

from __future__ import annotations

import itertools
import os
from typing import Optional

from galip_diffusers.evaluation.evaluate import evaluation_rows, image_name, too_few_readable_error

#: how many reference images :func:`probe_reference_images` decodes at most before the models load
PROBE_IMAGES = 16

#: what ``--dataset`` may be, for the refusals
DATASET_KINDS = "an imagefolder (images + metadata.jsonl), a save_to_disk folder, or a Hub data set name"


def check_dataset_source(dataset: str) -> None:
    """Refuse (``ValueError`` naming ``--dataset``) a ``--dataset`` that cannot be a data set, without opening it:
    an existing file or a broken link, a local path that does not exist (one that is not a valid Hub name, or whose
    first folder exists here; it would otherwise be looked up on the Hub, slowly and with an error that names no
    flag), and a folder that cannot be read or is neither a ``save_to_disk`` folder nor holds any image file."""
    if os.path.isdir(dataset):
        _check_dataset_folder(dataset)
    elif os.path.lexists(dataset):
        what = "a file" if os.path.exists(dataset) else "a broken link"
        raise ValueError(f"--dataset {dataset!r} is {what}, not a data set: give {DATASET_KINDS}.")
    elif _is_local_path(dataset):
        raise ValueError(f"--dataset {dataset!r} does not exist: give {DATASET_KINDS}.")


def _is_local_path(name: str) -> bool:
    """Whether a ``--dataset`` that does not exist was meant as a local path rather than a Hub name."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return True
    return "/" in name and os.path.isdir(name.split("/")[0])


def _check_dataset_folder(folder: str) -> None:
    """A ``--dataset`` folder must be readable and hold a data set: ``save_to_disk`` output or image files (the
    loader's own emptiness error would name ``--train_data_dir``, the training flag)."""
    from galip_diffusers.training.data import is_saved_dataset_dir, image_files

    if not os.access(folder, os.R_OK | os.X_OK):
        raise ValueError(f"--dataset {folder!r} cannot be read (permission denied).")
    if not is_saved_dataset_dir(folder) and not image_files(folder):
        raise ValueError(f"--dataset {folder!r} holds no image files: give {DATASET_KINDS}.")


def probe_reference_images(dataset, image_column: str, num_images: Optional[int], seed: int, *,
                           probe: int = PROBE_IMAGES, hint: str = "") -> None:
    """Decode the first reference images that FID will read (the same seeded rows, in the same order, as
    :func:`.evaluate.evaluation_rows` gives them), until 2 are readable or ``probe`` were tried, and refuse fewer
    than 2 readable (``ValueError`` naming the unreadable files, ``--dataset`` and ``--image_column``): a wrong image
    column, or a folder of corrupt files, is then found before the models load, not after them. When the probe
    covers every row used, this is exactly the later refusal of :func:`.evaluate.add_reference_images`; the other
    images are still decoded lazily, and an unreadable one among them is skipped, with a warning naming it."""
    from galip_diffusers.training.data import decode_image

    tried, unreadable = 0, []
    rows = evaluation_rows(dataset, image_column, None, num_images, seed)
    for value, _ in itertools.islice(rows, probe):
        tried += 1
        try:
            decode_image(value)
        except Exception:  # noqa: BLE001  (any decoding failure makes the image unreadable, as later)
            unreadable.append(image_name(value) or "")
        if tried - len(unreadable) >= 2:
            return
    every_row = next(rows, None) is None
    raise too_few_readable_error(tried - len(unreadable), str(tried) if every_row else f"the first {tried}",
                                 unreadable, image_column, hint)
