"""galip_diffusers.training.packaging: a shipped folder is replaced in one step, and a failed save leaves the old one
as it was (no half-written folder, no hidden leftovers)."""

import os

import pytest
import torch
from safetensors.torch import load_file

from galip_diffusers import GALIPPipeline
from galip_diffusers.training.packaging import checkpoint_steps, folder_size_mb, save_half_precision
from galip_diffusers.testing_utils import tiny_components, tiny_discriminator


def _weights(folder):
    return load_file(os.path.join(folder, "generator", "diffusion_pytorch_model.safetensors"))


def test_replaces_a_folder_and_a_failed_save_keeps_the_old_one(tmp_path, one_thread, monkeypatch):
    out = str(tmp_path / "galip-x")
    save_half_precision(GALIPPipeline(**tiny_components(0)), tiny_discriminator(0), out)
    first = _weights(out)
    assert all(t.dtype == torch.float16 for t in first.values()) and folder_size_mb(out) > 0

    pipe, disc = GALIPPipeline(**tiny_components(1)), tiny_discriminator(1)
    save_half_precision(pipe, disc, out)
    second = _weights(out)
    assert any(not torch.equal(first[k], second[k]) for k in first)
    assert pipe.generator.dtype == torch.float32 and next(disc.parameters()).dtype == torch.float32  # cast back
    assert sorted(os.listdir(tmp_path)) == ["galip-x"]

    def broken(*args, **kwargs):
        raise OSError("disk full")

    with pytest.raises(ValueError, match=r"shipped models stay under 0.001 MiB \(nothing was replaced\)"):
        save_half_precision(GALIPPipeline(**tiny_components(2)), disc, out, max_size_mb=0.001)
    assert all(torch.equal(second[k], v) for k, v in _weights(out).items())
    assert sorted(os.listdir(tmp_path)) == ["galip-x"]

    monkeypatch.setattr(type(disc), "save_pretrained", broken)
    with pytest.raises(OSError, match="disk full"):
        save_half_precision(GALIPPipeline(**tiny_components(2)), disc, out)
    assert all(torch.equal(second[k], v) for k, v in _weights(out).items())
    assert sorted(os.listdir(tmp_path)) == ["galip-x"]


def test_checkpoint_steps():
    assert checkpoint_steps("/runs/x/checkpoint-1200") == 1200 and checkpoint_steps("checkpoint-7/") == 7


def test_a_failed_save_into_new_folders_leaves_none_of_them(tmp_path, one_thread):
    out = tmp_path / "new" / "deep" / "galip-x"
    with pytest.raises(ValueError, match=r"'galip-x' would be .* MiB; shipped models stay under"):
        save_half_precision(GALIPPipeline(**tiny_components(0)), tiny_discriminator(0), str(out), max_size_mb=0.001)
    assert os.listdir(tmp_path) == []
    save_half_precision(GALIPPipeline(**tiny_components(0)), tiny_discriminator(0), str(out))
    assert os.listdir(out.parent) == ["galip-x"] and (out / "model_index.json").is_file()
