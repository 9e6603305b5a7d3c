"""GALIP's noise: ``z ~ N(0, I)``, optionally truncated. Shared by ``GALIPPipeline`` and the fast runtime, so that the
same ``torch.Generator`` gives the same noise in both. Torch only."""

from __future__ import annotations

from typing import Callable

import torch

TRUNCATION_MODES = ("resample", "clamp")


def check_truncation_mode(truncation_mode: str) -> None:
    """Raise a ``ValueError`` naming the allowed values for an unknown ``truncation_mode``."""
    if truncation_mode not in TRUNCATION_MODES:
        raise ValueError(f"`truncation_mode` must be one of {TRUNCATION_MODES}, got {truncation_mode!r}.")


def sample_noise(
    draw: Callable[[], torch.Tensor], truncation: float | None = None, truncation_mode: str = "resample",
    max_resample_rounds: int = 1000,
) -> torch.Tensor:
    """Noise from ``draw()`` (a fresh standard-normal tensor per call), optionally truncated at ±``truncation``:
    ``"resample"`` redraws the values beyond the bound (a truncated normal), ``"clamp"`` clips them."""
    latents = draw()
    if truncation is not None:
        if truncation_mode == "resample":
            for _ in range(max_resample_rounds):
                outside = latents.abs() > truncation
                if not outside.any():
                    break
                latents = torch.where(outside, draw(), latents)
        latents = latents.clamp(-truncation, truncation)
    return latents
