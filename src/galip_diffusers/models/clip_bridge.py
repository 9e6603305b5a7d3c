"""The frozen CLIP-ViT, as GALIP uses it on both sides.

* Generator side (Mate-G): the ViT runs on the *bridge feature* instead of patch embeddings (its ``conv1`` is skipped),
  with learned prompt tokens appended at the end of the sequence for some blocks (:class:`CLIPBridge`).
* Discriminator side (Mate-D): images are preprocessed, encoded, and the hidden states after a few blocks are tapped as
  spatial features, together with the projected image embedding (:func:`extract_clip_features`).

Both sides use the transformers CLIP modules, so the weights load from any ``CLIPVisionModel`` checkpoint.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPVisionConfig
from transformers.models.clip.modeling_clip import CLIPEncoder, CLIPVisionEmbeddings

from galip_core.vit import CLIP_MEAN, CLIP_STD, prompted_vit, tokens_to_grid

CLIP_PREPROCESS_MODES = ("official", "standard")

#: The geometry of OpenAI's CLIP ViT-B/32 vision tower, the one the official GALIP uses.
VIT_B_32_VISION_CONFIG: dict[str, Any] = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "image_size": 224,
    "patch_size": 32,
    "num_channels": 3,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "projection_dim": 512,
}


def normalize_vision_config(vision_config: CLIPVisionConfig | dict | None) -> dict[str, Any]:
    """Return the compact, JSON-serialisable vision config that GALIP models store in their ``config.json``."""
    if vision_config is None:
        return dict(VIT_B_32_VISION_CONFIG)
    if not isinstance(vision_config, dict):
        vision_config = vision_config.to_dict()
    if "vision_config" in vision_config and isinstance(vision_config["vision_config"], dict):
        vision_config = vision_config["vision_config"]  # a full CLIPConfig dict
    merged = dict(VIT_B_32_VISION_CONFIG)
    merged.update({k: vision_config[k] for k in VIT_B_32_VISION_CONFIG if k in vision_config})
    if merged["image_size"] % merged["patch_size"] != 0:
        raise ValueError(
            f"vision_config: image_size ({merged['image_size']}) must be a multiple of patch_size "
            f"({merged['patch_size']})."
        )
    return merged


def build_vision_config(vision_config: dict[str, Any], attn_implementation: str = "sdpa") -> CLIPVisionConfig:
    config = CLIPVisionConfig(**vision_config)
    config._attn_implementation = attn_implementation
    return config


class CLIPBridge(nn.Module):
    """The frozen ViT of Mate-G, run on the bridge feature with prompt tokens injected.

    The module names match transformers' ``CLIPVisionModel`` (``embeddings``, ``pre_layrnorm``, ``encoder``), so a
    ``CLIPVisionModel`` state dict loads into it directly. There is no ``post_layernorm``: the bridge never uses it.
    """

    def __init__(self, vision_config: dict[str, Any]):
        super().__init__()
        config = build_vision_config(vision_config)
        self.config = config
        self.embeddings = CLIPVisionEmbeddings(config)
        self.pre_layrnorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.encoder = CLIPEncoder(config)

    @property
    def grid_size(self) -> int:
        return self.config.image_size // self.config.patch_size

    def forward(
        self, bridge_feature: torch.Tensor, prompts: torch.Tensor, prompt_layers: Sequence[int]
    ) -> torch.Tensor:
        """Map ``bridge_feature`` (B, C, g, g) through the ViT, appending ``prompts[:, k]`` (B, P, C) as the last
        token of the sequence while block ``prompt_layers[k]`` runs (and dropping it after). Returns the patch tokens
        after the last block, CLS dropped and no ``post_layernorm``, as a (B, C, g, g) map."""
        layers = [lambda hidden, layer=layer: layer(hidden, None) for layer in self.encoder.layers]
        return prompted_vit(bridge_feature, prompts, prompt_layers, self.embeddings.class_embedding,
                            self.embeddings.position_embedding.weight, self.pre_layrnorm, layers)  # fmt: skip


def preprocess_for_clip(images: torch.Tensor, image_size: int, mode: str = "official") -> torch.Tensor:
    """Turn generator-range images ([-1, 1]) into CLIP pixel values.

    ``"official"`` reproduces the released GALIP code: nearest resize of ``x * 0.5 + 0.5``, then ``(x + 1) * 0.5``
    once more before the CLIP normalisation, so the ViT sees pixels in [0.5, 1]. The released checkpoints were trained
    with it. ``"standard"`` is plain CLIP preprocessing: bicubic resize of ``x * 0.5 + 0.5``, then normalisation.
    """
    if mode not in CLIP_PREPROCESS_MODES:
        raise ValueError(f"`clip_preprocess` must be one of {CLIP_PREPROCESS_MODES}, got {mode!r}.")
    x = images * 0.5 + 0.5
    if mode == "official":
        x = F.interpolate(x, size=(image_size, image_size))
        x = (x + 1) * 0.5
    elif x.shape[-1] != image_size or x.shape[-2] != image_size:
        x = F.interpolate(x, size=(image_size, image_size), mode="bicubic", align_corners=False)
    mean = torch.tensor(CLIP_MEAN, device=x.device, dtype=x.dtype)[None, :, None, None]
    std = torch.tensor(CLIP_STD, device=x.device, dtype=x.dtype)[None, :, None, None]
    return (x - mean) / std


def extract_clip_features(
    image_encoder: nn.Module,
    images: torch.Tensor,
    feature_layers: Sequence[int] = (1, 4, 8),
    clip_preprocess: str = "official",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mate-D's CLIP features: hidden states after the given (0-indexed) blocks (``-1``: the embeddings entering block
    0, after ``pre_layrnorm``), CLS dropped, as
    (B, len(feature_layers), C, g, g), and the projected image embedding ``ln_post(CLS) @ proj`` (B, D).

    ``image_encoder`` is a transformers ``CLIPVisionModelWithProjection``. Gradients flow through it to ``images``.
    """
    pixel_values = preprocess_for_clip(images, image_encoder.config.image_size, clip_preprocess)
    pixel_values = pixel_values.to(image_encoder.dtype)
    out = image_encoder(pixel_values=pixel_values, output_hidden_states=True)
    feats = torch.stack([tokens_to_grid(out.hidden_states[i + 1][:, 1:]) for i in feature_layers], dim=1)
    return feats, out.image_embeds
