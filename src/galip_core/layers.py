"""GALIP's generator layers (Mate-G), the single implementation used by the diffusers model
(:class:`galip_diffusers.GALIPGenerator`) and the fast runtime (:mod:`galip_core.runtime`). Torch only.

The names follow the paper: an *Affine* modulation predicts per-channel scale and shift from the condition vector
``cond = cat([z, text_embeds])`` (noise first); a *fusion block* (DFBLK) stacks two modulations; the *mapping block*
(M_Block) builds the "bridge feature" that is fed to the frozen CLIP-ViT; the *generator block* (G_Block) upsamples.
:class:`GeneratorLayers` assembles them into the whole network around any prompted ViT (see :mod:`galip_core.vit`).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def generator_channels(ngf: int, output_size: int) -> list[int]:
    """Channel widths from the bottleneck to the last block: ``[ngf * min(2**i, 8) for i in range(log2(S) - 1)]``
    reversed, with S the power of two at or above ``output_size`` (224 -> 256 -> 512,512,512,512,256,128,64)."""
    log_size = math.ceil(math.log2(output_size))
    return [ngf * min(2**i, 8) for i in range(log_size - 1)][::-1]


def generator_block_sizes(num_blocks: int, output_size: int) -> list[int]:
    """Spatial size after each G-block: 8, 16, 32, ... doubling, and ``output_size`` for the last block."""
    return [2 ** (3 + i) for i in range(num_blocks - 1)] + [output_size]


class AffineMLP(nn.Module):
    """``Linear(cond -> C) -> ReLU -> Linear(C -> C)``: predicts one modulation vector from the condition."""

    def __init__(self, cond_dim: int, num_features: int, bias_init: float):
        super().__init__()
        self.linear1 = nn.Linear(cond_dim, num_features)
        self.linear2 = nn.Linear(num_features, num_features)
        nn.init.zeros_(self.linear2.weight)
        nn.init.constant_(self.linear2.bias, bias_init)

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        return self.linear2(F.relu(self.linear1(cond)))


class Affine(nn.Module):
    """Text-conditioned affine transformation ``gamma(cond) * x + beta(cond)``, per channel.

    ``gamma`` starts as the identity (last layer weight 0, bias 1) and ``beta`` as zero, so a freshly initialised
    block passes its input through unchanged.
    """

    def __init__(self, cond_dim: int, num_features: int):
        super().__init__()
        self.fc_gamma = AffineMLP(cond_dim, num_features, bias_init=1.0)
        self.fc_beta = AffineMLP(cond_dim, num_features, bias_init=0.0)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gamma = self.fc_gamma(cond)[:, :, None, None]
        beta = self.fc_beta(cond)[:, :, None, None]
        return gamma * x + beta


class FusionBlock(nn.Module):
    """Deep text-image fusion block (DFBLK): ``affine0 -> LeakyReLU -> affine1 -> LeakyReLU``."""

    def __init__(self, cond_dim: int, channels: int):
        super().__init__()
        self.affine0 = Affine(cond_dim, channels)
        self.affine1 = Affine(cond_dim, channels)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.affine0(x, cond), 0.2)
        return F.leaky_relu(self.affine1(x, cond), 0.2)


class MappingBlock(nn.Module):
    """M_Block of the CLIP adapter: ``conv3x3 -> fuse -> conv3x3 -> fuse`` plus a (1x1 if needed) shortcut."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, cond_dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, mid_channels, 3, 1, 1)
        self.fuse1 = FusionBlock(cond_dim, mid_channels)
        self.conv2 = nn.Conv2d(mid_channels, out_channels, 3, 1, 1)
        self.fuse2 = FusionBlock(cond_dim, out_channels)
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.fuse1(self.conv1(x), cond)
        h = self.fuse2(self.conv2(h), cond)
        shortcut = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return shortcut + h


class GeneratorBlock(nn.Module):
    """G_Block: nearest-neighbour resize to ``out_size``, then ``fuse -> conv3x3 -> fuse -> conv3x3`` + shortcut."""

    def __init__(self, in_channels: int, out_channels: int, cond_dim: int, out_size: int):
        super().__init__()
        self.out_size = out_size
        self.fuse1 = FusionBlock(cond_dim, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.fuse2 = FusionBlock(cond_dim, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(self.out_size, self.out_size))
        h = self.conv1(self.fuse1(x, cond))
        h = self.conv2(self.fuse2(h, cond))
        shortcut = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return shortcut + h


class GeneratorLayers:
    """Mixin for an ``nn.Module``: GALIP's generator network around a prompted ViT (``self.vision_model``).

    Data flow for noise ``z`` (B, z_dim) and sentence embeddings ``text_embeds`` (B, cond_dim), with
    ``cond = cat([z, text_embeds])``: ``fc_code`` -> M-blocks -> ``conv_fuse`` (the bridge feature) -> the ViT with
    ``fc_prompt``'s prompt tokens -> ``conv_bridge_out(bridge_feature + bridge_scale * vit_out)`` -> G-blocks ->
    ``conv_out(LeakyReLU(h))``. The attribute names are the state-dict keys of every GALIP generator folder.
    """

    def _build_generator_layers(
        self, *, z_dim: int, cond_dim: int, ngf: int, output_size: int, code_channels: int,
        mapping_mid_channels: int, num_mapping_blocks: int, prompt_layers: Sequence[int], bridge_scale: float,
        hidden_size: int, grid_size: int, vision_model: nn.Module,
    ) -> None:  # fmt: skip
        """Create the layers (``vision_model`` maps ``(bridge_feature, prompts, prompt_layers)`` to a (B, hidden, g,
        g) map) and remember the settings the forward pass reads."""
        self.z_dim, self.cond_dim, self.grid_size = z_dim, cond_dim, grid_size
        self.code_channels, self.prompt_layers, self.bridge_scale = code_channels, list(prompt_layers), bridge_scale
        cond_total = z_dim + cond_dim
        channels = generator_channels(ngf, output_size)
        self.fc_code = nn.Linear(z_dim, code_channels * grid_size**2)
        self.mapping_blocks = nn.ModuleList(
            [MappingBlock(code_channels, mapping_mid_channels, code_channels, cond_total) for _ in range(num_mapping_blocks)]
        )
        self.conv_fuse = nn.Conv2d(code_channels, hidden_size, 5, 1, 2)
        self.fc_prompt = nn.Linear(cond_total, len(self.prompt_layers) * hidden_size)
        self.vision_model = vision_model
        self.conv_bridge_out = nn.Conv2d(hidden_size, channels[0], 5, 1, 2)
        sizes = generator_block_sizes(len(channels) - 1, output_size)
        self.blocks = nn.ModuleList(
            [GeneratorBlock(c_in, c_out, cond_total, size) for c_in, c_out, size in zip(channels[:-1], channels[1:], sizes)]
        )
        self.conv_out = nn.Conv2d(channels[-1], 3, 3, 1, 1)

    def condition(self, z: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """The condition vector fed to every modulated layer: ``cat([z, text_embeds], dim=1)``."""
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"`z` must have shape (batch, {self.z_dim}), got {tuple(z.shape)}.")
        if text_embeds.ndim != 2 or text_embeds.shape[1] != self.cond_dim:
            raise ValueError(f"`text_embeds` must have shape (batch, {self.cond_dim}), got {tuple(text_embeds.shape)}.")
        if z.shape[0] != text_embeds.shape[0]:
            raise ValueError(f"`z` has batch {z.shape[0]} but `text_embeds` has batch {text_embeds.shape[0]}.")
        return torch.cat([z, text_embeds.to(z.dtype)], dim=1)

    def bridge(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The CLIP adapter: noise code -> bridge feature -> frozen ViT with prompts -> (B, 8*ngf, g, g)."""
        h = self.fc_code(z).view(z.shape[0], self.code_channels, self.grid_size, self.grid_size)
        for block in self.mapping_blocks:
            h = block(h, cond)
        bridge_feature = self.conv_fuse(h)
        prompts = self.fc_prompt(cond).view(z.shape[0], len(self.prompt_layers), -1)
        vit_out = self.vision_model(bridge_feature, prompts, self.prompt_layers)
        return self.conv_bridge_out(bridge_feature + self.bridge_scale * vit_out)

    def _run_blocks(self, h: torch.Tensor, cond: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        for block in self.blocks[start:stop]:
            h = block(h, cond)
        return h

    def to_rgb(self, h: torch.Tensor) -> torch.Tensor:
        """LeakyReLU(0.2) + 3x3 conv to RGB; no tanh (callers clamp to [-1, 1])."""
        return self.conv_out(F.leaky_relu(h, 0.2))

    def generate_images(self, z: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, S, S), roughly in [-1, 1] (not clamped)."""
        cond = self.condition(z, text_embeds)
        return self.to_rgb(self._run_blocks(self.bridge(z, cond), cond, 0, len(self.blocks)))
