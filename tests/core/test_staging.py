"""galip_core.staging: a folder built beside its target appears complete or not at all, also when the process gets
SIGTERM, and what a killed process left behind is removed by the next run (but not a live process's folder)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from galip_core.staging import remove_stale_temporaries, temporary_sibling, terminate_as_interrupt, write_new_folder


def _hidden(parent: Path) -> list[str]:
    return sorted(name for name in os.listdir(parent) if name.startswith("."))


def _run_until_ready(script: str, tmp_path: Path) -> subprocess.Popen:
    """Start ``script`` in a new Python process and wait until it has created ``tmp_path / 'ready'``."""
    process = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (tmp_path / "ready").exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"the child never got ready: {process.communicate()}")
        time.sleep(0.05)
    return process


def test_sigterm_while_writing_leaves_neither_the_target_nor_the_temporary_folder(tmp_path):
    target = tmp_path / "sub" / "data"
    process = _run_until_ready(f"""
        import time
        from pathlib import Path
        from galip_core.staging import write_new_folder

        def write(folder):
            (folder / "half.txt").write_text("half")
            Path({str(tmp_path / "ready")!r}).touch()
            time.sleep(60)

        try:
            write_new_folder({str(target)!r}, write)
        except KeyboardInterrupt as error:
            print("caught", type(error).__name__)
            raise SystemExit(143)
        """, tmp_path)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    assert "caught Terminated" in out
    assert not target.exists()
    assert not (tmp_path / "sub").exists()  # the parent folder created for it is gone too
    assert _hidden(tmp_path) == []


def test_a_killed_runs_folder_is_removed_by_the_next_run_but_a_live_ones_is_kept(tmp_path):
    target = tmp_path / "data"
    process = _run_until_ready(f"""
        import time
        from pathlib import Path
        from galip_core.staging import temporary_sibling

        with temporary_sibling({str(target)!r}) as tmp:
            Path({str(tmp_path / "ready")!r}).touch()
            time.sleep(60)
        """, tmp_path)
    try:
        [live] = _hidden(tmp_path)
        assert live.startswith(f".data.tmp-{process.pid}-")
        messages = remove_stale_temporaries(str(target))
        assert "still running" in messages[0] and (tmp_path / live).is_dir()
    finally:
        process.kill()  # SIGKILL: no clean-up runs
        process.wait(timeout=60)
    assert (tmp_path / live).is_dir()

    written = write_new_folder(target, lambda folder: (folder / "a.txt").write_text("a"))
    assert (written / "a.txt").read_text() == "a"
    assert _hidden(tmp_path) == []


def test_a_folder_without_a_process_id_is_stale_and_this_processs_own_is_not(tmp_path):
    (tmp_path / ".data.tmp-oldstyle").mkdir()
    mine = tmp_path / f".data.tmp-{os.getpid()}-x"
    mine.mkdir()
    (tmp_path / ".other.tmp-1-x").mkdir()  # another target's folder
    messages = remove_stale_temporaries(str(tmp_path / "data"), kind="build")
    stale = str(tmp_path / ".data.tmp-oldstyle")
    assert messages == [f"Removed {stale!r}, the unfinished folder of an interrupted build."]
    assert mine.is_dir() and (tmp_path / ".other.tmp-1-x").is_dir()


def test_an_error_in_the_block_removes_the_folder_and_the_parents_made_for_it(tmp_path):
    target = tmp_path / "a" / "b" / "model"
    with pytest.raises(RuntimeError, match="boom"):
        with temporary_sibling(target) as tmp:
            Path(tmp, "x").write_text("x")
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_write_new_folder_never_replaces_anything(tmp_path):
    (tmp_path / "data").mkdir()
    with pytest.raises(FileExistsError, match="already exists"):
        write_new_folder(tmp_path / "data", lambda folder: None)
    os.symlink(tmp_path / "missing", tmp_path / "dangling")
    with pytest.raises(FileExistsError, match="already exists"):
        write_new_folder(tmp_path / "dangling", lambda folder: None)


def test_an_applications_own_sigterm_handler_is_left_alone_and_the_default_comes_back():
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    with terminate_as_interrupt():
        ours = signal.getsignal(signal.SIGTERM)
        assert callable(ours)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL

    def mine(signum, frame):
        pass

    signal.signal(signal.SIGTERM, mine)
    try:
        with terminate_as_interrupt():
            assert signal.getsignal(signal.SIGTERM) is mine
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def test_a_training_script_ends_in_one_line_on_sigterm(tmp_path):
    process = _run_until_ready(f"""
        import time
        from argparse import Namespace
        from pathlib import Path
        from galip_diffusers.training.checkpoints import run_training

        def main(args):
            Path({str(tmp_path / "ready")!r}).touch()
            time.sleep(60)

        run_training(main, Namespace(output_dir="RUN"), "train_galip.py")
        """, tmp_path)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 1
    assert err.strip() == ("train_galip.py: interrupted; the checkpoints in RUN are intact: continue with "
                           "--resume_from_checkpoint latest.")


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_a_built_folder_gets_the_mode_of_a_plain_mkdir_not_mkdtemps_0700(tmp_path, mask):
    old = os.umask(mask)
    try:
        written = write_new_folder(tmp_path / "data", lambda folder: (folder / "a.txt").write_text("a"))
        with temporary_sibling(tmp_path / "other") as tmp:
            during = os.stat(tmp).st_mode & 0o777
        os.mkdir(tmp_path / "plain")
    finally:
        os.umask(old)
    assert os.stat(written).st_mode & 0o777 == during == os.stat(tmp_path / "plain").st_mode & 0o777 == 0o777 & ~mask


def test_write_file_puts_a_whole_file_in_place_or_nothing(tmp_path):
    """One implementation for every file written whole or not at all (PNGs, FID statistics, a run's records)."""
    from galip_core.staging import write_file

    target = tmp_path / "stats.npz"
    assert write_file(target, lambda f: f.write(b"old")) == str(target)
    with pytest.raises(FileExistsError, match="stats.npz already exists"):
        write_file(target, lambda f: f.write(b"new"), overwrite=False)

    def interrupted(f):
        f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_file(target, interrupted)
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["stats.npz"]  # no temporary file left
    assert write_file(target, lambda f: f.write(b"new"), overwrite=False, taken_name=lambda k: f"{target}.{k}") \
        == f"{target}.1"
    write_file(target, lambda f: f.write(b"new"))
    assert target.read_bytes() == b"new" and sorted(os.listdir(tmp_path)) == ["stats.npz", "stats.npz.1"]


def test_write_file_takes_any_legal_name_and_keeps_a_replaced_files_mode(tmp_path):
    """A name of 255 bytes once failed (the hidden temporary name added 22 characters), with an error naming that
    temporary file; an overwrite reset a ``chmod 600`` file to 0644."""
    from galip_core.staging import write_file

    longest = tmp_path / ("s" * 251 + ".npz")  # NAME_MAX: 255 bytes
    assert write_file(longest, lambda f: f.write(b"x")) == str(longest) and longest.read_bytes() == b"x"
    os.chmod(longest, 0o600)
    write_file(longest, lambda f: f.write(b"y"))
    assert longest.read_bytes() == b"y" and os.stat(longest).st_mode & 0o777 == 0o600
    with pytest.raises(OSError, match=r"^cannot write .*/s{256}\.npz: File name too long$"):
        write_file(tmp_path / ("s" * 256 + ".npz"), lambda f: f.write(b"z"))
    assert sorted(os.listdir(tmp_path)) == [longest.name]
