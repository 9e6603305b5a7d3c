"""Reusable pieces of ``training/train_galip.py``: building the models, checking they fit together, one GALIP training
step, and crash-safe checkpoint directories."""

from __future__ import annotations

import contextlib
import copy
import inspect
import json
import os
import re
import shutil
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import torch
from torch import nn
from transformers import CLIPModel, CLIPTextModelWithProjection, CLIPVisionModelWithProjection

from galip_diffusers.training.losses import MISMATCH_MODES, discriminator_loss, generator_loss, mismatched_pairs
from galip_diffusers.models.discriminator import GALIPDiscriminator
from galip_diffusers.models.generator import GALIPGenerator
from galip_diffusers.training.data import check_resolution

CHECKPOINT_PREFIX = "checkpoint-"
INCOMPLETE_PREFIX = ".incomplete-checkpoint-"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


# ------------------------------------------------------------------------------------------------------ model setup
def clip_towers(clip: CLIPModel) -> tuple[CLIPTextModelWithProjection, CLIPVisionModelWithProjection]:
    """Split a transformers ``CLIPModel`` into its text and image towers with projections (same weights, fp32).

    (``CLIPTextModelWithProjection.from_pretrained(clip_folder)`` would re-initialise the projection when the CLIP's
    ``projection_dim`` is not the text config's default.)"""
    state = clip.state_dict()
    towers = []
    for cls, sub_config, prefixes in (
        (CLIPTextModelWithProjection, clip.config.text_config, ("text_model.", "text_projection.")),
        (CLIPVisionModelWithProjection, clip.config.vision_config, ("vision_model.", "visual_projection.")),
    ):
        config = copy.deepcopy(sub_config)
        config.projection_dim = clip.config.projection_dim
        tower = cls(config)
        tower.load_state_dict({k: v for k, v in state.items() if k.startswith(prefixes)}, strict=True)
        towers.append(tower.eval().requires_grad_(False))
    return towers[0], towers[1]


def load_vision_weights_into_generator(generator: GALIPGenerator, image_encoder: CLIPVisionModelWithProjection) -> None:
    """Copy the CLIP-ViT weights (embeddings, pre-LN, encoder) into the generator's frozen bridge."""
    source = image_encoder.vision_model.state_dict()
    target_keys = generator.vision_model.state_dict().keys()
    missing = [k for k in target_keys if k not in source]
    if missing:
        raise ValueError(f"The CLIP vision tower lacks weights the generator's bridge needs: {missing[:5]}...")
    generator.vision_model.load_state_dict({k: source[k] for k in target_keys}, strict=True)


def check_config_keys(config: dict[str, Any], cls: type, flag: str) -> None:
    """Raise if a JSON config names arguments that ``cls.__init__`` does not take."""
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(k for k in config if k not in allowed and not k.startswith("_"))
    if unknown:
        raise ValueError(f"{flag}: unknown keys {unknown}; allowed keys: {allowed}.")


def default_feature_layers(num_layers: int) -> list[int]:
    """ViT blocks tapped by Mate-D: the official (1, 4, 8) for 9+ blocks, else the last three (or fewer) blocks."""
    if num_layers >= 9:
        return [1, 4, 8]
    return list(range(max(0, num_layers - 3), num_layers))


def discriminator_config_from_clip(vision_config, projection_dim: int, **overrides: Any) -> dict[str, Any]:
    """A :class:`GALIPDiscriminator` config that fits a CLIP: ``hidden_size``, ``grid_size`` and ``cond_dim`` from the
    CLIP; ``out_channels = 2/3 * hidden`` and ``head_channels = hidden / 6`` (512 and 128 for ViT-B, the official
    sizes); feature layers from :func:`default_feature_layers`. ``overrides`` win."""
    vc = vision_config if isinstance(vision_config, dict) else vision_config.to_dict()
    hidden = vc["hidden_size"]
    config = {
        "hidden_size": hidden,
        "out_channels": max(8, round(hidden * 2 / 3)),
        "cond_dim": projection_dim,
        "head_channels": max(8, hidden // 6),
        "grid_size": vc["image_size"] // vc["patch_size"],
        "feature_layers": default_feature_layers(vc["num_hidden_layers"]),
    }
    config.update(overrides)
    return config


def extend_discriminator(discriminator: GALIPDiscriminator, overrides: dict[str, Any]) -> tuple[GALIPDiscriminator, list[str]]:
    """A new discriminator with ``overrides`` applied to ``discriminator``'s config, keeping every weight whose name and
    shape still fit (e.g. add a pixel path to a trained Mate-D: ``{"pixel_channels": [32, 64, 128]}``).

    Returns the new model and the names of its parameters that start fresh (sorted)."""
    check_config_keys(overrides, GALIPDiscriminator, "--discriminator_overrides")
    config = {k: v for k, v in discriminator.config.items() if not k.startswith("_")}
    extended = GALIPDiscriminator(**{**config, **overrides})
    old_state, new_state = discriminator.state_dict(), extended.state_dict()
    kept = {k: v for k, v in old_state.items() if k in new_state and new_state[k].shape == v.shape}
    extended.load_state_dict(kept, strict=False)
    return extended, sorted(set(new_state) - set(kept))


def check_models_compatible(
    generator: GALIPGenerator,
    discriminator: GALIPDiscriminator,
    image_encoder: CLIPVisionModelWithProjection,
    text_encoder: CLIPTextModelWithProjection,
    resolution: int,
) -> None:
    """Raise a ``ValueError`` naming the mismatch if the four models and the resolution cannot train together."""
    g, d = generator.config, discriminator.config
    vc = image_encoder.config
    text_dim = text_encoder.config.projection_dim
    problems = []
    if g.cond_dim != text_dim:
        problems.append(f"generator cond_dim={g.cond_dim} but the text encoder's projection_dim={text_dim}")
    if d.cond_dim != text_dim:
        problems.append(f"discriminator cond_dim={d.cond_dim} but the text encoder's projection_dim={text_dim}")
    if vc.projection_dim != text_dim:
        problems.append(f"image encoder projection_dim={vc.projection_dim} but the text encoder's is {text_dim}")
    if d.hidden_size != vc.hidden_size:
        problems.append(f"discriminator hidden_size={d.hidden_size} but the image encoder's hidden_size={vc.hidden_size}")
    grid = vc.image_size // vc.patch_size
    if d.grid_size != grid:
        problems.append(f"discriminator grid_size={d.grid_size} but the image encoder's patch grid is {grid}")
    if max(d.feature_layers) >= vc.num_hidden_layers:
        problems.append(
            f"discriminator feature_layers={list(d.feature_layers)} but the image encoder has {vc.num_hidden_layers} "
            "blocks"
        )
    for key in ("hidden_size", "image_size", "patch_size", "num_hidden_layers"):
        if g.vision_config[key] != getattr(vc, key):
            problems.append(f"generator vision_config {key}={g.vision_config[key]} but the image encoder's is "
                            f"{getattr(vc, key)}")
    if problems:
        raise ValueError("The models do not fit together: " + "; ".join(problems) + ".")
    check_resolution(resolution, g.output_size)


def load_json_config(path_or_json: Optional[str], flag: str) -> dict[str, Any]:
    """Read a JSON config given as a file path (or an inline JSON object)."""
    if path_or_json is None:
        return {}
    try:
        if os.path.isfile(path_or_json):
            with open(path_or_json, encoding="utf-8") as f:
                return json.load(f)
        return json.loads(path_or_json)
    except json.JSONDecodeError as err:
        raise ValueError(f"{flag}: {path_or_json!r} is neither a JSON file nor a JSON object ({err}).") from err


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

    def __post_init__(self) -> None:
        if self.mismatch not in MISMATCH_MODES:
            raise ValueError(f"`mismatch` must be one of {MISMATCH_MODES}, got {self.mismatch!r}.")


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
) -> dict[str, torch.Tensor]:
    """One GALIP step (D update, then G update), as in the official training loop.

    1. ``s = text_encoder(input_ids).text_embeds`` (frozen); real CLIP features (frozen image encoder).
    2. ``fake = G(noise, s)`` once; its CLIP features and image embeddings keep their graph for the G update.
    3. D: one (wrapped) discriminator call on ``[real; real; fake.detach()]`` with ``[s; s_mis; s]`` (features, and
       the images themselves for a D with a pixel path; ``s_mis`` per ``loss_config.mismatch``), then
       ``L_D = L_real + (L_fake + L_mis) / 2 + MA-GP`` (hinge terms per head, MA-GP on the summed real logits,
       unscaled from the GradScaler's scale under fp16), backward, ``optimizer_d.step()``.
    4. G: the updated D (parameters temporarily frozen, so D's gradients and its DDP reducer are untouched) on the fake
       features, ``L_G = -mean(C(D(f_fake), s)) - sim_weight * mean(cos(img_emb(fake), s))``, backward through the
       frozen ViTs, ``optimizer_g.step()``.

    Call it inside ``accelerator.accumulate(generator, discriminator)``. ``generator``/``discriminator`` may be wrapped
    by ``accelerator.prepare``. Returns detached losses and, on optimisation steps, the gradient norms.
    """
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

        fake = generator(noise, text_embeds.detach())
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
            real_logits,
            fake_logits,
            mismatch_logits,
            real_features,
            text_embeds,
            magp_weight=loss_config.magp_weight,
            magp_power=loss_config.magp_power,
            grad_scale=grad_scale,
            pixel_values=real_pixels,
        )
    accelerator.backward(d_losses["loss"])
    if accelerator.sync_gradients:
        logs["grad_norm_d"] = _grad_norm(accelerator, discriminator, max_grad_norm)
    optimizer_d.step()
    optimizer_d.zero_grad(set_to_none=True)

    # ---- generator (through the updated D)
    with frozen(unwrapped_d), accelerator.autocast():
        g_logits = unwrapped_d(fake_features, text_embeds.detach(), fake if unwrapped_d.has_pixel_path else None)
        g_losses = generator_loss(g_logits, fake_image_embeds, text_embeds.detach(), loss_config.sim_weight)
    accelerator.backward(g_losses["loss"])
    if accelerator.sync_gradients:
        logs["grad_norm_g"] = _grad_norm(accelerator, generator, max_grad_norm)
    optimizer_g.step()
    optimizer_g.zero_grad(set_to_none=True)

    logs.update(
        {
            "loss_d": d_losses["loss"],
            "loss_d_real": d_losses["loss_real"],
            "loss_d_fake": d_losses["loss_fake"],
            "loss_d_mismatch": d_losses["loss_mismatch"],
            "loss_d_magp": d_losses["loss_magp"],
            "loss_g": g_losses["loss"],
            "loss_g_adversarial": g_losses["loss_adversarial"],
            "clip_similarity": g_losses["clip_similarity"],
        }
    )
    return {k: v.detach().float() for k, v in logs.items()}


def _grad_norm(accelerator, model: nn.Module, max_norm: Optional[float]) -> torch.Tensor:
    """Total gradient norm of a model's trainable parameters (clipped to ``max_norm`` if given; unscaled under fp16)."""
    params = [p for p in model.parameters() if p.requires_grad]
    norm = accelerator.clip_grad_norm_(params, max_norm if max_norm is not None else float("inf"))
    return torch.as_tensor(norm).detach()


# ---------------------------------------------------------------------------------------------------- checkpoints
def load_checkpoint_generator(checkpoint: str, use_ema: bool = True) -> tuple[GALIPGenerator, bool]:
    """The generator of a ``train_galip.py`` ``checkpoint-N`` folder, with its EMA weights (``generator_ema/``) copied in
    when ``use_ema`` and the checkpoint has them. Returns the generator and whether EMA weights were used."""
    generator = GALIPGenerator.from_pretrained(checkpoint, subfolder="generator")
    ema_dir = os.path.join(checkpoint, "generator_ema")
    if not (use_ema and os.path.isdir(ema_dir)):
        return generator, False
    from diffusers.training_utils import EMAModel

    EMAModel.from_pretrained(ema_dir, model_cls=GALIPGenerator).copy_to(generator.parameters())
    return generator, True


def list_checkpoints(output_dir: str) -> list[tuple[int, str]]:
    """Complete checkpoints in ``output_dir`` as sorted ``(step, path)``; incomplete (temporary) dirs are ignored."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        match = _CHECKPOINT_RE.match(name)
        path = os.path.join(output_dir, name)
        if match and os.path.isdir(path):
            found.append((int(match.group(1)), path))
    return sorted(found)


def resolve_resume_checkpoint(resume_from_checkpoint: Optional[str], output_dir: str) -> Optional[str]:
    """``"latest"`` -> the newest complete checkpoint in ``output_dir`` (or None); a path or a ``checkpoint-N`` name
    in ``output_dir`` -> that path. Raises ``FileNotFoundError`` for a named checkpoint that does not exist."""
    if resume_from_checkpoint is None:
        return None
    if resume_from_checkpoint == "latest":
        checkpoints = list_checkpoints(output_dir)
        return checkpoints[-1][1] if checkpoints else None
    for candidate in (resume_from_checkpoint, os.path.join(output_dir, resume_from_checkpoint)):
        if os.path.isdir(candidate):
            return candidate
    raise FileNotFoundError(
        f"--resume_from_checkpoint {resume_from_checkpoint!r} does not exist (give 'latest', a checkpoint folder, or "
        f"a checkpoint-N name inside --output_dir)."
    )


def checkpoint_step(path: str) -> int:
    """The global step a checkpoint folder was written at (from its ``checkpoint-N`` name)."""
    match = _CHECKPOINT_RE.match(os.path.basename(os.path.normpath(path)))
    if not match:
        raise ValueError(f"Cannot read the step from checkpoint folder name {path!r} (expected 'checkpoint-<step>').")
    return int(match.group(1))


def remove_incomplete_checkpoints(output_dir: str) -> list[str]:
    """Delete leftovers of interrupted saves (main process only). Returns the removed paths."""
    removed = []
    if os.path.isdir(output_dir):
        for name in os.listdir(output_dir):
            if name.startswith(INCOMPLETE_PREFIX):
                path = os.path.join(output_dir, name)
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed


def save_checkpoint(accelerator, output_dir: str, step: int, total_limit: Optional[int] = None) -> str:
    """``accelerator.save_state`` into a temporary folder, then an atomic rename to ``checkpoint-<step>``; only then
    are the oldest checkpoints beyond ``total_limit`` deleted. A process killed mid-save leaves the previous
    checkpoints intact, and ``list_checkpoints`` never sees the partial folder. Call on every process."""
    final = os.path.join(output_dir, f"{CHECKPOINT_PREFIX}{step}")
    temporary = os.path.join(output_dir, f"{INCOMPLETE_PREFIX}{step}")
    if accelerator.is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(temporary)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if os.path.isdir(final):  # re-saving the same step (e.g. after a resume): move the old one out of the way
            stale = f"{temporary}.old"
            os.replace(final, stale)
            shutil.rmtree(stale, ignore_errors=True)
        os.replace(temporary, final)
        _fsync_dir(output_dir)
        if total_limit is not None:
            checkpoints = list_checkpoints(output_dir)
            for _, path in checkpoints[: max(0, len(checkpoints) - total_limit)]:
                shutil.rmtree(path, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
