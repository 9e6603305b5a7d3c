"""The options of FuseDream's search, defined once for refinement (``GALIPFuseDreamPipeline.__call__``) and
composition (``GALIPFuseDreamPipeline.compose``); both calls also take them as keyword arguments."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

#: what the search optimises: the noise, the sentence-embedding part of the condition, or both
OPTIMIZE_TARGETS = ("noise", "text", "noise+text")


@dataclass(frozen=True)
class SearchOptions:
    """FuseDream's search settings (see ``GALIPFuseDreamPipeline.__call__`` for what each one does).

    Attributes:
        num_candidates: conditions drawn per image for the initialisation.
        top_k: candidates kept (the basis of the over-parameterisation).
        num_steps: Adam steps of the search (0: selection only).
        num_augmentations: random views of AugCLIP per step.
        lr: Adam's learning rate.
        optimize: ``"noise"``, ``"text"`` or ``"noise+text"``.
        latent_noise: std of the Gaussian noise added to the optimised vectors at every step (relative to the RMS for
            the embedding).
        noise_clamp: the noise basis is clamped to ±``noise_clamp`` (``None``: no clamp).
        candidate_text_noise: jitter of the candidates' prompt embedding, relative to its RMS (candidate 0 has none).
        num_measure_augmentations: views of the reporting AugCLIP (``scores_before`` / ``scores_after``).
        truncation: truncate the candidates' noise at ±``truncation`` (``None``: no truncation).
        max_batch_size: chunk size when rendering and scoring candidates.
    """

    num_candidates: int = 1000
    top_k: int = 5
    num_steps: int = 200
    num_augmentations: int = 32
    lr: float = 5e-3
    optimize: str = "noise+text"
    latent_noise: float = 0.01
    noise_clamp: float | None = 2.0
    candidate_text_noise: float = 0.05
    num_measure_augmentations: int = 64
    truncation: float | None = None
    max_batch_size: int = 64

    @classmethod
    def resolve(cls, options: "SearchOptions | None" = None, defaults: dict[str, Any] | None = None,
                **overrides: Any) -> "SearchOptions":  # fmt: skip
        """``options`` (or the class defaults updated with ``defaults``) with the keyword ``overrides`` applied;
        an unknown keyword is a ``TypeError`` naming the known ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"unknown search option(s) {unknown}; the options are {sorted(known)}.")
        base = options if options is not None else cls(**(defaults or {}))
        if not isinstance(base, cls):
            raise TypeError(f"`search` must be a SearchOptions, got {type(base).__name__}.")
        return replace(base, **overrides)

    def check(self) -> None:
        """Raise a ``ValueError`` naming the option and its allowed values for a bad setting."""
        for name, low in (("num_candidates", 1), ("top_k", 1), ("num_steps", 0), ("num_augmentations", 1),
                          ("num_measure_augmentations", 1)):  # fmt: skip
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"`{name}` must be an int >= {low}, got {value!r}.")
        if self.top_k > self.num_candidates:
            raise ValueError(f"`top_k` ({self.top_k}) cannot exceed `num_candidates` ({self.num_candidates}).")
        if not self.lr > 0:
            raise ValueError(f"`lr` must be positive, got {self.lr!r}.")
        if self.optimize not in OPTIMIZE_TARGETS:
            raise ValueError(f"`optimize` must be one of {OPTIMIZE_TARGETS}, got {self.optimize!r}.")
        if self.latent_noise < 0:
            raise ValueError(f"`latent_noise` must be >= 0, got {self.latent_noise!r}.")
