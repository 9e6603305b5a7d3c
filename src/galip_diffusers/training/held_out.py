"""Which rows of a training data set no model may train on: one implementation for both training scripts
(train_galip.py through :func:`galip_diffusers.training.data.drop_held_out_rows`, train_clip.py through
:func:`galip_diffusers.training.clip_data.load_caption_folder`).

A row is held out when its ``held_out`` column is true, or when its identifying columns (:data:`PAIR_COLUMNS`, the
ones :mod:`galip_diffusers.data.emoji` writes) name a pair of the shipped held-out list ``emoji_held_out.json``. The
second test is the defence in depth: a user who renamed or removed the ``held_out`` column, or set it to false,
still never trains on a listed pair. Only these small columns are read, never the images.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from galip_diffusers.data.emoji import load_held_out

logger = logging.getLogger(__name__)

#: a boolean column that marks rows no model may train on (the emoji data set's held-out pairs)
HELD_OUT_COLUMN = "held_out"
#: column pairs that identify one emoji image, in order of preference, each matched against the held-out list's
#: field of the same name and the style (CLDR labels are unique per image, skin tone included)
PAIR_COLUMNS: tuple[tuple[str, str], ...] = (("unified", "style"), ("label", "style"))


def check_held_out_feature(features: Optional[Mapping[str, Any]]) -> None:
    """Refuse a ``held_out`` column declared as anything but booleans (strings such as ``"false"`` or 0/1 numbers):
    its rows cannot be told apart safely, so both training scripts stop with this ``ValueError``."""
    feature = features.get(HELD_OUT_COLUMN) if features is not None else None
    if feature is not None and getattr(feature, "dtype", None) != "bool":
        raise ValueError(f"The data set's {HELD_OUT_COLUMN!r} column holds {feature}, not booleans; "
                         "rows marked held out are never trained on, so it must be true/false.")


def held_out_value(value: Any) -> bool:
    """Whether one ``held_out`` value marks its row: ``True`` as Python, NumPy or a 0-d tensor gives it (a data set
    with a format), tested by value, not identity; ``False`` and a missing value (``None``) are trainable. Any other
    value is the ``ValueError`` of :func:`check_held_out_feature`."""
    if value is None:
        return False
    if isinstance(value, (bool, np.bool_)) or (str(getattr(value, "dtype", "")) in ("bool", "torch.bool")
                                               and getattr(value, "ndim", None) == 0):
        return bool(value)
    raise ValueError(f"The data set's {HELD_OUT_COLUMN!r} column holds {value!r} ({type(value).__name__}), not "
                     "booleans; rows marked held out are never trained on, so it must be true/false.")


def pair_columns(names: Sequence[str]) -> Optional[tuple[str, str]]:
    """The first pair of :data:`PAIR_COLUMNS` among the column ``names``; ``None`` if none is there."""
    return next((pair for pair in PAIR_COLUMNS if set(pair) <= set(names)), None)


def held_out_columns(names: Sequence[str]) -> list[str]:
    """The columns of ``names`` that decide whether a row is held out: ``held_out`` and :func:`pair_columns`."""
    return [c for c in (HELD_OUT_COLUMN,) if c in names] + list(pair_columns(names) or ())


@functools.lru_cache(maxsize=1)
def _listed_pairs() -> dict[str, frozenset[tuple[str, str]]]:
    """``{field: {(value, style)}}`` of the shipped held-out list, for each identifying field of
    :data:`PAIR_COLUMNS`, case-folded (read once per process)."""
    held_out = load_held_out()
    return {field: frozenset((_key(entry.get(field)), _key(style)) for (_, style), entry in held_out.items()
                             if entry.get(field)) for field, _ in PAIR_COLUMNS}


def _key(value: Any) -> Optional[str]:
    return value.strip().casefold() if isinstance(value, str) else None


def listed_flags(columns: Mapping[str, Sequence[Any]]) -> Optional[list[bool]]:
    """Per row, whether its identifying columns name a pair of the shipped held-out list; ``None`` when
    ``columns`` has no pair of :data:`PAIR_COLUMNS` (the list cannot be checked)."""
    pair = pair_columns(list(columns))
    if pair is None:
        return None
    listed = _listed_pairs()[pair[0]]
    return [(_key(a), _key(b)) in listed for a, b in zip(columns[pair[0]], columns[pair[1]])]


def held_out_flags(columns: Mapping[str, Sequence[Any]], num_rows: int, source: Optional[str] = None) -> list[bool]:
    """Per row, whether no model may train on it: its ``held_out`` value (:func:`held_out_value`) or its listing
    (:func:`listed_flags`), given the values of :func:`held_out_columns`. With ``source``, a warning names the rows
    that only the list found (the ``held_out`` column is missing or false there: the list wins)."""
    marked = ([held_out_value(v) for v in columns[HELD_OUT_COLUMN]] if HELD_OUT_COLUMN in columns
              else [False] * num_rows)
    listed = listed_flags(columns) or [False] * num_rows
    only_listed = sum(1 for m, is_listed in zip(marked, listed) if is_listed and not m)
    if only_listed and source is not None:
        why = ("its 'held_out' column is false there; the list wins" if HELD_OUT_COLUMN in columns else
               "it has no 'held_out' column (renamed or removed?)")
        logger.warning(f"{only_listed} row(s) of {source} are held-out pairs of the shipped emoji_held_out.json (by "
                       f"their {' and '.join(pair_columns(list(columns)))} columns) and are dropped, though "
                       f"{why}: no model may train on them.")
    return [m or is_listed for m, is_listed in zip(marked, listed)]


def held_out_mask(dataset, source: str = "the data set") -> list[bool]:
    """:func:`held_out_flags` of a map-style ``datasets.Dataset``, from column reads of its plain values (whatever
    format it has: NumPy, torch, pandas or a subset of columns), after :func:`check_held_out_feature`."""
    check_held_out_feature(dataset.features)
    plain = dataset.with_format(None)
    return held_out_flags({c: plain[c] for c in held_out_columns(plain.column_names)}, len(plain), source)


def stream_row_check(names: Sequence[str], source: str = "The streamed data set"
                     ) -> Optional[tuple[list[str], Callable[..., bool]]]:
    """For a stream, checked row by row: the columns to read and a function of their values, true for a row a model
    may train on (:func:`held_out_flags`); ``None`` when no column decides. A stream without a ``held_out`` column
    but with identifying columns gets a warning now, as its rows cannot be counted before training."""
    columns = held_out_columns(names)
    if not columns:
        return None
    if HELD_OUT_COLUMN not in columns:
        logger.warning(f"{source} has no {HELD_OUT_COLUMN!r} column (renamed or removed?): its rows are checked "
                       f"against the shipped emoji_held_out.json by their {' and '.join(columns)} columns, and the "
                       "listed pairs are dropped: no model may train on them.")

    def trainable(*values: Any) -> bool:  # one row's values of `columns`
        return not held_out_flags({column: [value] for column, value in zip(columns, values)}, 1)[0]

    return columns, trainable
