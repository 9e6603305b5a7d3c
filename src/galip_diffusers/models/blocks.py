"""Building blocks shared by the GALIP generator and discriminator.

The names follow the paper: an *Affine* modulation predicts per-channel scale and shift from the condition vector
``cond = cat([z, text_embeds])``; a *fusion block* (DFBLK in the paper) stacks two modulations; the *mapping block*
(M_Block) builds the "bridge feature" that is fed to the frozen CLIP-ViT; the *generator block* (G_Block) upsamples;
the *discriminator block* (D_Block) refines CLIP features in Mate-D; the *pixel down block* builds the optional pixel
path of the discriminator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
