"""Tiny, offline GALIP components for tests, quick benchmarks and smoke runs (random weights, nothing downloaded)."""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any, Sequence

import torch
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPTextConfig,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

from galip_diffusers.models.discriminator import GALIPDiscriminator
from galip_diffusers.models.generator import GALIPGenerator
from galip_diffusers.pipelines.pipeline_galip import GALIPPipeline
from galip_diffusers.pipelines.pipeline_galip_fusedream import GALIPFuseDreamPipeline

TINY_VISION_CONFIG: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "image_size": 40,
    "patch_size": 8,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "projection_dim": 16,
}

TINY_GENERATOR_CONFIG: dict[str, Any] = {
    "z_dim": 8,
    "cond_dim": 16,
    "ngf": 4,
    "output_size": 32,
    "code_channels": 8,
    "mapping_mid_channels": 4,
    "num_mapping_blocks": 2,
    "prompt_layers": [1, 2],
    "vision_config": TINY_VISION_CONFIG,
}

#: A tiny scorer CLIP (text and vision towers) sharing the byte-level tokenizer, with a vision tower unlike G's ViT.
TINY_SCORER_CONFIG: dict[str, Any] = {
    "text_config": {
        "vocab_size": 514, "bos_token_id": 512, "eos_token_id": 513, "pad_token_id": 513, "hidden_size": 32,
        "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2, "max_position_embeddings": 77,
        "projection_dim": 16,
    },
    "vision_config": {
        "hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2, "image_size": 32,
        "patch_size": 8, "projection_dim": 16,
    },
    "projection_dim": 16,
}

TINY_DISCRIMINATOR_CONFIG: dict[str, Any] = {
    "hidden_size": 32,
    "out_channels": 24,
    "cond_dim": 16,
    "head_channels": 8,
    "grid_size": 5,
    "feature_layers": [0, 1, 2],
}


def byte_level_clip_tokenizer(model_max_length: int = 77) -> CLIPTokenizer:
    """A real ``CLIPTokenizer`` with the 256 byte-level symbols (plus their ``</w>`` forms) and no merges: 514 ids."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    symbols = list(bytes_to_unicode().values())
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=model_max_length)


def tiny_text_encoder(seed: int = 0, projection_dim: int = 16) -> CLIPTextModelWithProjection:
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=514, bos_token_id=512, eos_token_id=513, pad_token_id=513, hidden_size=32, intermediate_size=37,
        num_attention_heads=4, num_hidden_layers=2, max_position_embeddings=77, projection_dim=projection_dim,
        hidden_act="quick_gelu", layer_norm_eps=1e-5,
    )
    return CLIPTextModelWithProjection(config).eval()


def tiny_image_encoder(seed: int = 0, vision_config: dict[str, Any] | None = None) -> CLIPVisionModelWithProjection:
    torch.manual_seed(seed)
    return CLIPVisionModelWithProjection(CLIPVisionConfig(**(vision_config or TINY_VISION_CONFIG))).eval()


def tiny_generator(seed: int = 0, **overrides: Any) -> GALIPGenerator:
    """A tiny generator whose Affine/DBlock scalars are randomised too, so every layer matters in tests."""
    torch.manual_seed(seed)
    generator = GALIPGenerator(**{**TINY_GENERATOR_CONFIG, **overrides})
    with torch.no_grad():
        for name, param in generator.named_parameters():
            if "linear2" in name:  # identity-initialised modulations would hide bugs in the text path
                param.add_(0.1 * torch.randn_like(param))
    return generator.eval()


def tiny_discriminator(seed: int = 0, **overrides: Any) -> GALIPDiscriminator:
    torch.manual_seed(seed)
    discriminator = GALIPDiscriminator(**{**TINY_DISCRIMINATOR_CONFIG, **overrides})
    with torch.no_grad():
        for name, param in discriminator.named_parameters():
            if name.endswith(("gamma", "beta")):  # zero-initialised residual scales would hide the blocks
                param.fill_(0.5)
    return discriminator.eval()


def tiny_train_step_inputs(seed: int, captions: Sequence[str], **discriminator_overrides: Any) -> SimpleNamespace:
    """What ``galip_train_step`` reads besides the accelerator and the optimisers, tiny and seeded: ``generator``,
    ``discriminator`` (with ``discriminator_overrides``), ``image_encoder``, ``text_encoder``, ``ids`` (the captions
    tokenized to 77), ``images`` (uniform in [-1, 1], the tiny generator's 32 px) and ``noise`` (one row each)."""
    torch.manual_seed(seed)
    generator, discriminator = tiny_generator(seed), tiny_discriminator(seed, **discriminator_overrides)
    image_encoder, text_encoder = tiny_image_encoder(seed), tiny_text_encoder(seed)
    ids = byte_level_clip_tokenizer()(list(captions), padding="max_length", max_length=77, return_tensors="pt").input_ids
    images = torch.rand(len(captions), 3, 32, 32) * 2 - 1
    noise = torch.randn(len(captions), TINY_GENERATOR_CONFIG["z_dim"])
    return SimpleNamespace(generator=generator, discriminator=discriminator, image_encoder=image_encoder,
                           text_encoder=text_encoder, ids=ids, images=images, noise=noise)


def tiny_components(seed: int = 0, with_image_encoder: bool = False) -> dict[str, Any]:
    """``get_dummy_components()``: tokenizer, text encoder and generator (and optionally the image encoder)."""
    components = {
        "tokenizer": byte_level_clip_tokenizer(),
        "text_encoder": tiny_text_encoder(seed),
        "generator": tiny_generator(seed),
        "image_encoder": tiny_image_encoder(seed) if with_image_encoder else None,
        "scorer": None,
    }
    return components


def tiny_pipeline(seed: int = 0, with_image_encoder: bool = False) -> GALIPPipeline:
    pipe = GALIPPipeline(**tiny_components(seed, with_image_encoder))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_scorer(seed: int = 1) -> CLIPModel:
    """A tiny scorer ``CLIPModel`` (another seed and geometry than the generator's ViT); uses the byte-level tokenizer."""
    torch.manual_seed(seed)
    return CLIPModel(CLIPConfig(**TINY_SCORER_CONFIG)).eval()


def save_tiny_bridge_clip(folder: str | os.PathLike, seed: int = 0) -> CLIPModel:
    """Save a tiny ``CLIPModel`` (plus the byte-level tokenizer) whose towers match :func:`tiny_text_encoder` and the
    tiny generator's ViT: a stand-in for a trained bridge CLIP folder (``--clip_model_name_or_path``)."""
    torch.manual_seed(seed)
    text = tiny_text_encoder(seed).config.to_dict()
    clip = CLIPModel(CLIPConfig(text_config=text, vision_config=TINY_VISION_CONFIG, projection_dim=16)).eval()
    clip.save_pretrained(folder)
    byte_level_clip_tokenizer().save_pretrained(folder)
    return clip


def tiny_fusedream_pipeline(seed: int = 0, scorer_seed: int = 1) -> GALIPFuseDreamPipeline:
    pipe = GALIPFuseDreamPipeline(**{**tiny_components(seed), "scorer": tiny_scorer(scorer_seed)})
    pipe.set_progress_bar_config(disable=True)
    return pipe
