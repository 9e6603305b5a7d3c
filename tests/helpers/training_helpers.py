"""Tiny offline fixtures for the training and evaluation tests: an imagefolder, a CLIPModel folder, a pipeline folder."""

from __future__ import annotations

import importlib.util
import json
import os
from types import ModuleType
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from transformers import CLIPConfig, CLIPModel

from galip_diffusers.testing_utils import (
    TINY_VISION_CONFIG,
    byte_level_clip_tokenizer,
    tiny_discriminator,
    tiny_pipeline,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def training_script(name: str) -> ModuleType:
    """A fresh module of ``training/<name>.py`` (the scripts are not a package), for its ``main`` and helpers."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "training", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


COLORS = {"red": (220, 20, 20), "green": (20, 170, 40), "blue": (30, 60, 220), "yellow": (235, 210, 30)}
TINY_GENERATOR_JSON = {
    "z_dim": 8, "ngf": 4, "output_size": 32, "code_channels": 8, "mapping_mid_channels": 4,
    "num_mapping_blocks": 2, "prompt_layers": [1, 2],
}


def make_imagefolder(
    folder: str, num_images: int = 16, corrupt: Sequence[int] = (), list_captions: bool = True, size=(40, 48)
) -> str:
    """Small coloured PNGs with a random patch, captions in metadata.jsonl; ``corrupt`` indices get garbage bytes."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    names = list(COLORS)
    with open(os.path.join(folder, "metadata.jsonl"), "w") as f:
        for i in range(num_images):
            color = names[i % len(names)]
            name = f"{i:03d}.png"
            if i in corrupt:
                with open(os.path.join(folder, name), "wb") as g:
                    g.write(b"\x89PNG\r\n\x1a\n this is not an image")
            else:
                array = np.zeros((*size, 3), np.uint8)
                array[...] = COLORS[color]
                array[8:20, 10:26] = rng.integers(0, 255, 3)
                Image.fromarray(array).save(os.path.join(folder, name))
            caption = [f"a {color} picture", f"{color}"] if list_captions else f"a {color} picture"
            f.write(json.dumps({"file_name": name, "text": caption}) + "\n")
    return folder


def make_tiny_clip(folder: str, seed: int = 0) -> str:
    """A random-weight transformers CLIPModel (tiny text/vision towers, vision 40 px / patch 8, projection 16) plus
    the byte-level tokenizer."""
    text_config = dict(
        vocab_size=514, bos_token_id=512, eos_token_id=513, pad_token_id=513, hidden_size=32, intermediate_size=37,
        num_attention_heads=4, num_hidden_layers=2, max_position_embeddings=77, hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )
    vision_config = {k: v for k, v in TINY_VISION_CONFIG.items() if k != "projection_dim"}
    torch.manual_seed(seed)
    clip = CLIPModel(CLIPConfig(text_config=text_config, vision_config=vision_config, projection_dim=16))
    clip.save_pretrained(folder)
    byte_level_clip_tokenizer().save_pretrained(folder)
    return folder


def make_tiny_pipeline_folder(folder: str, with_discriminator: bool = True) -> str:
    tiny_pipeline(0, with_image_encoder=True).save_pretrained(folder)
    if with_discriminator:
        tiny_discriminator(0).save_pretrained(os.path.join(folder, "discriminator"))
    return folder


def write_generator_config(path: str, **overrides) -> str:
    with open(path, "w") as f:
        json.dump({**TINY_GENERATOR_JSON, **overrides}, f)
    return path
