"""Building the models of ``training/train_galip.py`` and checking that they fit together: the CLIP towers, the
discriminator config for a CLIP, extending a discriminator, the JSON configs of the command line."""

from __future__ import annotations

import copy
import inspect
import json
import os
from typing import Any, Optional

import torch
from transformers import CLIPModel, CLIPTextModelWithProjection, CLIPVisionModelWithProjection

from galip_core.layers import AffineMLP

from galip_diffusers.models.discriminator import GALIPDiscriminator
from galip_diffusers.models.generator import GALIPGenerator
from galip_diffusers.training.data import check_resolution, default_resolution

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


@torch.no_grad()
def zero_noise_weights(generator: GALIPGenerator) -> int:
    """Zero every weight that reads the noise: ``fc_code``'s weight and the noise columns (the first ``z_dim`` of
    ``cond = cat([z, text_embeds])``) of ``fc_prompt`` and of every condition MLP's first layer. Biases and the
    text columns are kept. Returns the number of weights zeroed.

    For a generator fitted at z = 0 only (``--reconstruction_warmup_steps`` over a whole run), whose noise weights
    never received a gradient and are still their random init: afterwards every noise gives the fitted ``G(0, s)``,
    so a GAN stage starts from the fitted map instead of a random perturbation of it. The zeroed weights still get
    gradients (``dL/dW = delta z^T``), so the GAN grows them back from zero."""
    z_dim = generator.config.z_dim
    generator.fc_code.weight.zero_()
    layers = [generator.fc_prompt] + [m.linear1 for m in generator.modules() if isinstance(m, AffineMLP)]
    for layer in layers:
        layer.weight[:, :z_dim] = 0.0
    return generator.fc_code.weight.numel() + sum(layer.weight.shape[0] * z_dim for layer in layers)


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


def training_resolution(resolution: Optional[int], output_size: int, reconstruction: bool) -> int:
    """The real-image crop size (``--resolution``) of a run: the given one, else the official choice for the generator
    (:func:`~galip_diffusers.training.data.default_resolution`: the power of two at or above ``output_size``).

    With a ``reconstruction`` term (``--reconstruction_weight`` / ``--reconstruction_warmup_steps``: ``G(0, s)`` is
    compared with the real image pixel for pixel) it defaults to ``output_size`` itself, and any other given size is a
    ``ValueError`` naming ``--resolution`` and the generator's ``output_size``, raised before the run starts."""
    if not reconstruction:
        return resolution or default_resolution(output_size)
    if resolution is not None and resolution != output_size:
        raise ValueError(f"--resolution {resolution} differs from the generator's output_size {output_size}, but "
                         "--reconstruction_weight / --reconstruction_warmup_steps compare G(0, s) with the real image "
                         f"pixel for pixel: pass --resolution {output_size}, or leave it out (with these flags it "
                         "defaults to the output size).")
    return output_size


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
