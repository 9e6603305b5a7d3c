"""One GALIP training step (D update, then G update, as in the official training loop) and its loss settings."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterator, Optional

import torch
from torch import nn
from transformers import CLIPTextModelWithProjection, CLIPVisionModelWithProjection

from galip_diffusers.models.discriminator import GALIPDiscriminator
from galip_diffusers.training.losses import MISMATCH_MODES, discriminator_loss, generator_loss, mismatched_pairs

# ------------------------------------------------------------------------------------------------------ train step
@dataclass
class GALIPLossConfig:
    """GALIP's loss weights (the official defaults: MA-GP weight 2.0 and power 6, CLIP-similarity weight 4.0)."""

    sim_weight: float = 4.0
    magp_weight: float = 2.0
    magp_power: float = 6.0
    mismatch_shift: int = 1
    #: how D's mismatched captions are chosen: "roll" (GALIP's ``roll(s, mismatch_shift)``) or "nearest" (the
    #: batch's most similar different caption: hard negatives, see
    #: :func:`~galip_diffusers.training.losses.nearest_mismatched_text_embeds`)
    mismatch: str = "roll"
    #: weight of an L1 "anchor" term in G's loss (not in GALIP; 0 disables it): ``G(0, s)``, the sample at the mean
    #: noise, is pulled towards the real image of caption ``s``. Only the zero noise is anchored, so the other
    #: noises stay free for the adversarial loss (diversity across seeds is measured, not assumed).
    reconstruction_weight: float = 0.0
    #: where the anchor's zero-noise samples come from. ``None``: an extra ``G(0, s)`` pass over the whole batch, so
    #: G runs twice per step. A fraction ``f`` in (0, 1): the step's one G pass draws its first
    #: :meth:`anchored_count` samples at z = 0 and anchors those; D and the other G terms read them as ordinary
    #: fakes. Half of G's cost is saved; each step anchors fewer captions.
    reconstruction_fraction: Optional[float] = None
    #: conditioning augmentation (StackGAN's idea, not in GALIP; 0 disables it): G reads ``s + n`` with Gaussian
    #: ``n`` of norm about ``condition_noise * |s|``, so it must draw the caption's image from a neighbourhood of
    #: its embedding, not only from the exact point. D and the CLIP-similarity term read the clean ``s``; the anchor
    #: still pulls ``G(0, s + n)`` towards the caption's image.
    condition_noise: float = 0.0

    def __post_init__(self) -> None:
        if not (self.condition_noise >= 0 and math.isfinite(self.condition_noise)):
            raise ValueError(f"`condition_noise` must be a finite number >= 0, got {self.condition_noise}")
        if self.mismatch not in MISMATCH_MODES:
            raise ValueError(f"`mismatch` must be one of {MISMATCH_MODES}, got {self.mismatch!r}.")
        if not (self.reconstruction_weight >= 0 and math.isfinite(self.reconstruction_weight)):
            raise ValueError(f"`reconstruction_weight` must be a finite number >= 0, got {self.reconstruction_weight}")
        fraction = self.reconstruction_fraction
        if fraction is not None:
            if not 0 < fraction < 1:
                raise ValueError(f"`reconstruction_fraction` must be None (a separate G(0, s) pass) or a fraction in "
                                 f"(0, 1), got {fraction}")
            if self.reconstruction_weight == 0:
                raise ValueError("`reconstruction_fraction` anchors part of the batch at zero noise, which only makes "
                                 "sense with `reconstruction_weight` > 0 (got 0).")

    def anchored_count(self, batch_size: int) -> int:
        """How many samples of a batch are drawn at zero noise and anchored within the G pass: 0 without
        ``reconstruction_fraction``, else ``round(f * batch_size)`` kept in ``[1, batch_size - 1]``, so at least one
        sample always has free noise."""
        if self.reconstruction_fraction is None:
            return 0
        return max(1, min(batch_size - 1, round(self.reconstruction_fraction * batch_size)))

    def generator_condition(self, text_embeds: torch.Tensor) -> torch.Tensor:
        """The sentence embeddings G reads: ``text_embeds`` (detached), plus the :attr:`condition_noise` if any. The
        noise of row ``i`` has norm about ``condition_noise * |s_i|`` (per-coordinate std ``|s_i| / sqrt(dim)``)."""
        text_embeds = text_embeds.detach()
        if self.condition_noise == 0:
            return text_embeds
        scale = text_embeds.norm(dim=-1, keepdim=True) / math.sqrt(text_embeds.shape[-1])
        return text_embeds + self.condition_noise * scale * torch.randn_like(text_embeds)


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Temporarily set ``requires_grad=False`` on a module's trainable parameters (restored on exit)."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def galip_train_step(
    accelerator,
    generator: nn.Module,
    discriminator: nn.Module,
    image_encoder: CLIPVisionModelWithProjection,
    text_encoder: CLIPTextModelWithProjection,
    optimizer_g: torch.optim.Optimizer,
    optimizer_d: torch.optim.Optimizer,
    pixel_values: torch.Tensor,
    input_ids: torch.Tensor,
    noise: torch.Tensor,
    loss_config: GALIPLossConfig = GALIPLossConfig(),
    max_grad_norm: Optional[float] = None,
    adversarial: bool = True,
) -> dict[str, torch.Tensor]:
    """One GALIP step (D update, then G update), as in the official training loop; with ``adversarial=False``, a
    reconstruction warm-up step instead (:func:`reconstruction_step`: G fitted by L1 at zero noise, D untouched).

    1. ``s = text_encoder(input_ids).text_embeds`` (frozen); real CLIP features (frozen image encoder).
    2. ``fake = G(noise, s)`` once (plus ``loss_config.condition_noise`` on the ``s`` G reads, if any); its CLIP
       features and image embeddings keep their graph for the G update. With ``loss_config.reconstruction_fraction``,
       the first ``loss_config.anchored_count(B)`` noises are zeros.
    3. D: one (wrapped) discriminator call on ``[real; real; fake.detach()]`` with ``[s; s_mis; s]`` (features, and
       the images themselves for a D with a pixel path; ``s_mis`` per ``loss_config.mismatch``), then
       ``L_D = L_real + (L_fake + L_mis) / 2 + MA-GP`` (hinge terms per head, MA-GP on the summed real logits,
       unscaled from the GradScaler's scale under fp16), backward, ``optimizer_d.step()``.
    4. G: the updated D (parameters temporarily frozen, so D's gradients and its DDP reducer are untouched) on the fake
       features, ``L_G = -mean(C(D(f_fake), s)) - sim_weight * mean(cos(img_emb(fake), s))`` (plus
       ``reconstruction_weight * mean|G(0, s) - x|`` over the anchored samples, or over an extra zero-noise pass),
       backward through the frozen ViTs, ``optimizer_g.step()``.

    Call it inside ``accelerator.accumulate(generator, discriminator)``. ``generator``/``discriminator`` may be wrapped
    by ``accelerator.prepare``. Returns detached losses and, on optimisation steps, the gradient norms.
    """
    if not adversarial:
        return reconstruction_step(accelerator, generator, text_encoder, optimizer_g, pixel_values, input_ids,
                                   noise.shape[1], max_grad_norm)
    unwrapped_d: GALIPDiscriminator = accelerator.unwrap_model(discriminator)
    batch = pixel_values.shape[0]
    logs: dict[str, torch.Tensor] = {}
    with accelerator.autocast():
        with torch.no_grad():
            text_embeds = text_encoder(input_ids).text_embeds.float()
            real_features, _ = unwrapped_d.extract_features(image_encoder, pixel_values)
        real_features = real_features.float().requires_grad_(True)
        text_embeds.requires_grad_(True)
        mismatched = mismatched_pairs(text_embeds, loss_config.mismatch, loss_config.mismatch_shift)

        anchored = loss_config.anchored_count(batch)
        if anchored:
            noise = torch.cat([torch.zeros_like(noise[:anchored]), noise[anchored:]])
        condition = loss_config.generator_condition(text_embeds)  # what G reads: s, plus the condition noise if any
        fake = generator(noise, condition)
        fake_features, fake_image_embeds = unwrapped_d.extract_features(image_encoder, fake)

        # ---- discriminator (the pixel path, if any, reads [real; real; fake] too, and its real pixels join MA-GP)
        real_pixels = pixel_values.detach().float().requires_grad_(True) if unwrapped_d.has_pixel_path else None
        logits = discriminator(
            torch.cat([real_features, real_features, fake_features.detach().float()]),
            torch.cat([text_embeds, mismatched, text_embeds.detach()]),
            None if real_pixels is None else torch.cat([real_pixels, real_pixels, fake.detach().float()]),
            per_head=True,
        )
        real_logits, mismatch_logits, fake_logits = logits.float().split(batch)
        scaler = accelerator.scaler
        grad_scale = scaler.get_scale() if scaler is not None and scaler.is_enabled() else None
        d_losses = discriminator_loss(
            real_logits, fake_logits, mismatch_logits, real_features, text_embeds, magp_weight=loss_config.magp_weight,
            magp_power=loss_config.magp_power, grad_scale=grad_scale, pixel_values=real_pixels,
        )  # fmt: skip
    _update(accelerator, discriminator, optimizer_d, d_losses["loss"], max_grad_norm, logs, "grad_norm_d")

    # ---- generator (through the updated D)
    with frozen(unwrapped_d), accelerator.autocast():
        g_logits = unwrapped_d(fake_features, text_embeds.detach(), fake if unwrapped_d.has_pixel_path else None)
        g_losses = generator_loss(g_logits, fake_image_embeds, text_embeds.detach(), loss_config.sim_weight)
        if loss_config.reconstruction_weight > 0:
            if anchored:
                reconstruction = _anchor_l1(fake[:anchored], pixel_values[:anchored])
            else:
                reconstruction = _anchor_l1(generator(torch.zeros_like(noise), condition), pixel_values)
            g_losses["loss_reconstruction"] = reconstruction
            g_losses["loss"] = g_losses["loss"] + loss_config.reconstruction_weight * g_losses["loss_reconstruction"]
    _update(accelerator, generator, optimizer_g, g_losses["loss"], max_grad_norm, logs, "grad_norm_g")

    names = {"loss_d": "loss", "loss_d_real": "loss_real", "loss_d_fake": "loss_fake", "loss_d_mismatch": "loss_mismatch",
             "loss_d_magp": "loss_magp"}  # fmt: skip
    logs.update({key: d_losses[name] for key, name in names.items()})
    logs.update(loss_g=g_losses["loss"], loss_g_adversarial=g_losses["loss_adversarial"],
                clip_similarity=g_losses["clip_similarity"])  # fmt: skip
    if "loss_reconstruction" in g_losses:
        logs["loss_g_reconstruction"] = g_losses["loss_reconstruction"]
    return {k: v.detach().float() for k, v in logs.items()}


def reconstruction_step(accelerator, generator: nn.Module, text_encoder: CLIPTextModelWithProjection,
                        optimizer_g: torch.optim.Optimizer, pixel_values: torch.Tensor, input_ids: torch.Tensor,
                        z_dim: int, max_grad_norm: Optional[float] = None) -> dict[str, torch.Tensor]:
    """A warm-up step without D (``train_galip.py --reconstruction_warmup_steps``): ``L_G = mean|G(0, s) - x|`` over
    the whole batch, backward, ``optimizer_g.step()``.

    Not part of GALIP. With one image per caption, a generator fitted first by plain regression at zero noise learns
    the caption-to-image map many times faster per second than through the GAN (the emoji diagnostic in
    training/README.md); the GAN steps that follow then free the other noises. Returns ``loss_g``,
    ``loss_g_reconstruction`` (the same value) and, on optimisation steps, ``grad_norm_g``."""
    logs: dict[str, torch.Tensor] = {}
    with accelerator.autocast():
        with torch.no_grad():
            text_embeds = text_encoder(input_ids).text_embeds.float()
        zeros = torch.zeros(pixel_values.shape[0], z_dim, device=pixel_values.device)
        loss = _anchor_l1(generator(zeros, text_embeds), pixel_values)
    _update(accelerator, generator, optimizer_g, loss, max_grad_norm, logs, "grad_norm_g")
    logs.update(loss_g=loss, loss_g_reconstruction=loss)
    return {k: v.detach().float() for k, v in logs.items()}


def _anchor_l1(anchor: torch.Tensor, pixel_values: torch.Tensor) -> torch.Tensor:
    """``mean|G(0, s) - x|``: zero-noise samples against their captions' real images (``reconstruction_weight``)."""
    if anchor.shape != pixel_values.shape:
        raise ValueError(f"reconstruction needs real images of the generator's size {tuple(anchor.shape[1:])}, "
                         f"got {tuple(pixel_values.shape[1:])}: set --resolution to the output size")
    return (anchor.float() - pixel_values.float()).abs().mean()


def _update(accelerator, model: nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor,
            max_grad_norm: Optional[float], logs: dict[str, torch.Tensor], norm_key: str) -> None:  # fmt: skip
    """Backward ``loss``, record the gradient norm of ``model`` under ``logs[norm_key]`` on optimisation steps (clipped
    to ``max_grad_norm``), then step and zero ``optimizer``."""
    accelerator.backward(loss)
    if accelerator.sync_gradients:
        logs[norm_key] = _grad_norm(accelerator, model, max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _grad_norm(accelerator, model: nn.Module, max_norm: Optional[float]) -> torch.Tensor:
    """Total gradient norm of a model's trainable parameters (clipped to ``max_norm`` if given; unscaled under fp16)."""
    params = [p for p in model.parameters() if p.requires_grad]
    norm = accelerator.clip_grad_norm_(params, max_norm if max_norm is not None else float("inf"))
    return torch.as_tensor(norm).detach()
