"""Output paths checked before the work that would write there, so that a long run is never lost at its end: one
implementation for the commands, the training scripts and the evaluation scripts. Creates nothing."""

from __future__ import annotations

import os


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
