"""Shared fixtures of the FuseDream tests."""

import pytest

from galip_diffusers.testing_utils import tiny_fusedream_pipeline


@pytest.fixture(scope="module")
def pipe():
    """A tiny GALIPFuseDreamPipeline (random weights), one per test module."""
    return tiny_fusedream_pipeline()
