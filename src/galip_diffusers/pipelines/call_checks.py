"""Argument checks of ``GALIPPipeline.__call__`` and ``interpolate``: types, shapes, finiteness (a NaN noise or
embedding would make a black image), and an up-front estimate of the memory a call needs, so that
``num_images_per_prompt=10**6`` is refused at once, naming the argument, instead of running until an allocation
fails minutes later."""

from __future__ import annotations

from typing import Any, Mapping

import torch

from galip_core.finite import check_finite_tensor, check_number_in_range
from galip_core.layers import generator_channels
from galip_core.machine import available_bytes
from galip_core.noise import (  # noqa: F401  (check_latents_without_truncation: used by the pipelines)
    check_generator, check_latents_without_truncation, check_truncation, check_truncation_mode,
)

OUTPUT_TYPES = ("pil", "np", "pt", "latent")


def _check_prompt(prompt: Any) -> int:
    if not isinstance(prompt, (str, list)):
        raise TypeError(f"`prompt` has to be of type `str` or `list` but is {type(prompt)}.")
    if isinstance(prompt, list):
        if len(prompt) == 0:
            raise ValueError("`prompt` is an empty list: pass at least one prompt.")
        bad = [type(p).__name__ for p in prompt if not isinstance(p, str)]
        if bad:
            raise TypeError(f"`prompt` must be a list of `str`, but it contains {sorted(set(bad))}.")
    return 1 if isinstance(prompt, str) else len(prompt)


def _check_prompt_embeds(prompt_embeds: Any, width: int) -> int:
    if not isinstance(prompt_embeds, torch.Tensor) or prompt_embeds.ndim != 2:
        raise ValueError(f"`prompt_embeds` must be a 2-D tensor (batch, {width}).")
    if prompt_embeds.shape[1] != width or prompt_embeds.shape[0] == 0:
        raise ValueError(f"`prompt_embeds` must have shape (batch >= 1, {width}), got {tuple(prompt_embeds.shape)}.")
    check_finite_tensor("prompt_embeds", prompt_embeds)
    return prompt_embeds.shape[0]


def check_max_batch_size(max_batch_size: Any) -> None:
    if max_batch_size is not None:
        check_number_in_range("`max_batch_size` (None: one pass)", max_batch_size, 1, integer=True)


def check_call_inputs(
    config: Mapping[str, Any], prompt, num_images_per_prompt, generator, latents, prompt_embeds, output_type,
    truncation=None, truncation_mode="resample", max_batch_size=None,
) -> int:
    """The checks of ``GALIPPipeline.check_inputs`` for a generator ``config``; returns the number of images."""
    if prompt is not None and prompt_embeds is not None:
        raise ValueError(
            f"Cannot forward both `prompt`: {prompt} and `prompt_embeds` of shape {tuple(prompt_embeds.shape)}. "
            "Please make sure to only forward one of the two."
        )
    if prompt is None and prompt_embeds is None:
        raise ValueError("Provide either `prompt` or `prompt_embeds`. Cannot leave both undefined.")
    batch_size = _check_prompt(prompt) if prompt is not None else _check_prompt_embeds(prompt_embeds, config["cond_dim"])
    if not isinstance(num_images_per_prompt, int) or isinstance(num_images_per_prompt, bool):
        raise TypeError(f"`num_images_per_prompt` must be an int >= 1, got {num_images_per_prompt!r}.")
    if num_images_per_prompt < 1:
        raise ValueError(f"`num_images_per_prompt` must be >= 1, got {num_images_per_prompt}.")
    total = batch_size * num_images_per_prompt
    check_generator(generator)
    if isinstance(generator, list) and len(generator) != total:
        raise ValueError(
            f"You passed a list of {len(generator)} generators, but the call makes {total} images "
            f"({batch_size} prompt(s) x {num_images_per_prompt}); pass one generator per image or a single one."
        )
    if latents is not None:
        expected = (total, config["z_dim"])
        if not isinstance(latents, torch.Tensor) or tuple(latents.shape) != expected:
            got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise ValueError(f"`latents` must be a tensor of shape {expected}, got {got}.")
        if not latents.is_floating_point():
            raise TypeError(f"`latents` must be a floating-point tensor, got dtype {latents.dtype}.")
        check_finite_tensor("latents", latents)
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES}, got {output_type!r}.")
    check_truncation(truncation)
    check_truncation_mode(truncation_mode)
    check_max_batch_size(max_batch_size)
    return total


# ------------------------------------------------------------------------------------------------ memory estimate
def estimate_call_bytes(config: Mapping[str, Any], num_images: int, max_batch_size: int | None,
                        dtype_bytes: int = 4) -> int:  # fmt: skip
    """Bytes a call making ``num_images`` needs at its peak, roughly: every output image (kept until the end, plus a
    float copy and a uint8 copy when post-processed), the noise and embeddings, and the generator's activations for
    one chunk of ``max_batch_size`` images (all of them without chunking)."""
    size = config["output_size"]
    channels = generator_channels(config["ngf"], size)
    per_image_out = 3 * size * size * (dtype_bytes + 4 + 1) + (config["z_dim"] + config["cond_dim"]) * 4 + 1024
    # the widest G-block output at its size, a few tensors alive at once (input, fused, conv, shortcut)
    sizes = [min(2 ** (3 + i), size) for i in range(len(channels))]
    per_image_forward = 4 * max(c * s * s for c, s in zip(channels, sizes)) * dtype_bytes
    chunk = min(num_images, max_batch_size or num_images)
    return num_images * per_image_out + chunk * per_image_forward


def check_memory(argument: str, value: int, config: Mapping[str, Any], num_images: int, max_batch_size: int | None,
                 device: torch.device, dtype_bytes: int = 4) -> None:  # fmt: skip
    """``ValueError`` naming ``argument`` if a call making ``num_images`` would need more memory than ``device`` has
    free (estimated with :func:`estimate_call_bytes`; nothing is allocated to find out)."""
    needed, free = estimate_call_bytes(config, num_images, max_batch_size, dtype_bytes), available_bytes(device)
    if free is not None and needed > free:
        raise ValueError(
            f"`{argument}`={value} asks for {num_images} images of {config['output_size']} px, which need about "
            f"{needed / 2**30:.1f} GiB; {device.type} has {free / 2**30:.1f} GiB free. Make fewer images per call."
        )
