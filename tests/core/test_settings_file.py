"""galip_core.settings: reading galip_settings.json. Every bad file is a ValueError that starts with its path, never a
silently dropped setting or a bare parser error (the settings' own values: tests/pipelines/test_settings.py)."""

import json
import re

import pytest

from galip_core.finite import check_number_in_range
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


# ------------------------------------------------------------------ notes, saving, huge numbers (fourth audit)
def test_notes_inside_sections_are_kept_and_written_back(tmp_path):
    content = {"_comment": "top", "sampling": {"truncation": 0.7, "_why": "measured on 1000 images"},
               "composition": {"layer": 1, "_note": "layer 1 best"}, "refinement": {"_todo": "measure"}}
    settings = GALIPSettings.from_file(_write(tmp_path, json.dumps(content)))
    assert settings.defaults("sampling") == {"truncation": 0.7}  # a note is never a setting
    assert settings.to_dict() == content
    out = tmp_path / "out"
    out.mkdir()
    settings.save(out)
    assert json.loads((out / SETTINGS_NAME).read_text()) == content
    assert GALIPSettings.from_folder(out) == settings


@pytest.mark.parametrize("change, field", [
    (lambda s: s.sections["sampling"].update(truncation=-3), r"sampling.truncation has the invalid value -3"),
    (lambda s: s.sections.setdefault("refinement", {}).update(top_k=9, num_candidates=4),
     r"refinement.top_k \(9\) cannot exceed refinement.num_candidates"),
    (lambda s: s.sections["sampling"].update(steps=3), r"unknown sampling setting 'steps'"),
], ids=["out of range", "top_k above num_candidates", "unknown setting"])  # fmt: skip
def test_save_checks_the_settings_first_and_writes_nothing_invalid(tmp_path, change, field):
    settings = GALIPSettings({"sampling": {"truncation": 0.5}})
    change(settings)
    with pytest.raises(ValueError, match=rf"^not saved to {re.escape(str(tmp_path / SETTINGS_NAME))}: {field}"):
        settings.save(tmp_path)
    assert not (tmp_path / SETTINGS_NAME).exists()


def test_the_source_follows_the_saved_file(tmp_path):
    settings = GALIPSettings.from_file(_write(tmp_path, '{"sampling": {"truncation": 0.5}}'))
    (tmp_path / "new").mkdir()
    settings.save(tmp_path / "new")
    assert settings.source == str(tmp_path / "new" / SETTINGS_NAME)
    (tmp_path / ".staging").mkdir()
    settings.save(tmp_path / ".staging", final_folder=tmp_path / "final")  # a folder moved into place afterwards
    assert settings.source == str(tmp_path / "final" / SETTINGS_NAME)


@pytest.mark.parametrize("value, shown", [
    (2**70, "1180591620717411303424"),
    (10**400, r"1000000000\d*\.\.\. \(401 characters\)"),
    (-(2**64), "-18446744073709551616"),
], ids=["2**70", "400 digits", "-2**64"])  # fmt: skip
def test_integers_too_large_for_torch_are_range_errors_naming_the_file_and_field(tmp_path, value, shown):
    path = _write(tmp_path, json.dumps({"sampling": {"truncation": value}}))
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: sampling.truncation has the invalid value "
                                         rf"{shown} \(expected null or a finite number >= 0"):
        GALIPSettings.from_folder(tmp_path)
    GALIPSettings({"sampling": {"truncation": 2**62}, "composition": {"containment_weight": 1e300}})  # still fine


@pytest.mark.parametrize("value", [2**70, 10**400, -(2**63) - 1])
def test_check_number_in_range_turns_overflow_into_the_range_error(value):
    with pytest.raises(ValueError, match=r"^`truncation` must be a finite number >= 0, got .*\(an integer beyond "
                                         r"±2\*\*63 is too large for torch: write it as a float\)\.$"):
        check_number_in_range("`truncation`", value, 0)
    check_number_in_range("`num_images`", 10**400, 1, integer=True)  # integers are exact at any size
    check_number_in_range("`truncation`", float(2**70), 0)


def test_an_explicit_huge_truncation_is_a_range_error_in_both_engines(model_dir):
    import torch

    from galip_core.runtime import LitePipeline
    from galip_diffusers import GALIPPipeline

    for pipe in (GALIPPipeline.from_pretrained(model_dir), LitePipeline.from_pretrained(model_dir)):
        with pytest.raises(ValueError, match=r"`truncation`.* must be a finite number >= 0, got 1180591620717411303424"):
            pipe(["a red circle"], generator=torch.Generator().manual_seed(0), truncation=2**70)
