"""Helpers of FuseDream-style composed generation on GALIP: spatial masks, mask-aware candidate scoring and the
closeness distance of the bi-level objective.

Masks are soft partitions: ``J`` non-negative maps, one per object, normalised to sum to one at every location
(locations where all masks are zero get equal weights). They are given at any resolution and resized bilinearly to the
G-block resolution (feature blend) and to the output resolution (per-object decoding and the pixel collage).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MASK_LAYOUTS = ("split", "center")
CLOSENESS_MODES = ("scorer", "generator")
DECODE_CONDITIONS = ("mix", "joint")
CONSTRAINTS = ("barrier", "penalty")


def default_masks(num_objects: int, size: int = 64, layout: str = "split", softness: float = 0.05) -> torch.Tensor:
    """Default soft masks, shape (num_objects, size, size).

    ``"split"``: vertical strips, object ``j`` centred at ``(j + 0.5) / J`` of the width (two objects: left and right
    halves), with soft boundaries of width ~``softness``. ``"center"`` (two objects only): object 1 under a centred
    Gaussian (std 1/4 of the side), object 0 (the surround, e.g. a background prompt) under its complement.
    """
    if layout not in MASK_LAYOUTS:
        raise ValueError(f"`mask_layout` must be one of {MASK_LAYOUTS}, got {layout!r}.")
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    if layout == "split":
        centres = (torch.arange(num_objects, dtype=torch.float32) + 0.5) / num_objects
        logits = -(coords[None, :] - centres[:, None]).abs() / softness
        return torch.softmax(logits, dim=0)[:, None, :].expand(num_objects, size, size).contiguous()
    if num_objects != 2:
        raise ValueError(f'`mask_layout="center"` composes exactly 2 objects, got {num_objects}; use "split" or masks.')
    r2 = (coords[:, None] - 0.5) ** 2 + (coords[None, :] - 0.5) ** 2
    inner = torch.exp(-r2 / (2 * 0.25**2))
    return torch.stack([1 - inner, inner])


def prepare_masks(masks: torch.Tensor, num_objects: int, batch_size: int) -> torch.Tensor:
    """Validate user masks ((J, h, w) or (B, J, h, w), non-negative) and return normalised weights (B, J, h, w)."""
    if not isinstance(masks, torch.Tensor):
        raise TypeError(f"`masks` must be a torch.Tensor of shape (num_objects, H, W), got {type(masks).__name__}.")
    if masks.ndim == 3:
        masks = masks.unsqueeze(0).expand(batch_size, -1, -1, -1)
    if masks.ndim != 4 or masks.shape[1] != num_objects or masks.shape[0] not in (1, batch_size):
        raise ValueError(
            f"`masks` must have shape ({num_objects}, H, W) or ({batch_size}, {num_objects}, H, W) (one map per object "
            f"prompt), got {tuple(masks.shape)}."
        )
    if masks.shape[-1] < 1 or masks.shape[-2] < 1:
        raise ValueError(f"`masks` must have a non-empty spatial size, got {tuple(masks.shape)}.")
    masks = masks.float().expand(batch_size, -1, -1, -1)
    if not torch.isfinite(masks).all() or (masks < 0).any():
        raise ValueError("`masks` must be finite and non-negative (soft weights, typically in [0, 1]).")
    return normalize_masks(masks)


def normalize_masks(masks: torch.Tensor) -> torch.Tensor:
    """Divide by the sum over objects (dim 1); where the sum is zero every object gets ``1 / J``."""
    total = masks.sum(dim=1, keepdim=True)
    uniform = torch.full_like(masks, 1.0 / masks.shape[1])
    return torch.where(total > 0, masks / total.clamp_min(1e-12), uniform)


def resize_masks(weights: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of normalised weights (B, J, h, w) to ``size`` x ``size`` (still a partition of unity)."""
    if weights.shape[-2:] == (size, size):
        return weights
    return normalize_masks(F.interpolate(weights, size=(size, size), mode="bilinear", align_corners=False))


def region_mean(images: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The ``weight``-weighted mean colour of ``images`` (N, 3, H, W) over a region ``weight`` (N, 1, H, W), as
    (N, 3, 1, 1)."""
    return (images * weight).sum(dim=(2, 3), keepdim=True) / weight.sum(dim=(2, 3), keepdim=True).clamp_min(1e-6)


def fill_outside(images: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Keep ``images`` (N, 3, H, W) where ``weight`` (N, 1, H, W) is 1 and blend towards the weighted mean colour of
    the kept region elsewhere: a neutral way to score only an object's own region with CLIP."""
    return weight * images + (1 - weight) * region_mean(images, weight)


def outside_spread(images: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """How much ``images`` (N, 3, H, W) vary *outside* the region ``weight`` (N, 1, H, W): the ``(1 - weight)``-weighted
    mean squared distance of the pixels to their weighted mean colour there, (N,). It is ~0 when a candidate's object
    lies wholly inside its region on a plain surround, and grows with whatever spills over the region's boundary."""
    outside = 1 - weight
    spread = (images - region_mean(images, outside)).square().sum(dim=1, keepdim=True) * outside
    return spread.sum(dim=(1, 2, 3)) / outside.sum(dim=(1, 2, 3)).clamp_min(1e-6)


def feature_distance(features_a: tuple[torch.Tensor, ...], features_b: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """LPIPS-like distance without learned weights, per sample (B,): tokens (or channels) are L2-normalised along their
    feature dimension, then the squared difference is averaged over positions and summed over layers / 2."""
    total = 0.0
    for a, b in zip(features_a, features_b):
        dim = -1 if a.ndim == 3 else 1  # (B, tokens, C) from the scorer; (B, C, H, W) from the generator
        diff = F.normalize(a.float(), dim=dim) - F.normalize(b.float(), dim=dim)
        total = total + diff.square().sum(dim=dim).flatten(1).mean(1) / 2
    return total
