"""GALIP's discriminator: Mate-D (NetD) on frozen CLIP features, plus the text-conditioned head (NetC)."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin  # noqa: F401  (ModelMixin must be an attribute here, see loading docs)
from diffusers.configuration_utils import register_to_config
from torch import nn

from galip_diffusers.models.blocks import DiscriminatorBlock, PixelDownBlock
from galip_diffusers.models.clip_bridge import CLIP_PREPROCESS_MODES, extract_clip_features


class GALIPDiscriminator(ModelMixin, ConfigMixin):
    r"""GALIP discriminator: Mate-D + condition head, on CLIP-ViT features of the images.

    The CLIP-ViT itself is not part of this model (it is frozen and shared with the generator's weights); pass a
    transformers ``CLIPVisionModelWithProjection`` to :meth:`extract_features`, which taps the hidden states after
    ``feature_layers`` (0-indexed blocks; ``-1`` taps the patch embeddings that enter block 0) and returns them as
    (B, L, hidden, g, g) plus the projected image embedding.

    Mate-D: ``out = feats[:, 0]``, then ``out = blocks[i](out, feats[:, i + 1])``, then ``out = main(out)``.
    Head: tile the sentence embedding over the grid, concatenate after ``out``, then
    ``conv(k) -> LReLU(0.2) -> conv(4)`` to one logit per image, with ``k = grid_size - 3`` (4 for the 7x7 grid).

    Optional pixel path (``pixel_channels``, not in the official model, off by default): a small conv net on the
    images themselves (``[-1, 1]``, any resolution), ``conv3x3 -> PixelDownBlock`` per entry of ``pixel_channels``
    (each halves the resolution), average-pooled to the grid, with its own condition head of the same shape. Its logit
    is added to the CLIP logit. It lets D see what a small frozen ViT does not resolve (e.g. the corners that tell a
    square from a blob at 64 px); its inputs join MA-GP. Leave it off for ViT-B-sized CLIPs.

    Parameters:
        hidden_size: channels of the CLIP features (768 for ViT-B/32).
        out_channels: channels of Mate-D's output (512).
        cond_dim: sentence-embedding dimension (512).
        head_channels: hidden channels of the head (128).
        grid_size: the ViT patch grid (7 for ViT-B/32 at 224 px).
        feature_layers: ViT blocks whose outputs are tapped (1, 4, 8); ``-1`` is the embedding layer's output.
        clip_preprocess: ``"official"`` (the released checkpoints' double shift) or ``"standard"``.
        pixel_channels: channels of the optional pixel path, one down-sampling block each (e.g. ``[32, 64, 128]``
            takes 64 px to the 8x8 grid); ``None`` (default) for the official CLIP-only discriminator.
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
        pixel_channels: Optional[Sequence[int]] = None,
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
        if pixel_channels is not None and (len(pixel_channels) < 1 or min(pixel_channels) < 1):
            raise ValueError(
                f"`pixel_channels` must be None or a non-empty list of positive channel counts, got {pixel_channels!r}."
            )
        self.register_to_config(
            feature_layers=list(feature_layers), pixel_channels=None if pixel_channels is None else list(pixel_channels)
        )
        self.blocks = nn.ModuleList(
            [DiscriminatorBlock(hidden_size, hidden_size, use_clip_feature=True) for _ in feature_layers[1:]]
        )
        self.main = DiscriminatorBlock(hidden_size, out_channels, use_clip_feature=False)
        self.head = _condition_head(out_channels + cond_dim, head_channels, grid_size)
        self.pixel_stem = self.pixel_blocks = self.pixel_head = None
        if pixel_channels is not None:
            self.pixel_stem = nn.Conv2d(3, pixel_channels[0], 3, 1, 1)
            widths = [pixel_channels[0], *pixel_channels]
            self.pixel_blocks = nn.Sequential(*[PixelDownBlock(a, b) for a, b in zip(widths[:-1], widths[1:])])
            self.pixel_head = _condition_head(pixel_channels[-1] + cond_dim, head_channels, grid_size)

    @property
    def has_pixel_path(self) -> bool:
        """Whether this discriminator also reads the pixels (``pixel_channels`` set); then ``forward`` needs them."""
        return self.pixel_head is not None

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

    def pixel_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The pixel path: images (B, 3, H, W) in [-1, 1] -> (B, pixel_channels[-1], grid, grid)."""
        if not self.has_pixel_path:
            raise ValueError("This discriminator has no pixel path (its config has `pixel_channels=None`).")
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            raise ValueError(f"`pixel_values` must have shape (batch, 3, height, width), got {tuple(pixel_values.shape)}.")
        out = self.pixel_blocks(self.pixel_stem(pixel_values))
        grid = self.config.grid_size
        return out if out.shape[-1] == grid and out.shape[-2] == grid else F.adaptive_avg_pool2d(out, grid)

    def head_logits(self, features: torch.Tensor, text_embeds: torch.Tensor, head: Optional[nn.Module] = None) -> torch.Tensor:
        """The condition head (NetC, or ``head``): one logit per (features, sentence embedding) pair, shape (B,)."""
        if text_embeds.ndim != 2 or text_embeds.shape[1] != self.config.cond_dim:
            raise ValueError(
                f"`text_embeds` must have shape (batch, {self.config.cond_dim}), got {tuple(text_embeds.shape)}."
            )
        tiled = text_embeds.to(features.dtype)[:, :, None, None].expand(-1, -1, *features.shape[-2:])
        head = self.head if head is None else head
        return head(torch.cat([features, tiled], dim=1)).flatten(1).squeeze(1)

    def forward(
        self,
        clip_features: torch.Tensor,
        text_embeds: torch.Tensor,
        pixel_values: Optional[torch.Tensor] = None,
        per_head: bool = False,
    ) -> torch.Tensor:
        """Logits (B,) of ``C(D(clip_features), text_embeds)``, plus the pixel path's logit when there is one (then
        ``pixel_values``, the same images in [-1, 1], are required).

        ``per_head=True`` returns the heads' logits apart, shape (B, heads): column 0 the CLIP head, column 1 the pixel
        path (training gives every head its own hinge loss, see
        :func:`~galip_diffusers.training.losses.discriminator_hinge_loss`)."""
        logits = [self.head_logits(self.forward_features(clip_features), text_embeds)]
        if self.has_pixel_path:
            if pixel_values is None:
                raise ValueError("This discriminator has a pixel path (`pixel_channels`): pass `pixel_values`.")
            if pixel_values.shape[0] != logits[0].shape[0]:
                raise ValueError(
                    f"`pixel_values` has batch {pixel_values.shape[0]} but `clip_features` has {logits[0].shape[0]}."
                )
            pixel = self.pixel_features(pixel_values.to(clip_features.dtype))
            logits.append(self.head_logits(pixel, text_embeds, self.pixel_head))
        elif pixel_values is not None:
            raise ValueError("`pixel_values` given, but this discriminator has no pixel path (`pixel_channels=None`).")
        return torch.stack(logits, dim=1) if per_head else sum(logits[1:], logits[0])


def _condition_head(in_channels: int, head_channels: int, grid_size: int) -> nn.Sequential:
    """NetC's shape: ``conv(grid - 3) -> LReLU(0.2) -> conv(4)``, from (B, in, grid, grid) to one logit."""
    return nn.Sequential(
        nn.Conv2d(in_channels, head_channels, grid_size - 3, 1, 0, bias=False),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(head_channels, 1, 4, 1, 0, bias=False),
    )

