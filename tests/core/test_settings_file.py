"""galip_core.settings: reading galip_settings.json. Every bad file is a ValueError that starts with its path, never a
silently dropped setting or a bare parser error (the settings' own values: tests/pipelines/test_settings.py)."""

import re

import pytest

from galip_core.settings import SETTINGS_NAME, GALIPSettings


def _write(folder, text):
    path = folder / SETTINGS_NAME
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("text, key", [
    ('{"sampling": {"truncation": 0.5}, "sampling": {}}', "sampling"),
    ('{"refinement": {"num_steps": 5, "num_steps": 7}}', "num_steps"),
    ('{"_comment": "a", "composition": {"layer": 2}, "_comment": "b"}', "_comment"),
], ids=["section", "setting", "note"])  # fmt: skip
def test_a_key_written_twice_is_refused_naming_the_file_and_the_key(tmp_path, text, key):
    path = _write(tmp_path, text)
    for load in (lambda: GALIPSettings.from_file(path), lambda: GALIPSettings.from_folder(tmp_path)):
        with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: the key '{key}' is written twice"):
            load()


@pytest.mark.parametrize("text, reason", [
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"refinement": {"num_candidates": ' + "9" * 5000 + "}}", "digits"),
], ids=["deep nesting", "5000-digit integer"])  # fmt: skip
def test_parser_limits_are_bad_files_that_start_with_the_path(tmp_path, text, reason):
    path = _write(tmp_path, text)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))} is not valid JSON \(.*{reason}"):
        GALIPSettings.from_file(path)


def test_a_folder_named_like_the_file_is_refused(tmp_path):
    (tmp_path / SETTINGS_NAME).mkdir()
    folder_as_file = tmp_path / SETTINGS_NAME
    for load in (lambda: GALIPSettings.from_folder(tmp_path), lambda: GALIPSettings.from_file(folder_as_file)):
        with pytest.raises(ValueError, match=rf"^{re.escape(str(tmp_path / SETTINGS_NAME))} is a folder"):
            load()


def test_settings_remember_where_they_came_from(tmp_path):
    path = _write(tmp_path, '{"composition": {"layer": 2}}')
    assert GALIPSettings.from_folder(tmp_path).source == str(path)
    assert GALIPSettings().source == SETTINGS_NAME
    assert GALIPSettings.from_folder(tmp_path / "missing").is_empty()  # no file: the built-in defaults


def test_a_fifo_named_like_the_settings_file_is_refused_not_read_forever(tmp_path):
    import os

    os.mkfifo(tmp_path / SETTINGS_NAME)
    with pytest.raises(ValueError, match="is not a regular file"):
        GALIPSettings.from_folder(tmp_path)
