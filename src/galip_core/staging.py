"""Folders built beside their target and put in place only when complete, so that no user ever loads a half-written
data set or model: one implementation for the data set builders, ``galip convert`` and the packaging scripts.

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
import logging
import os
import re
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Callable, Iterator

logger = logging.getLogger(__name__)


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
