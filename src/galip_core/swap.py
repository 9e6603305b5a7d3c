"""Replacing a folder by a finished one without losing anything: the last step of ``galip convert``, of the packaging
scripts and of ``GALIPPipeline.save_pretrained``.

The new folder is built under a hidden temporary name beside the target (``.<name>.tmp-<pid>-*``,
:func:`galip_core.staging.temporary_sibling`) and then swapped in (:func:`commit`):

* the target's contents are recorded when the work starts (:func:`snapshot`) and checked again at the swap; if
  anything was added, removed or changed in between, nothing is replaced and the error names the entries;
* on Linux the swap is one ``renameat2(RENAME_EXCHANGE)`` call, so at every instant the target holds either the
  old folder or the new one; elsewhere it is two renames, undone if the second fails;
* only the recorded entries of the old folder are deleted afterwards; anything else found in it is kept, in a
  visible ``<name>.kept-*`` folder;
* the leftovers of a killed run are dealt with at the next run (:func:`clean_stale`): hidden ``.tmp-*`` folders
  whose process is gone are deleted, and an old folder left in a hidden ``.old-*`` folder (by a run without the
  exchange, killed between its two renames) is put back when the target is missing.

:func:`build_and_swap` does all of it around one ``write(folder)`` call (``shapes.to_imagefolder``).

The callers give their own error type and words (``galip convert``'s ``ConversionError`` about ``--output_dir``).
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import stat
import sys
import tempfile
import time
from typing import Callable, Optional

from galip_core.staging import remove_stale_temporaries, temporary_sibling, umask

logger = logging.getLogger(__name__)

#: relative path -> (is a folder, size, modification time in ns); a symbolic link counts as a file
Snapshot = dict[str, tuple[bool, int, int]]


class FolderChangedError(RuntimeError):
    """The target folder changed while its replacement was being built: nothing was replaced or deleted."""


def snapshot(folder: str) -> Optional[Snapshot]:
    """Everything under ``folder`` (``None`` if it does not exist), to compare before and after the work. Links are
    recorded as links (never followed)."""
    if not os.path.isdir(folder):
        return None
    found: Snapshot = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(root, name)
            st = os.lstat(path)
            found[os.path.relpath(path, folder)] = (stat.S_ISDIR(st.st_mode), st.st_size, st.st_mtime_ns)
    return found


def _differences(before: Optional[Snapshot], after: Optional[Snapshot]) -> list[str]:
    before, after = before or {}, after or {}
    changes = [f"new {p}" for p in sorted(set(after) - set(before))]
    changes += [f"removed {p}" for p in sorted(set(before) - set(after))]
    changes += [f"changed {p}" for p in sorted(set(before) & set(after)) if before[p] != after[p] and not before[p][0]]
    return changes


def clean_stale(out: str, kind: str = "run") -> list[str]:
    """Deal with what killed runs into ``out`` left beside it; returns (and logs) one message per folder: an old
    folder left in a hidden ``.old-*`` folder is put back when ``out`` is missing (kept otherwise), and unfinished
    ``.tmp-*`` folders of dead processes are deleted (:func:`galip_core.staging.remove_stale_temporaries`). ``kind``
    names the work in the messages ("conversion")."""
    parent, name = os.path.dirname(out), os.path.basename(out)
    pattern = re.compile(rf"^\.{re.escape(name)}\.old-")
    messages = []
    for entry in sorted(os.listdir(parent)) if os.path.isdir(parent) else []:
        path = os.path.join(parent, entry)
        if not pattern.match(entry) or not os.path.isdir(path):
            continue
        if os.path.lexists(out):
            messages.append(f"Kept {path!r}: an older model left by an interrupted {kind} (not deleted).")
        else:
            os.rename(path, out)
            messages.append(f"Restored {out!r} from {path!r}, where an interrupted {kind} had left it.")
    for message in messages:
        logger.warning(message)
    return messages + remove_stale_temporaries(out, kind=kind)


def open_permissions(folder: str) -> None:
    """Give ``folder`` and everything written under it the modes of the umask: some writers make 0700 folders or
    0600 files. Links are left alone (their targets are not ours)."""
    mask = umask()
    for root, _, files in os.walk(folder):
        os.chmod(root, 0o777 & ~mask)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, 0o666 & ~mask)


def _exchange(a: str, b: str) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); ``False`` where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "renameat2"):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    errno = ctypes.get_errno()
    if errno in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: this kernel or file system cannot exchange
        return False
    raise OSError(errno, os.strerror(errno), a)


def _changed_error(out: str, changes: list[str], error_type: type[Exception], label: str, work: str) -> Exception:
    shown = ", ".join(changes[:8]) + (f", ... ({len(changes)} changes)" if len(changes) > 8 else "")
    return error_type(f"{label} {out!r} changed during the {work} ({shown}); nothing was replaced or deleted. "
                      f"Rerun the {work} once nothing else writes there.")


def _delete_recorded(old: str, checked: Snapshot, out: str) -> None:
    """Delete the entries of ``checked`` from the replaced folder ``old``, bottom-up; keep anything else, visibly."""
    for rel in sorted(checked, key=lambda p: p.count(os.sep), reverse=True):
        path = os.path.join(old, rel)
        try:
            if checked[rel][0]:
                os.rmdir(path)  # only if empty: a folder holding unrecorded files stays
                continue
            st = os.lstat(path)
            if (st.st_size, st.st_mtime_ns) == checked[rel][1:]:
                os.unlink(path)
        except OSError:
            pass
    try:
        os.rmdir(old)
    except OSError:
        kept = f"{out}.kept-{time.strftime('%Y%m%d-%H%M%S')}"
        os.rename(old, kept)
        logger.warning("Files that appeared in %r while it was being replaced were kept in %r.", out, kept)


def _old_name(out: str) -> str:
    """A free hidden ``.<name>.old-<pid>-*`` path beside ``out`` for the replaced folder (:func:`clean_stale` knows
    it: a run killed while it exists leaves the old folder there, never deleted)."""
    old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old-{os.getpid()}-", dir=os.path.dirname(out))
    os.rmdir(old)
    return old


def commit(tmp: str, out: str, checked: Optional[Snapshot], *, error_type: type[Exception] = FolderChangedError,
           label: str = "folder", work: str = "run") -> None:  # fmt: skip
    """Swap the finished folder ``tmp`` in as ``out``, whose contents must still be ``checked`` (``None``: absent);
    else ``error_type("<label> '<out>' changed during the <work> (...)")`` and nothing is replaced."""
    changes = _differences(checked, snapshot(out))
    if changes:
        raise _changed_error(out, changes, error_type, label, work)
    if checked is None:
        os.rename(tmp, out)  # fails (nothing lost) if something created ``out`` since the check
        return
    if _exchange(tmp, out):
        old = tmp  # now holds the replaced folder
        try:
            changes = _differences(checked, snapshot(old))
        except BaseException:  # Ctrl-C, SIGTERM or a failed read here: the old folder goes back, whole
            _exchange(tmp, out)
            raise
        if changes:  # written to in the instant between the check and the exchange: swap back, delete nothing
            _exchange(tmp, out)
            raise _changed_error(out, changes, error_type, label, work)
        old = _old_name(out)
        os.rename(tmp, old)  # no longer the caller's temporary folder, which an interrupt would delete whole
    else:
        old = _old_name(out)
        os.rename(out, old)
        try:
            os.rename(tmp, out)
        except BaseException:
            os.rename(old, out)
            raise
    _delete_recorded(old, checked, out)


def build_and_swap(target: str | os.PathLike, write: Callable[[str], None], *,
                   check: Optional[Callable[[Optional[Snapshot]], None]] = None,
                   error_type: type[Exception] = FolderChangedError, label: str = "folder", work: str = "run") -> str:
    """``write(tmp)`` into a hidden sibling of ``target``, then swap it in as ``target`` (:func:`commit`); returns the
    real path. An error, Ctrl-C or SIGTERM leaves ``target`` as it was. If ``target`` exists, its recorded entries
    are deleted after the swap: ``check(recorded)`` runs first (``None``: absent), before anything is written, and
    raises to refuse a folder holding what must not be deleted. The new folder keeps the old one's permissions."""
    target = os.path.realpath(os.fspath(target))  # a link to a folder: the folder is replaced, the link kept
    clean_stale(target, kind=work)
    checked = snapshot(target)
    if check is not None:
        check(checked)
    with temporary_sibling(target, kind=work) as tmp:
        write(tmp)
        if checked is not None:
            os.chmod(tmp, stat.S_IMODE(os.stat(target).st_mode))
        commit(tmp, target, checked, error_type=error_type, label=label, work=work)
    return target
