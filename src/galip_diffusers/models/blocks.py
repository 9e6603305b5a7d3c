"""The discriminator's building blocks: the *discriminator block* (D_Block) refines CLIP features in Mate-D; the
*pixel down block* builds the optional pixel path. (The generator's blocks are in :mod:`galip_core.layers`.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DiscriminatorBlock(nn.Module):
    """D_Block of Mate-D: ``x + gamma * res(x) (+ beta * clip_feat)`` with learnable scalars initialised to 0.

    ``res`` is ``conv3x3 -> LReLU -> conv3x3 -> LReLU`` without biases. The 1x1 shortcut exists only when the
    channel count changes (the official checkpoints also carry an unused one for equal widths; the converter drops it).
    """

    def __init__(self, in_channels: int, out_channels: int, use_clip_feature: bool = True):
        super().__init__()
        self.conv_r = _residual_convs(in_channels, out_channels, downsample=False)
        self.conv_s = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None
        self.gamma = nn.Parameter(torch.zeros(1))
        self.beta = nn.Parameter(torch.zeros(1)) if use_clip_feature else None

    def forward(self, x: torch.Tensor, clip_feature: torch.Tensor | None = None) -> torch.Tensor:
        res = self.conv_r(x)
        shortcut = x if self.conv_s is None else self.conv_s(x)
        out = shortcut + self.gamma * res
        if self.beta is not None:
            if clip_feature is None:
                raise ValueError("`clip_feature` is required by a DiscriminatorBlock built with use_clip_feature=True.")
            out = out + self.beta * clip_feature
        return out


class PixelDownBlock(nn.Module):
    """Down-sampling residual block of the discriminator's optional pixel path (DF-GAN's D_Block shape).

    ``res`` is ``conv4x4/2 -> LReLU -> conv3x3 -> LReLU`` without biases; the shortcut is ``avgpool2(conv1x1(x))``
    (the 1x1 conv only when the channel count changes). Output ``shortcut + res`` at half the resolution.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv_r = _residual_convs(in_channels, out_channels, downsample=True)
        self.conv_s = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.conv_s is None else self.conv_s(x)
        return F.avg_pool2d(shortcut, 2) + self.conv_r(x)


def _residual_convs(in_channels: int, out_channels: int, downsample: bool) -> nn.Sequential:
    """The residual branch of the discriminator blocks: ``conv -> LReLU(0.2) -> conv3x3 -> LReLU(0.2)``, no biases;
    the first conv is 3x3, or 4x4 with stride 2 when ``downsample``."""
    kernel, stride = (4, 2) if downsample else (3, 1)
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, stride, 1, bias=False),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False),
        nn.LeakyReLU(0.2, inplace=True),
    )
