"""Output paths checked before the work that would write there, so that a long run is never lost at its end and no
input is overwritten: one implementation for the commands, the converter, the training scripts and the evaluation
scripts. The checks create nothing; :mod:`galip_core.staging` builds new folders atomically."""

from __future__ import annotations

import os
from typing import Mapping, Optional


def check_output_file(flag: str, path: str, *, overwrite: bool | None = None, suffix: str = "") -> None:
    """Check, before any work, that the file ``path`` (given as ``flag``) can be written, so that a long run is not
    lost at the end. ``ValueError`` if ``path`` does not end in ``suffix`` (e.g. ``".npz"``); ``IsADirectoryError``
    if it is a folder; ``FileExistsError`` if it exists and ``overwrite`` is false (``None``: the command documents
    that an existing file is replaced; ``False``: it refuses one unless ``--overwrite`` is given);
    ``NotADirectoryError`` or ``PermissionError`` if its folder cannot be created or written. Creates nothing."""
    if not path:
        raise ValueError(f"{flag} is empty; give a file name.")
    if suffix and not path.lower().endswith(suffix):
        raise ValueError(f"{flag} must end in {suffix}, got {path!r}.")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{flag} {path!r} is a folder; give a file name.")
    if overwrite is False and os.path.lexists(path):
        raise FileExistsError(f"{flag} {path!r} already exists; choose another name, or pass --overwrite to "
                              "replace it.")
    _check_writable_folder(flag, os.path.dirname(os.path.abspath(path)))


def check_output_folder(flag: str, path: str) -> None:
    """Check, before any work, that ``path`` (given as ``flag``) is a writable folder or can be created as one:
    ``NotADirectoryError`` if it (or a folder above it) is a file, ``PermissionError`` if it is not writable.
    Creates nothing."""
    if not path:
        raise ValueError(f"{flag} is empty; give a folder.")
    if os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(f"{flag} {path!r} is a file; give a folder (it is created if missing).")
    _check_writable_folder(flag, os.path.abspath(path))


def is_same_or_inside(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or lies under it (compares the strings: give both as real paths)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_apart(flag: str, path: str, others: Mapping[str, Optional[str]], kind: str = "input") -> None:
    """Check, before any work, that the output ``path`` (given as ``flag``; a file or a folder) is none of
    ``others`` (``{flag: path}``; ``None``: not given), holds none of them and lies inside none that is a folder, so
    that writing or replacing it never overwrites or deletes one of the command's ``kind`` paths (``"input"``, or
    ``"output"`` for another output such as a results folder). Symbolic links are followed. ``ValueError`` naming
    both flags. Creates nothing."""
    out = os.path.abspath(path)
    real = os.path.realpath(out)
    for other_flag, other in others.items():
        if other is None or not str(other).strip():
            continue
        other = os.fspath(other)
        source = os.path.realpath(other)
        same = source == real or (os.path.exists(other) and os.path.exists(out) and os.path.samefile(other, out))
        if same or is_same_or_inside(source, real):
            raise ValueError(f"{flag}: {out!r} {'is' if same else 'contains'} the {other_flag} {kind} {other!r}; "
                             "writing there would replace it. Choose another path.")
        if os.path.isdir(source) and is_same_or_inside(real, source):
            raise ValueError(f"{flag}: {out!r} is inside the {other_flag} folder {other!r}; choose a path outside it.")


def check_folder_to_replace(flag: str, path: str, *, overwrite: bool, inputs: Mapping[str, Optional[str]],
                            outputs: Optional[Mapping[str, Optional[str]]] = None, example: str = "") -> str:
    """Check, before any work, a folder that a command builds beside it and then swaps in whole (``galip convert``,
    ``training/package_*_model.py``): the absolute path, or an error naming ``flag`` when the folder

    * is empty text, or is the current, home or root folder or a folder above the current one (never replaced, not
      even with ``--overwrite``);
    * is, holds or lies inside one of the ``inputs``, or one of the other ``outputs`` (:func:`check_apart`);
    * cannot be a folder (a file on its path) or cannot be written (:func:`check_output_folder`);
    * exists and is not empty, unless ``overwrite`` (the command's ``--overwrite``).

    ``example``: a folder name to suggest, e.g. ``"./galip-converted"``. Creates nothing."""
    hint = f", e.g. {example}" if example else ""
    if not path.strip():
        raise ValueError(f"{flag} must not be empty: pass the folder to create{hint}.")
    out = os.path.abspath(path)
    real = os.path.realpath(out)
    protected = (os.path.realpath(os.path.expanduser("~")), os.path.realpath(os.sep))
    if real in protected or is_same_or_inside(os.path.realpath(os.getcwd()), real):
        raise ValueError(f"{flag}: refusing to use {out!r}, the current, home or root folder or a parent of the "
                         f"current folder: it is never replaced, not even with --overwrite; choose a new folder{hint}.")
    check_apart(flag, out, inputs)
    check_apart(flag, out, outputs or {}, kind="output")
    check_output_folder(flag, out)
    names = sorted(os.listdir(out)) if os.path.isdir(out) else []
    if names and not overwrite:
        shown = ", ".join(names[:6]) + (f", ... ({len(names)} entries)" if len(names) > 6 else "")
        raise FileExistsError(f"{flag}: {out!r} exists and is not empty; pass --overwrite to replace it (it holds "
                              f"{shown}), or choose another folder.")
    return out


def check_new_folder(flag: str, path: str) -> None:
    """:func:`check_output_folder`, and ``path`` must not exist yet (``FileExistsError``): the check of a command
    that only ever creates a new folder (the data set builders, with :func:`galip_core.staging.write_new_folder`)."""
    check_output_folder(flag, path)
    if os.path.lexists(path):
        raise FileExistsError(f"{flag} {path} already exists; choose a new folder (nothing was overwritten)")


def _check_writable_folder(flag: str, folder: str) -> None:
    """``folder`` exists and is writable, or the nearest existing folder above it is (so that it can be created)."""
    existing = folder
    while not os.path.exists(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise NotADirectoryError(f"{flag}: {existing!r} is a file, not a folder" + (
            "." if existing == folder else f", so the folder {folder!r} cannot be created."))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"{flag}: the folder {existing!r} is not writable.")
