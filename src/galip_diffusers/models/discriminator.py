"""GALIP's discriminator: Mate-D (NetD) on frozen CLIP features, plus the text-conditioned head (NetC)."""

from __future__ import annotations

from typing import Sequence

import torch
from diffusers import ConfigMixin, ModelMixin  # noqa: F401  (ModelMixin must be an attribute here, see loading docs)
from diffusers.configuration_utils import register_to_config
from torch import nn

from .blocks import DiscriminatorBlock
from .clip_bridge import CLIP_PREPROCESS_MODES, extract_clip_features


class GALIPDiscriminator(ModelMixin, ConfigMixin):
    r"""GALIP discriminator: Mate-D + condition head, on CLIP-ViT features of the images.

    The CLIP-ViT itself is not part of this model (it is frozen and shared with the generator's weights); pass a
    transformers ``CLIPVisionModelWithProjection`` to :meth:`extract_features`, which taps the hidden states after
    ``feature_layers`` (0-indexed blocks; ``-1`` taps the patch embeddings that enter block 0) and returns them as
    (B, L, hidden, g, g) plus the projected image embedding.

    Mate-D: ``out = feats[:, 0]``, then ``out = blocks[i](out, feats[:, i + 1])``, then ``out = main(out)``.
    Head: tile the sentence embedding over the grid, concatenate after ``out``, then
    ``conv(k) -> LReLU(0.2) -> conv(4)`` to one logit per image, with ``k = grid_size - 3`` (4 for the 7x7 grid).

    Parameters:
        hidden_size: channels of the CLIP features (768 for ViT-B/32).
        out_channels: channels of Mate-D's output (512).
        cond_dim: sentence-embedding dimension (512).
        head_channels: hidden channels of the head (128).
        grid_size: the ViT patch grid (7 for ViT-B/32 at 224 px).
        feature_layers: ViT blocks whose outputs are tapped (1, 4, 8); ``-1`` is the embedding layer's output.
        clip_preprocess: ``"official"`` (the released checkpoints' double shift) or ``"standard"``.
    """

    @register_to_config
    def __init__(
        self,
        hidden_size: int = 768,
        out_channels: int = 512,
        cond_dim: int = 512,
        head_channels: int = 128,
        grid_size: int = 7,
        feature_layers: Sequence[int] = (1, 4, 8),
        clip_preprocess: str = "official",
    ):
        super().__init__()
        if clip_preprocess not in CLIP_PREPROCESS_MODES:
            raise ValueError(f"`clip_preprocess` must be one of {CLIP_PREPROCESS_MODES}, got {clip_preprocess!r}.")
        if len(feature_layers) < 1:
            raise ValueError("`feature_layers` must name at least one ViT block.")
        if min(feature_layers) < -1:
            raise ValueError(
                f"`feature_layers` must be ViT block indices >= 0, or -1 for the embeddings; got {list(feature_layers)}."
            )
        if grid_size < 5:
            raise ValueError(f"`grid_size` must be at least 5 (the head uses a {grid_size - 3}x conv), got {grid_size}.")
        self.register_to_config(feature_layers=list(feature_layers))
        self.blocks = nn.ModuleList(
            [DiscriminatorBlock(hidden_size, hidden_size, use_clip_feature=True) for _ in feature_layers[1:]]
        )
        self.main = DiscriminatorBlock(hidden_size, out_channels, use_clip_feature=False)
        self.head = nn.Sequential(
            nn.Conv2d(out_channels + cond_dim, head_channels, grid_size - 3, 1, 0, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(head_channels, 1, 4, 1, 0, bias=False),
        )

    def extract_features(self, image_encoder: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """CLIP features (B, L, hidden, g, g) and image embeddings (B, D) of ``images`` in [-1, 1]."""
        return extract_clip_features(
            image_encoder, images, self.config.feature_layers, clip_preprocess=self.config.clip_preprocess
        )

    def forward_features(self, clip_features: torch.Tensor) -> torch.Tensor:
        """Mate-D (NetD): (B, L, hidden, g, g) -> (B, out_channels, g, g)."""
        expected = len(self.config.feature_layers)
        if clip_features.ndim != 5 or clip_features.shape[1] != expected:
            raise ValueError(
                f"`clip_features` must have shape (batch, {expected}, hidden, grid, grid), "
                f"got {tuple(clip_features.shape)}."
            )
        out = clip_features[:, 0]
        for i, block in enumerate(self.blocks):
            out = block(out, clip_features[:, i + 1])
        return self.main(out)

    def head_logits(self, features: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """The condition head (NetC): one logit per (image features, sentence embedding) pair, shape (B,)."""
        if text_embeds.ndim != 2 or text_embeds.shape[1] != self.config.cond_dim:
            raise ValueError(
                f"`text_embeds` must have shape (batch, {self.config.cond_dim}), got {tuple(text_embeds.shape)}."
            )
        tiled = text_embeds.to(features.dtype)[:, :, None, None].expand(-1, -1, *features.shape[-2:])
        return self.head(torch.cat([features, tiled], dim=1)).flatten(1).squeeze(1)

    def forward(self, clip_features: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """Logits (B,) of ``C(D(clip_features), text_embeds)``."""
        return self.head_logits(self.forward_features(clip_features), text_embeds)

