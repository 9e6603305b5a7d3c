"""GALIP's noise: ``z ~ N(0, I)``, optionally truncated. Shared by ``GALIPPipeline`` and the fast runtime, so that the
same ``torch.Generator`` gives the same noise in both. Torch only."""

from __future__ import annotations

from typing import Any, Callable

import torch

from galip_core.finite import check_number_in_range, number_in_range, shown_value

TRUNCATION_MODES = ("resample", "clamp")

#: the seeds ``torch.Generator.manual_seed`` takes as they are: it also accepts -2**63 to -1, but wraps them modulo
#: 2**64 onto large positive seeds (-1 draws what 2**64 - 1 draws), so two "different" seeds would give one image
SEED_RANGE = (0, 2**64 - 1)

#: float32 copies of the noise alive at once while :func:`sample_noise` resamples a truncation: the noise, a fresh
#: draw and the bool mask of the values beyond the bound (a quarter copy): 2.25 measured above ~128 MiB of noise in a
#: fresh process and after loading a model, as in ``galip generate``; 2.75 to 3.25 late in a long test process (the
#: heap's state); below ~128 MiB, glibc's heap can keep up to ~100 MiB of freed masks more
TRUNCATION_NOISE_COPIES = 3.0


def check_seed(name: str, seed: object) -> int:
    """``seed`` as an ``int`` if it lies in :data:`SEED_RANGE`, else a ``ValueError`` naming ``name`` and the range
    (a negative seed would alias a large one, see :data:`SEED_RANGE`)."""
    if not number_in_range(seed, *SEED_RANGE, integer=True):
        raise ValueError(f"{name} must be an integer from 0 to 2**64 - 1 (torch.Generator.manual_seed wraps a "
                         f"negative seed onto a large one, so -1 would repeat 2**64 - 1), got {shown_value(seed)}.")
    return int(seed)


def noise_peak_bytes(num_images: int, z_dim: int, truncation: float | None, dtype_bytes: int = 4) -> int:
    """The most memory drawing ``num_images`` noise vectors from one generator holds (float32): one copy, or
    :data:`TRUNCATION_NOISE_COPIES` while a truncation (not ``None`` or 0) resamples (:func:`sample_noise`), plus
    the cast to a pipeline dtype of ``dtype_bytes`` other than float32's 4."""
    copies = (TRUNCATION_NOISE_COPIES if truncation else 1) + (dtype_bytes / 4 if dtype_bytes != 4 else 0)
    return int(copies * 4 * num_images * z_dim)


def check_truncation_mode(truncation_mode: str) -> None:
    """Raise a ``ValueError`` naming the allowed values for an unknown ``truncation_mode``."""
    if truncation_mode not in TRUNCATION_MODES:
        raise ValueError(f"`truncation_mode` must be one of {TRUNCATION_MODES}, got {truncation_mode!r}.")


def check_generator(generator: Any, count: int | None = None, per: str = "image") -> None:
    """``TypeError`` unless ``generator`` is ``None``, a ``torch.Generator`` or a list of them; with ``count``, a
    ``ValueError`` unless a list holds exactly ``count`` generators (one per ``per``: an image, a noise endpoint)."""
    items = generator if isinstance(generator, list) else [generator]
    if generator is not None and not all(isinstance(g, torch.Generator) for g in items):
        raise TypeError("`generator` must be None, a `torch.Generator` or a list of them (one per image), got "
                        f"{type(generator).__name__}" + (f" of {sorted({type(g).__name__ for g in items})}"
                                                          if isinstance(generator, list) else "") + ".")
    if count is not None and isinstance(generator, list) and len(generator) != count:
        raise ValueError(f"You passed a list of {len(generator)} generators for {count} {per}s; pass one generator "
                         f"per {per} or a single one.")


def check_truncation(truncation: Any) -> None:
    """``ValueError`` unless ``truncation`` is ``None`` or ``0`` (both: no truncation) or a finite number > 0."""
    if truncation is not None:
        check_number_in_range("`truncation` (None or 0: off)", truncation, 0)


def check_latents_without_truncation(latents: Any, truncation: Any) -> None:
    """Given ``latents`` are used as they are, so an explicit ``truncation`` (not ``None`` or ``0``) would be
    silently ignored: refuse the pair (the model's recommended truncation applies only to noise the pipeline draws)."""
    if latents is not None and truncation is not None and truncation != 0:
        raise ValueError(
            f"`truncation`={truncation!r} applies to the noise the pipeline draws, but `latents` were given and are "
            "used as they are: truncate them yourself (e.g. `latents.clamp(-t, t)`) or leave `truncation` out."
        )


def check_noise_arguments(name: str, num_images: Any, generator: Any, truncation: Any, truncation_mode: Any,
                          latents: Any = None) -> int:  # fmt: skip
    """The checks of both engines' ``prepare_latents``, before any noise is drawn: ``num_images`` (the argument
    ``name``) an integer >= 1, ``generator`` (a list: exactly one per image), ``truncation`` and ``truncation_mode``
    (checked even where no truncation applies), and no ``latents`` together with a truncation they would ignore.
    Returns ``num_images`` as an ``int``."""
    check_number_in_range(f"`{name}`", num_images, 1, integer=True)
    check_generator(generator, int(num_images))
    check_truncation(truncation)
    check_truncation_mode(truncation_mode)
    check_latents_without_truncation(latents, truncation)
    return int(num_images)


def sample_noise(
    draw: Callable[[], torch.Tensor], truncation: float | None = None, truncation_mode: str = "resample",
    max_resample_rounds: int = 1000,
) -> torch.Tensor:
    """Noise from ``draw()`` (a fresh standard-normal tensor per call), optionally truncated at ±``truncation``:
    ``"resample"`` redraws the values beyond the bound (a truncated normal), ``"clamp"`` clips them. ``None`` or ``0``:
    no truncation. The arguments are checked here, so every caller (both engines' public ``prepare_latents``) refuses
    a NaN or negative ``truncation`` and an unknown mode instead of returning NaN or constant noise. Values are
    replaced and clamped in place, so a truncation holds at most :func:`noise_peak_bytes` (the noise, one fresh draw
    and a mask), whatever the number of rounds."""
    check_truncation(truncation)
    check_truncation_mode(truncation_mode)
    check_number_in_range("`max_resample_rounds`", max_resample_rounds, 1, integer=True)
    latents = draw()
    if truncation:
        if truncation_mode == "resample":
            for _ in range(max_resample_rounds):
                outside = (latents > truncation).logical_or_(latents < -truncation)  # no float temporary
                if not outside.any():
                    break
                torch.where(outside, draw(), latents, out=latents)  # in place: no third copy
        latents.clamp_(-truncation, truncation)
    return latents


def cpu_normal(shape: tuple[int, int], generator: torch.Generator | list[torch.Generator] | None) -> torch.Tensor:
    """``N(0, I)`` noise of ``shape`` on the CPU in float32, drawn as diffusers' ``randn_tensor`` draws it there: one
    draw of the whole batch from one generator, or one row per generator from a list (which must hold ``shape[0]``)."""
    check_generator(generator, shape[0])
    if not isinstance(generator, list):
        return torch.randn(shape, generator=generator)
    return torch.cat([torch.randn((1, *shape[1:]), generator=g) for g in generator])
