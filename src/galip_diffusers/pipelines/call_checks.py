"""Argument checks of ``GALIPPipeline.__call__`` and ``interpolate``: types, shapes, finiteness (a NaN noise or
embedding would make a black image). The up-front memory estimate is :mod:`galip_core.memory`'s, shared with the fast
runtime."""

from __future__ import annotations

import numbers
from typing import Any, Mapping

import torch

from galip_core.finite import check_finite_tensor
from galip_core.memory import (  # noqa: F401  (used by the pipelines)
    check_max_batch_size, check_memory, encode_runs, estimate_call_bytes, postprocess_in_chunks,
)
from galip_core.text import prompt_list
from galip_core.noise import (  # noqa: F401  (check_latents_without_truncation: used by the pipelines)
    check_generator, check_latents_without_truncation, check_truncation, check_truncation_mode,
)

OUTPUT_TYPES = ("pil", "np", "pt", "latent")


def _check_prompt_embeds(prompt_embeds: Any, width: int) -> int:
    if not isinstance(prompt_embeds, torch.Tensor) or prompt_embeds.ndim != 2:
        raise ValueError(f"`prompt_embeds` must be a 2-D tensor (batch, {width}).")
    if prompt_embeds.shape[1] != width or prompt_embeds.shape[0] == 0:
        raise ValueError(f"`prompt_embeds` must have shape (batch >= 1, {width}), got {tuple(prompt_embeds.shape)}.")
    if not prompt_embeds.is_floating_point():
        raise TypeError(f"`prompt_embeds` must be a floating-point tensor, got dtype {prompt_embeds.dtype}.")
    check_finite_tensor("prompt_embeds", prompt_embeds)
    return prompt_embeds.shape[0]


def check_count(name: str, value: Any) -> int:
    """``value`` as an ``int`` if it is an integer >= 1 (numpy integers included, never a bool): ``TypeError`` for
    another type, ``ValueError`` below 1, both naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an int >= 1, got {value!r}.")
    if value < 1:
        raise ValueError(f"`{name}` must be >= 1, got {value}.")
    return int(value)


def check_latents(latents: Any, expected: tuple[int, int]) -> None:
    """Given noise must be a finite floating-point tensor of shape ``expected`` (``(num_images, z_dim)``)."""
    if not isinstance(latents, torch.Tensor) or tuple(latents.shape) != tuple(expected):
        got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
        raise ValueError(f"`latents` must be a tensor of shape {tuple(expected)}, got {got}.")
    if not latents.is_floating_point():
        raise TypeError(f"`latents` must be a floating-point tensor, got dtype {latents.dtype}.")
    check_finite_tensor("latents", latents)


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
    batch_size = len(prompt_list(prompt)) if prompt is not None else _check_prompt_embeds(prompt_embeds,
                                                                                           config["cond_dim"])
    total = batch_size * check_count("num_images_per_prompt", num_images_per_prompt)
    check_generator(generator, total)
    if latents is not None:
        check_latents(latents, (total, config["z_dim"]))
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES}, got {output_type!r}.")
    check_truncation(truncation)
    check_truncation_mode(truncation_mode)
    check_max_batch_size(max_batch_size)
    return total


def check_call_memory(pipe: Any, prompt: Any, prompt_embeds: torch.Tensor | None, total: int,
                      max_batch_size: int | None, output_type: str, device: torch.device, dtype: torch.dtype) -> None:
    """:func:`check_memory` for ``GALIPPipeline.__call__`` making ``total`` images (arguments already checked): the
    error names what asks for them (the number of prompts, or of ``prompt_embeds`` rows, times
    ``num_images_per_prompt``), counts the text encoder when prompts are encoded, and names the ``max_batch_size``
    that would fit (chunks cut the generator's and the text encoder's memory to one chunk's)."""
    count = len(prompt_list(prompt)) if prompt_embeds is None else prompt_embeds.shape[0]
    source = f"{count} prompt(s)" if prompt_embeds is None else f"`prompt_embeds` ({count} rows)"
    check_memory(f"{source} x `num_images_per_prompt`={total // count}", None, pipe.generator.config, total,
                 max_batch_size, device, dtype.itemsize, output_type=output_type, chunk_argument="max_batch_size",
                 num_prompts=count, text_config=pipe.text_encoder.config if prompt_embeds is None else None)


def check_components(pipe: Any, call: str, text_encoder: bool) -> None:
    """``ValueError`` naming the missing component if ``pipe`` lacks what ``call`` needs: always the generator, and the
    tokenizer and text encoder when prompts are to be encoded (``text_encoder``)."""
    needed = ["generator"] + (["tokenizer", "text_encoder"] if text_encoder else [])
    missing = [name for name in needed if getattr(pipe, name, None) is None]
    if missing:
        raise ValueError(f"`{call}` needs the pipeline's {' and '.join(missing)}, but "
                         f"{'it is' if len(missing) == 1 else 'they are'} None: load a complete GALIP folder"
                         + (", or pass `prompt_embeds` instead of prompts." if "generator" not in missing else "."))


#: ``torch.compile`` modes (``None``: torch's default)
COMPILE_MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def check_fast_inference_options(dtype: Any, compile: Any, compile_mode: Any, trim_text_padding: Any) -> None:
    """The pipeline-level options of ``enable_fast_inference``, checked before anything changes (the generator's own
    options, ``dtype`` included, are checked by ``FastInferenceOptions.check``)."""
    for name, value in (("compile", compile), ("trim_text_padding", trim_text_padding)):
        if not isinstance(value, bool):
            raise TypeError(f"`{name}` must be True or False, got {value!r}.")
    if compile_mode not in COMPILE_MODES:
        raise ValueError(f"`compile_mode` must be one of {COMPILE_MODES}, got {compile_mode!r}.")
    if compile_mode is not None and not compile:
        raise ValueError(f"`compile_mode`={compile_mode!r} only applies with `compile=True`; pass both or neither.")
    from galip_diffusers.models.fast_inference import FastInferenceOptions

    FastInferenceOptions(None if dtype == torch.float32 else dtype).check()
