"""Checks shared by the tests of every model shipped inside the package (galip-shapes, galip-emoji)."""

import json
import os

from galip_diffusers.pretrained import PRETRAINED_MODELS, resolve_pretrained
from galip_diffusers.training.packaging import SHIPPED_MODEL_MAX_MB

#: the components every shipped folder has (the scorer CLIP for FuseDream, the image encoder for fine-tuning)
SHIPPED_COMPONENTS = {"tokenizer", "text_encoder", "generator", "image_encoder", "scorer"}


def check_shipped_folder(name: str) -> str:
    """Assert that the packaged model ``name`` resolves to its folder, has every component and a model card, stays
    under the shipped-size limit and holds safetensors only; return the card's text."""
    folder = PRETRAINED_MODELS[name]
    assert resolve_pretrained(name) == folder
    files = [os.path.join(d, f) for d, _, names in os.walk(folder) for f in names]
    total = sum(os.path.getsize(f) for f in files)
    assert total < SHIPPED_MODEL_MAX_MB * 2**20, f"{total / 2**20:.2f} MiB"
    with open(os.path.join(folder, "model_index.json")) as f:
        assert SHIPPED_COMPONENTS <= set(json.load(f))
    assert all(not f.endswith((".bin", ".pt", ".pth", ".ckpt")) for f in files)  # safetensors only
    with open(os.path.join(folder, "README.md"), encoding="utf-8") as f:
        return f.read()


def load_quiet(name: str):
    """The packaged model ``name`` as a ``GALIPPipeline`` without progress bars (the tests call it many times)."""
    from galip_diffusers import GALIPPipeline

    pipe = GALIPPipeline.from_pretrained(name)
    pipe.set_progress_bar_config(disable=True)
    return pipe
