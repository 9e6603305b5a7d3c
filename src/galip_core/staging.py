"""Folders and files built beside their target and put in place only when complete, so that no user ever loads a
half-written data set, model or file: one implementation for the data set builders, ``galip convert``, the packaging
scripts (folders, :func:`temporary_sibling`) and every file written whole or not at all (:func:`write_file`: PNGs of
``galip generate``, FID statistics, a run's records).

A folder is built under a hidden sibling name, ``.<name>.tmp-<pid>-<random>`` (:func:`temporary_sibling`). If the
work fails, is interrupted with Ctrl-C, or the process gets SIGTERM (a ``kill``, a job scheduler's timeout), the
folder is removed, and so are the parent folders that were created for it. SIGKILL cannot be caught: the next run
into the same target removes what a dead process left (:func:`remove_stale_temporaries`; the process id in the name
tells a dead run from one still working).

Why our own code: :mod:`tempfile` gives the unique name but neither the clean-up of a killed run's folder nor
SIGTERM handling, and Python's default SIGTERM action ends the process without running any ``finally`` block.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
import signal
import stat
import tempfile
import threading
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

logger = logging.getLogger(__name__)

#: errno values of ``os.link`` on a file system without hard links (FAT, some network shares)
NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EMLINK}


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised as an exception while :func:`terminate_as_interrupt` is active, so that clean-up code runs.
    A subclass of ``KeyboardInterrupt``: whatever handles Ctrl-C (one line, nothing half-written) handles it too."""


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` instead of ending the process at once. Only in the main
    thread, and only while SIGTERM has its default action: a handler that the application installed is left alone."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def raise_terminated(signum, frame):
        raise Terminated(f"terminated by signal {signum} (SIGTERM)")

    signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def umask() -> int:
    """The process's umask (``os.umask`` can only be read by setting it, so it is set back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def missing_ancestors(folder: str) -> list[str]:
    """``folder`` and its parents that do not exist yet, deepest first."""
    missing = []
    while not os.path.exists(folder):
        missing.append(folder)
        folder = os.path.dirname(folder)
    return missing


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(target: str, kind: str = "run") -> list[str]:
    """Delete the hidden ``.<name>.tmp-<pid>-*`` folders beside ``target`` whose process is gone (or whose name has
    no process id); leave those of a live process, and this process's own. ``kind`` names the work in the messages
    ("conversion"). Returns (and logs as warnings) one message per folder."""
    parent, name = os.path.dirname(os.path.abspath(target)), os.path.basename(os.path.abspath(target))
    pattern = re.compile(rf"^\.{re.escape(name)}\.tmp-(?:(\d+)-)?")
    messages = []
    for entry in sorted(os.listdir(parent)) if os.path.isdir(parent) else []:
        match = pattern.match(entry)
        path = os.path.join(parent, entry)
        if not match or not os.path.isdir(path) or os.path.islink(path):
            continue
        pid = None if match.group(1) is None else int(match.group(1))
        if pid == os.getpid():
            continue
        if pid is not None and _process_alive(pid):
            messages.append(f"Left {path!r} alone: process {pid}, which is writing into it, is still running.")
        else:
            shutil.rmtree(path, ignore_errors=True)
            messages.append(f"Removed {path!r}, the unfinished folder of an interrupted {kind}.")
    for message in messages:
        logger.warning(message)
    return messages


@contextlib.contextmanager
def temporary_sibling(target: str | os.PathLike, kind: str = "run") -> Iterator[str]:
    """A new hidden folder beside ``target`` (``.<name>.tmp-<pid>-*``) to build into, with the mode a plain ``mkdir``
    gives (``0o777`` less the umask, not ``mkdtemp``'s 0700: the finished folder is for the group too); the caller
    moves it into place before the block ends. If the block raises, or SIGTERM arrives, the folder is deleted, with
    the parent folders created for it (deepest first, only while empty). Leftovers of killed runs are removed first."""
    target = os.path.abspath(os.fspath(target))
    parent = os.path.dirname(target)
    created = missing_ancestors(parent)
    os.makedirs(parent, exist_ok=True)
    remove_stale_temporaries(target, kind)
    with terminate_as_interrupt():
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.tmp-{os.getpid()}-", dir=parent)
        try:
            os.chmod(tmp, 0o777 & ~umask())
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            for folder in created:
                try:
                    os.rmdir(folder)
                except OSError:
                    break
            raise


def write_new_folder(target: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp_dir)`` into a :func:`temporary_sibling` of ``target``, then rename it into place, so that a
    user never loads a half-written folder. ``target`` must not exist (``FileExistsError``: nothing is ever
    overwritten); if ``write`` fails or is interrupted (Ctrl-C or SIGTERM), ``target`` stays absent."""
    target = Path(target)
    if os.path.lexists(target):
        raise FileExistsError(f"{target} already exists; choose a new folder (nothing was overwritten)")
    with temporary_sibling(target, kind="build") as tmp:
        write(Path(tmp))
        os.rename(tmp, target)
    return target


def write_file(path: str | os.PathLike, write: Callable[[BinaryIO], None], overwrite: bool = True,
               taken_name: Callable[[int], str] | None = None) -> str:  # fmt: skip
    """Write the file ``path`` whole or not at all; returns the path written.

    ``write(f)`` fills a hidden temporary file beside it (``.NAME.tmp-PID-*``, NAME cut to 40 characters; given the
    mode a plain ``open`` gives, not ``mkstemp``'s 0600, or the mode of the file it replaces), which then takes its
    name in one step: with ``overwrite``, renamed over it (``os.replace`` replaces a symbolic link itself, never the
    file it points to); without, hard-linked under it,
    which fails if the name is taken, even by a dangling link, so two processes never clash: then ``taken_name(k)``
    for k = 1, 2, ... gives the next name to try (``None``: ``FileExistsError``). So a full disk, an error, Ctrl-C or
    SIGTERM leaves an old file whole and nothing under the name, and the temporary file is removed (a SIGKILL can
    leave only it). An ``OSError`` names ``path``."""
    folder, name = os.path.split(os.path.abspath(os.fspath(path)))
    temporary = None
    with terminate_as_interrupt():
        try:
            # the name's start only (40 characters: at most 160 bytes), so that any name up to NAME_MAX works
            handle, temporary = tempfile.mkstemp(prefix=f".{name[:40]}.tmp-{os.getpid()}-", dir=folder)
            with os.fdopen(handle, "wb") as f:
                write(f)
            os.chmod(temporary, _mode_for(path) if overwrite else 0o666 & ~umask())
            return _put_in_place(temporary, os.fspath(path), overwrite, taken_name)
        except FileExistsError:
            raise
        except OSError as err:
            error = OSError(f"cannot write {os.fspath(path)}: {err.strerror or err}")
            error.errno = err.errno  # for callers that test it (ENOSPC), without "[Errno N]" in the message
            raise error from err
        finally:
            if temporary is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(temporary)


def _mode_for(path: str | os.PathLike) -> int:
    """The permission bits a file written to ``path`` gets: those of the regular file it replaces (a user's
    ``chmod 600`` survives an overwrite, as with ``open(path, "wb")``), else what a plain ``open`` gives."""
    try:
        old = os.lstat(path)
    except OSError:
        old = None
    if old is not None and stat.S_ISREG(old.st_mode):
        return stat.S_IMODE(old.st_mode)
    return 0o666 & ~umask()


def _put_in_place(temporary: str, path: str, overwrite: bool, taken_name: Callable[[int], str] | None) -> str:
    """Give the complete file ``temporary`` its name, as :func:`write_file` says; returns that name."""
    if overwrite:
        os.replace(temporary, path)
        return path
    candidate, k = path, 0
    while True:
        try:
            _link_new(temporary, candidate)
            return candidate
        except FileExistsError:
            if taken_name is None:
                raise FileExistsError(errno.EEXIST, f"{path} already exists (nothing was overwritten)") from None
            k += 1
            candidate = taken_name(k)


def _link_new(temporary: str, path: str) -> None:
    """``temporary`` also under the new name ``path`` (``FileExistsError`` if it is taken): a hard link, or, where
    the file system has none, the name claimed empty and then replaced (removed again if that fails)."""
    try:
        os.link(temporary, path, follow_symlinks=False)
        return
    except FileExistsError:
        raise
    except OSError as err:
        if err.errno not in NO_HARD_LINKS:
            raise
    with open(path, "xb"):
        pass
    try:
        os.replace(temporary, path)
    except BaseException:
        os.remove(path)
        raise
