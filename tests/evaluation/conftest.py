"""Shared fixtures of the evaluation tests: a tiny image-caption folder, CLIP and pipeline, one set per module."""

import pytest
from helpers.training_helpers import make_imagefolder, make_tiny_clip, make_tiny_pipeline_folder


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    """``root``, ``data`` (3 captioned images), ``clip``, ``pipe`` (no discriminator) and ``cache`` paths; a module
    that needs more overrides ``fx``, taking this one as its argument."""
    root = tmp_path_factory.mktemp("eval")
    return {
        "root": root,
        "data": make_imagefolder(str(root / "data"), num_images=3, list_captions=False),
        "clip": make_tiny_clip(str(root / "clip"), seed=1),
        "pipe": make_tiny_pipeline_folder(str(root / "pipe"), with_discriminator=False),
        "cache": str(root / "cache"),
    }
