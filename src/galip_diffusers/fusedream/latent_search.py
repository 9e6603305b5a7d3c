"""Over-parameterised latents and the update rules of FuseDream-style latent search (Liu et al., arXiv 2112.01573).

A vector ``x`` (a GALIP noise ``z`` or a sentence embedding) is written as a per-coordinate convex combination of a
``k``-vector basis, ``x = sum_i softmax(W)_i * B_i`` (softmax over ``i``, separately for every coordinate); both the
basis ``B`` and the logits ``W`` are trained. The extra parameters make the CLIP objective much easier to climb than a
direct search over ``x``, while ``x`` stays inside the hull of good starting points.
"""

from __future__ import annotations

import torch
from torch import nn


class OverparameterizedLatent(nn.Module):
    r"""A batch of over-parameterised vectors: ``x[b] = sum_i softmax(W[b], dim=0)_i * basis[b, i]``.

    Args:
        basis (`torch.Tensor`): (B, k, D) starting basis (copied into a float32 parameter).
        clamp (`float`, *optional*): after every optimiser step, :meth:`project_` clamps the basis to ±`clamp`
            (FuseDream clamps the noise basis to ±2; the sentence-embedding basis is left unclamped).
        init_logits (`torch.Tensor`, *optional*): (B, k, D) or broadcastable starting logits; zeros (uniform weights,
            so that ``x`` starts at the basis mean) by default.
        trainable (`bool`, defaults to `True`): whether the basis and the logits take gradients.
    """

    def __init__(
        self, basis: torch.Tensor, clamp: float | None = None, init_logits: torch.Tensor | None = None,
        trainable: bool = True,
    ):
        super().__init__()
        if basis.ndim != 3:
            raise ValueError(f"`basis` must have shape (batch, k, dim), got {tuple(basis.shape)}.")
        logits = torch.zeros_like(basis, dtype=torch.float32)
        if init_logits is not None:
            logits = logits + init_logits.to(logits)
        self.basis = nn.Parameter(basis.detach().float().clone(), requires_grad=trainable)
        self.logits = nn.Parameter(logits, requires_grad=trainable)
        self.clamp = clamp

    @property
    def weights(self) -> torch.Tensor:
        """The per-coordinate simplex weights ``softmax(W, dim=1)``, shape (B, k, D)."""
        return torch.softmax(self.logits, dim=1)

    def forward(self) -> torch.Tensor:
        """The current vectors, shape (B, D)."""
        return (self.weights * self.basis).sum(dim=1)

    @torch.no_grad()
    def project_(self) -> None:
        """Apply the box constraint on the basis (call after each optimiser step)."""
        if self.clamp is not None:
            self.basis.clamp_(-self.clamp, self.clamp)


def top_k_indices(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` best scores in every row of ``scores`` (B, M), best first (ties: lower index first)."""
    if not 1 <= k <= scores.shape[1]:
        raise ValueError(f"`top_k` must be in [1, num_candidates={scores.shape[1]}], got {k}.")
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    return order[:, :k]


def gather_rows(values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """``values`` (B, M, D) indexed by ``indices`` (B, k) along M: (B, k, D)."""
    return torch.gather(values, 1, indices[..., None].expand(-1, -1, values.shape[-1]))


def per_sample_dot(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    """Sum over parameters and over all non-batch dimensions of ``a * b``: shape (B,)."""
    return sum((x * y).flatten(1).sum(1) for x, y in zip(a, b))


def dynamic_barrier_direction(
    grad_f: list[torch.Tensor], grad_g: list[torch.Tensor], alpha: float, eps: float = 1e-12
) -> list[torch.Tensor]:
    r"""Update direction of dynamic-barrier gradient descent (Gong & Liu, 2021) for ``min f`` subject to ``g`` being
    minimised (the lower level of a bi-level problem), per sample:

    ``v = grad_f + lambda * grad_g`` with ``lambda = max(0, alpha * |grad_g|^2 - <grad_f, grad_g>) / |grad_g|^2``,

    the smallest multiplier for which ``<v, grad_g> >= alpha * |grad_g|^2``: every step keeps decreasing ``g`` (to first
    order), and ``f`` is minimised in the remaining directions. Parameters must have the batch as their first dim.
    """
    norm_g = per_sample_dot(grad_g, grad_g)
    dot = per_sample_dot(grad_f, grad_g)
    lam = torch.clamp(alpha * norm_g - dot, min=0) / (norm_g + eps)
    return [gf + lam.view(-1, *([1] * (gf.ndim - 1))) * gg for gf, gg in zip(grad_f, grad_g)]
