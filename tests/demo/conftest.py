"""Shared fixtures of the demo tests."""

import pytest

from galip_diffusers.testing_utils import tiny_pipeline


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A saved tiny GALIP pipeline folder (random weights, no scorer), one per test module."""
    folder = tmp_path_factory.mktemp("demo") / "tiny"
    tiny_pipeline().save_pretrained(folder)
    return str(folder)
