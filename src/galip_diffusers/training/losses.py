r"""GALIP's training losses, as small pure functions.

Notation (one training step, batch of B pairs): ``f_real`` are the frozen CLIP-ViT features of the real images,
``s`` the sentence embeddings (CLIP ``text_embeds``, not normalised), ``f_fake`` the features of the generated images
and ``C(D(f), s)`` the discriminator logit (:class:`~galip_diffusers.GALIPDiscriminator`). Every term is a mean over
the batch.

Discriminator::

    L_real = mean(relu(1 - C(D(f_real), s)))
    L_mis  = mean(relu(1 + C(D(f_real), s_mis)))        s_mis = roll(s, 1) (a real image with another caption;
                                                         or the batch's most similar different caption, "nearest")
    L_fake = mean(relu(1 + C(D(f_fake.detach()), s)))
    L_D    = L_real + (L_fake + L_mis) / 2 + MA-GP

With a pixel path, D has two heads (CLIP and pixels); its logit is their sum, and each head gets its own hinge terms.

Matching-aware gradient penalty (MA-GP), on the real pairs::

    g_i   = [vec(d C(D(f_real), s)_i / d f_real_i), d C(D(f_real), s)_i / d s_i]    (per sample, concatenated)
    MA-GP = weight * mean(||g_i||_2 ** power)                                        (weight 2, power 6)

Generator::

    L_G = -mean(C(D(f_fake), s)) - sim_weight * mean(cos(image_embeds(fake), s))      (sim_weight 4)
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def mismatched_text_embeds(text_embeds: torch.Tensor, shift: int = 1) -> torch.Tensor:
    """Pair every image with another sample's caption: ``roll(s, shift)`` along the batch (``s_mis[i] = s[i - shift]``).

    Needs a batch of at least 2; the result is detached (the mismatched term trains D only)."""
    if text_embeds.shape[0] < 2:
        raise ValueError(f"The mismatched pairs need a batch of at least 2, got {text_embeds.shape[0]}.")
    return torch.roll(text_embeds.detach(), shifts=shift, dims=0)


MISMATCH_MODES = ("roll", "nearest")


def nearest_mismatched_text_embeds(text_embeds: torch.Tensor, same_threshold: float = 1e-4) -> torch.Tensor:
    """Hard negatives: pair every image with the *most similar different* caption of the batch.

    ``s_mis[i] = s[j]``, ``j = argmax_{k: cos(s_i, s_k) < 1 - same_threshold} cos(s_i, s_k)`` (captions whose embeddings
    are equal to ``s_i``, itself included, are skipped). A row with no different caption falls back to ``roll(s, 1)``.
    Where :func:`mismatched_text_embeds` mostly asks D to tell apart captions that differ in everything, these pairs
    differ in one detail (on the shapes data: one attribute in 92% of pairs), so D has to read that detail.
    Needs a batch of at least 2; the result is detached."""
    rolled = mismatched_text_embeds(text_embeds, 1)
    s = F.normalize(text_embeds.detach().float(), dim=-1)
    sim = s @ s.T
    sim = sim.masked_fill(sim >= 1.0 - same_threshold, float("-inf"))
    best, index = sim.max(dim=1)
    nearest = text_embeds.detach()[index]
    return torch.where(torch.isfinite(best)[:, None], nearest, rolled)


def mismatched_pairs(text_embeds: torch.Tensor, mode: str = "roll", shift: int = 1) -> torch.Tensor:
    """The mismatched captions for D's ``L_mis``: ``mode="roll"`` (GALIP's, :func:`mismatched_text_embeds`) or
    ``"nearest"`` (hard negatives, :func:`nearest_mismatched_text_embeds`)."""
    if mode == "roll":
        return mismatched_text_embeds(text_embeds, shift)
    if mode == "nearest":
        return nearest_mismatched_text_embeds(text_embeds)
    raise ValueError(f"`mismatch` must be one of {MISMATCH_MODES}, got {mode!r}.")


def discriminator_hinge_loss(
    real_logits: torch.Tensor, fake_logits: torch.Tensor, mismatch_logits: torch.Tensor
) -> dict[str, torch.Tensor]:
    """GALIP's hinge loss for D (without MA-GP).

    Logits of shape (B,), or (B, heads) for a discriminator with several heads (``GALIPDiscriminator(...,
    per_head=True)``): then every head gets its own hinge loss and the terms are summed over heads, so one confident
    head cannot saturate the hinge for the others (as it would on the summed logit).

    Returns a dict with ``loss_real = mean(relu(1 - real))``, ``loss_fake = mean(relu(1 + fake))``,
    ``loss_mismatch = mean(relu(1 + mismatch))`` and ``loss = loss_real + (loss_fake + loss_mismatch) / 2``.
    """
    loss_real = F.relu(1.0 - real_logits).mean(0).sum()
    loss_fake = F.relu(1.0 + fake_logits).mean(0).sum()
    loss_mismatch = F.relu(1.0 + mismatch_logits).mean(0).sum()
    return {
        "loss_real": loss_real,
        "loss_fake": loss_fake,
        "loss_mismatch": loss_mismatch,
        "loss": loss_real + (loss_fake + loss_mismatch) / 2.0,
    }


def ma_gp(
    logits: torch.Tensor,
    clip_features: torch.Tensor,
    text_embeds: torch.Tensor,
    weight: float = 2.0,
    power: float = 6.0,
    grad_scale: Optional[float | torch.Tensor] = None,
    pixel_values: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    r"""Matching-aware gradient penalty: ``weight * mean(||g||^power)``, ``g`` the per-sample gradient of ``logits``
    with respect to both ``clip_features`` and ``text_embeds`` (flattened and concatenated), and also with respect to
    ``pixel_values`` when given (the real images of a discriminator with a pixel path).

    ``logits`` must have been computed from ``clip_features`` and ``text_embeds`` with ``requires_grad=True``. The
    gradients are taken with ``create_graph=True``, so the penalty is differentiable with respect to D's parameters.

    Mixed precision: with fp16 autocast the backward pass of D runs in fp16, where small gradients underflow. Pass the
    current loss scale of the ``GradScaler`` as ``grad_scale``: the logits are multiplied by it before
    ``autograd.grad`` and the gradients divided by it (in fp32) afterwards, exactly as for the main loss.
    """
    inputs = (clip_features, text_embeds) + (() if pixel_values is None else (pixel_values,))
    if not all(t.requires_grad for t in inputs):
        raise ValueError("ma_gp needs `clip_features`, `text_embeds` (and `pixel_values` if given) with requires_grad=True.")
    outputs = logits if grad_scale is None else logits.float() * grad_scale
    grads = torch.autograd.grad(
        outputs=outputs, inputs=inputs, grad_outputs=torch.ones_like(outputs), create_graph=True
    )
    grad = torch.cat([g.flatten(1).float() for g in grads], dim=1)
    if grad_scale is not None:
        grad = grad / grad_scale
    grad_norm = grad.norm(2, dim=1)
    return weight * grad_norm.pow(power).mean()


def clip_similarity(image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
    """Per-sample cosine similarity between CLIP image and text embeddings, shape (B,)."""
    return F.cosine_similarity(image_embeds.float(), text_embeds.float(), dim=-1)


def generator_loss(
    fake_logits: torch.Tensor, image_embeds: torch.Tensor, text_embeds: torch.Tensor, sim_weight: float = 4.0
) -> dict[str, torch.Tensor]:
    """GALIP's generator loss.

    Returns ``loss_adversarial = -mean(fake_logits)``, ``clip_similarity = mean(cos(image_embeds, text_embeds))`` and
    ``loss = loss_adversarial - sim_weight * clip_similarity``.
    """
    loss_adversarial = -fake_logits.float().mean()
    similarity = clip_similarity(image_embeds, text_embeds).mean()
    return {
        "loss_adversarial": loss_adversarial,
        "clip_similarity": similarity,
        "loss": loss_adversarial - sim_weight * similarity,
    }


def discriminator_loss(
    real_logits: torch.Tensor,
    fake_logits: torch.Tensor,
    mismatch_logits: torch.Tensor,
    clip_features: torch.Tensor,
    text_embeds: torch.Tensor,
    magp_weight: float = 2.0,
    magp_power: float = 6.0,
    grad_scale: Optional[float | torch.Tensor] = None,
    pixel_values: Optional[torch.Tensor] = None,
) -> dict[str, torch.Tensor]:
    """The full D loss ``L_real + (L_fake + L_mis) / 2 + MA-GP``; MA-GP on ``real_logits`` (see :func:`ma_gp`;
    ``pixel_values`` are the real images when D has a pixel path). Logits may be (B,) or (B, heads) (hinge per head,
    see :func:`discriminator_hinge_loss`; MA-GP on the summed logit).

    Returns the terms of :func:`discriminator_hinge_loss` plus ``loss_magp``; ``loss`` includes MA-GP."""
    out = discriminator_hinge_loss(real_logits.float(), fake_logits.float(), mismatch_logits.float())
    summed = real_logits if real_logits.ndim == 1 else real_logits.sum(-1)
    out["loss_magp"] = ma_gp(
        summed, clip_features, text_embeds, magp_weight, magp_power, grad_scale, pixel_values=pixel_values
    )
    out["loss"] = out["loss"] + out["loss_magp"]
    return out
