"""The data set builders' command lines and the emoji tarball/cache checks: one line naming the flag (or the
environment variable) for every mistake, found before the build, and one line for SIGTERM during the build (on the
small fixture tarballs: no real artwork needed)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from galip_diffusers.data import emoji, emoji_cli
from galip_diffusers.data import shapes as S
from galip_diffusers.data import shapes_cli
from helpers.emoji_fixtures import make_fixture


class NeverCalled:
    def __call__(self, *args, **kwargs):
        raise AssertionError("the build started before the bad argument was refused")


def _sigterm_to_self(*args, **kwargs):
    """A build step that gets SIGTERM, as from ``kill`` or a scheduler's time limit (refused if nothing would catch
    it: the default action would end the test process)."""
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        raise AssertionError("SIGTERM has its default action during the build: the process would end silently")
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(10)  # the handler raises before (or while) this waits
    raise AssertionError("SIGTERM was not turned into an exception")


def _one_line(capsys, after_usage: bool = False) -> str:
    """The one error line (after argparse's usage lines for a usage error), never a traceback."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert not any("Traceback" in line for line in lines) and (after_usage or len(lines) == 1), lines
    return lines[-1]


@pytest.mark.parametrize("command", ["emoji", "shapes"])
def test_sigterm_during_the_build_ends_in_one_line(tmp_path, monkeypatch, capsys, command):
    if command == "emoji":
        monkeypatch.setattr(emoji, "build_dataset", _sigterm_to_self)
        main, argv = emoji_cli.main, [str(tmp_path / "out"), "--cache_dir", str(tmp_path / "cache")]
    else:
        monkeypatch.setattr(S, "generate_shapes", _sigterm_to_self)
        main, argv = shapes_cli.main, [str(tmp_path / "out"), "--format", "imagefolder"]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 130
    assert _one_line(capsys).endswith(f"interrupted; nothing was written to {tmp_path / 'out'}")
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # put back
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("cache_dir, env, message", [
    ("", None, "--cache_dir is empty; give a folder."),
    ("afile", None, "--cache_dir '{tmp}/afile' is a file; give a folder"),
    ("afile/sub", None, "--cache_dir: '{tmp}/afile' is a file, not a folder"),
    (None, "afile", "$GALIP_EMOJI_CACHE '{tmp}/afile' is a file; give a folder"),
])
def test_a_bad_cache_folder_is_named_before_the_build(tmp_path, monkeypatch, capsys, cache_dir, env, message):
    (tmp_path / "afile").write_text("not a folder")
    monkeypatch.setattr(emoji, "build_dataset", NeverCalled())
    if env is not None:
        monkeypatch.setenv("GALIP_EMOJI_CACHE", str(tmp_path / env))
    flags = [] if cache_dir is None else ["--cache_dir", str(tmp_path / cache_dir) if cache_dir else ""]
    with pytest.raises(SystemExit) as info:
        emoji_cli.main([str(tmp_path / "out"), *flags])
    assert info.value.code == 2 and message.format(tmp=tmp_path) in _one_line(capsys, after_usage=True)


def test_the_api_refuses_an_empty_cache_folder_rather_than_the_current_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for call in (lambda: emoji.build_dataset(cache_dir=""), lambda: emoji.fetch_tarballs("")):
        with pytest.raises(ValueError, match="cache_dir is empty"):
            call()
    assert os.listdir(tmp_path) == []


def test_without_npm_the_message_names_the_flags_and_the_python_argument(tmp_path, monkeypatch):
    _, packages, _ = make_fixture(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    with pytest.raises(RuntimeError) as info:
        emoji.fetch_tarballs(tmp_path / "cache", packages)
    message = str(info.value)
    assert "`npm` is not on PATH" in message and "fixture-twemoji-1.0.0.tgz" in message
    assert "--twemoji_tarball, --noto_tarball, --labels_tarball on the command line" in message
    assert "build_dataset(tarballs={...}) in Python" in message
    assert f"copy the tarballs into {tmp_path / 'cache'}" in message


@pytest.mark.parametrize("swap, message", [
    ("swapped", "--twemoji_tarball: {noto} is the tarball of fixture-noto@1.0.0 (the 'noto' one), not of "
                "fixture-twemoji@1.0.0; were two tarballs given in each other's place?"),
    ("folder", "--twemoji_tarball: fixture-twemoji@1.0.0: {tmp} is a folder, not a tarball; give the file "
               "fixture-twemoji-1.0.0.tgz"),
])
def test_a_swapped_tarball_or_a_folder_is_named_as_such(tmp_path, monkeypatch, capsys, swap, message):
    paths, packages, _ = make_fixture(tmp_path)
    for key, package in packages.items():  # the command line checks against PACKAGES: pinned to the fixture here
        monkeypatch.setitem(emoji.PACKAGES, key, package)
    monkeypatch.setattr(emoji, "build_dataset", NeverCalled())
    given = {**paths, "twemoji": paths["noto"] if swap == "swapped" else tmp_path}
    if swap == "swapped":
        given["noto"] = paths["twemoji"]
    argv = [str(tmp_path / "out")] + [arg for key, path in given.items() for arg in (f"--{key}_tarball", str(path))]
    with pytest.raises(SystemExit) as info:
        emoji_cli.main(argv)
    assert info.value.code == 1
    assert message.format(noto=paths["noto"], tmp=tmp_path) in _one_line(capsys)
    with pytest.raises(emoji.EmojiDataError, match="is the tarball of fixture-noto@1.0.0"):  # the API says the same
        emoji.read_emoji_images({**paths, "twemoji": paths["noto"]}, packages)
