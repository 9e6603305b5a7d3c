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
