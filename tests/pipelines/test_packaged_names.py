"""A packaged model's name (and ``None``, the default) is never taken over by an unrelated local entry (fourth audit,
finding 6): ``None`` is always the packaged default; a packaged name means a local folder only when that folder is a
pipeline folder (logged, with the packaged model's folder); otherwise the packaged model, with a warning naming the
local entry that was ignored."""

import logging
import os

import pytest

from galip_core.runtime import LitePipeline, resolve_pretrained
from galip_diffusers import GALIPPipeline
from galip_diffusers.pretrained import PRETRAINED_MODELS
from galip_diffusers.testing_utils import tiny_pipeline

TINY_Z_DIM, EMOJI = 8, PRETRAINED_MODELS["galip-emoji"]


@pytest.fixture()
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_none_is_always_the_packaged_default(in_tmp):
    tiny_pipeline().save_pretrained(in_tmp / "galip-emoji")
    assert resolve_pretrained(None) == EMOJI
    assert GALIPPipeline.from_pretrained().generator.config.z_dim != TINY_Z_DIM
    assert LitePipeline.from_pretrained().generator_config["z_dim"] != TINY_Z_DIM


def test_a_local_pipeline_folder_with_the_name_is_loaded_and_logged(in_tmp, caplog):
    tiny_pipeline().save_pretrained(in_tmp / "galip-emoji")
    with caplog.at_level(logging.INFO, logger="galip_core.packaged"):
        assert resolve_pretrained("galip-emoji") == "galip-emoji"
    assert f"Loading the local folder {str(in_tmp / 'galip-emoji')!r}" in caplog.text and repr(EMOJI) in caplog.text
    assert GALIPPipeline.from_pretrained("galip-emoji").generator.config.z_dim == TINY_Z_DIM
    assert LitePipeline.from_pretrained("galip-emoji").generator_config["z_dim"] == TINY_Z_DIM


@pytest.mark.parametrize("kind", ["folder", "file"])
def test_an_unrelated_local_entry_is_ignored_with_a_warning(in_tmp, caplog, kind):
    if kind == "folder":
        os.makedirs(in_tmp / "galip-emoji" / "0000")  # e.g. a folder of generated images
    else:
        (in_tmp / "galip-emoji").write_text("x")
    with caplog.at_level(logging.WARNING, logger="galip_core.packaged"):
        assert resolve_pretrained("galip-emoji") == EMOJI
    assert f"Ignoring the local {kind} {str(in_tmp / 'galip-emoji')!r}" in caplog.text
    assert GALIPPipeline.from_pretrained("galip-emoji").generator.config.z_dim != TINY_Z_DIM
    assert LitePipeline.from_pretrained("galip-emoji").generator_config["z_dim"] != TINY_Z_DIM


def test_galip_generate_runs_the_packaged_default_beside_an_unrelated_folder_of_that_name(in_tmp):
    from galip_cli.generate import main as generate

    os.makedirs(in_tmp / "galip-emoji" / "0000")
    assert generate(["grinning face, twemoji style", "--out", str(in_tmp / "png"), "--no_progress"]) == 0
    assert len(list((in_tmp / "png").iterdir())) == 1
