"""The options of FuseDream's search, defined once for refinement (``GALIPFuseDreamPipeline.__call__``) and
composition (``GALIPFuseDreamPipeline.compose``); both calls also take them as keyword arguments."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from galip_core.finite import check_number_in_range
from galip_core.noise import check_truncation

#: what the search optimises: the noise, the sentence-embedding part of the condition, or both
OPTIMIZE_TARGETS = ("noise", "text", "noise+text")


@dataclass(frozen=True)
class SearchOptions:
    """FuseDream's search settings (see ``GALIPFuseDreamPipeline.__call__`` for what each one does).

    Attributes:
        num_candidates: conditions drawn per image for the initialisation (int >= 1).
        top_k: candidates kept (the basis of the over-parameterisation; int in [1, num_candidates]).
        num_steps: Adam steps of the search (int >= 0; 0: selection only).
        num_augmentations: random views of AugCLIP per step (int >= 1).
        lr: Adam's learning rate (finite, > 0).
        optimize: ``"noise"``, ``"text"`` or ``"noise+text"``.
        latent_noise: std of the Gaussian noise added to the optimised vectors at every step (relative to the RMS for
            the embedding; finite, >= 0).
        noise_clamp: the noise basis is clamped to ±``noise_clamp`` (finite, > 0; ``None``: no clamp).
        candidate_text_noise: jitter of the candidates' prompt embedding, relative to its RMS (candidate 0 has none;
            finite, >= 0).
        num_measure_augmentations: views of the reporting AugCLIP (``scores_before`` / ``scores_after``; int >= 1).
        truncation: truncate the candidates' noise at ±``truncation`` (finite, > 0; ``None`` or 0: no truncation).
        max_batch_size: chunk size when rendering and scoring candidates (int >= 1).
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
        """Raise a ``ValueError`` naming the option and its allowed values for a bad setting (NaN/inf included)."""
        for name, low in (("num_candidates", 1), ("top_k", 1), ("num_steps", 0), ("num_augmentations", 1),
                          ("num_measure_augmentations", 1), ("max_batch_size", 1)):  # fmt: skip
            check_number_in_range(f"`{name}`", getattr(self, name), low=low, integer=True)
        if self.top_k > self.num_candidates:
            raise ValueError(f"`top_k` ({self.top_k}) cannot exceed `num_candidates` ({self.num_candidates}): it must "
                             f"be an integer in [1, {self.num_candidates}].")
        check_number_in_range("`lr`", self.lr, low=0, low_open=True)
        if self.optimize not in OPTIMIZE_TARGETS:
            raise ValueError(f"`optimize` must be one of {OPTIMIZE_TARGETS}, got {self.optimize!r}.")
        check_number_in_range("`latent_noise`", self.latent_noise, low=0)
        check_number_in_range("`candidate_text_noise`", self.candidate_text_noise, low=0)
        if self.noise_clamp is not None:
            check_number_in_range("`noise_clamp` (None: no clamp)", self.noise_clamp, low=0, low_open=True)
        check_truncation(self.truncation)
