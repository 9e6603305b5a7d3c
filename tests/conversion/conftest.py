"""Fixtures shared by the conversion tests: a tiny official-format GALIP checkpoint and its CLIP, built once per
module from ``helpers.official_fixtures``."""

from __future__ import annotations

import warnings

import pytest
import torch

from helpers import official_fixtures as fx
from helpers.conversion_helpers import TINY_KWARGS


@pytest.fixture(scope="module")
def tiny_clip():
    return fx.make_openai_clip(fx.TINY, seed=1)


@pytest.fixture(scope="module")
def tiny_nets(tiny_clip):
    return fx.make_official_nets(tiny_clip, fx.TINY, seed=2)


@pytest.fixture(scope="module")
def tiny_files(tiny_clip, tiny_nets, tmp_path_factory):
    """A DDP-prefixed official checkpoint and the CLIP as a TorchScript archive (the format of ViT-B-32.pt)."""
    folder = tmp_path_factory.mktemp("tiny_inputs")
    ckpt, clip_file = str(folder / "tiny.pth"), str(folder / "tiny-clip-jit.pt")
    torch.save(fx.official_checkpoint(tiny_nets, ddp=True), ckpt)
    _save_torchscript(tiny_clip, clip_file, fx.TINY)
    return ckpt, clip_file


@pytest.fixture()
def tiny_cli(monkeypatch):
    """``galip convert`` (``galip_cli.convert.main``) converting with the tiny fixtures' geometry."""
    import galip_cli.convert
    from galip_diffusers.conversion import official

    original = official.convert_official_checkpoint
    monkeypatch.setattr(galip_cli.convert, "convert_official_checkpoint", lambda *a, **k: original(*a, **k, **TINY_KWARGS))


def _save_torchscript(clip_model, path, sizes):
    res = sizes.clip["image_resolution"]
    text = torch.zeros(1, 77, dtype=torch.long)
    text[0, :2] = torch.tensor([49406, 49407])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.jit.trace(clip_model, (torch.zeros(1, 3, res, res), text), check_trace=False).save(path)
