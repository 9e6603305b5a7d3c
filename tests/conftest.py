"""Shared pytest fixtures."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one intra-op thread is faster than two on a shared machine (and keeps CPU use modest)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A saved tiny GALIP pipeline folder (read-only: tests that alter one copy it first)."""
    from galip_diffusers.testing_utils import tiny_pipeline

    folder = tmp_path_factory.mktemp("tiny") / "model"
    tiny_pipeline().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def real_emoji():
    """``(judge, records, images)`` over all 7,572 real emoji images (the npm tarballs, fetched once into the user
    cache, ``$GALIP_EMOJI_CACHE``), shared by every test that judges against the real data set."""
    from galip_diffusers.data.emoji import default_cache_dir, fetch_tarballs, read_emoji_images
    from galip_diffusers.data.emoji_judge import EmojiJudge

    records, images = read_emoji_images(fetch_tarballs(default_cache_dir()))
    return EmojiJudge.from_records(records, images), records, images
