"""``GALIPPipeline.interpolate``: frames along a path through K >= 2 endpoints, slerp between noise vectors and lerp
between sentence embeddings (one generator pass for the whole strip, or chunks of ``max_batch_size``)."""

from __future__ import annotations

import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput

from galip_core.finite import check_finite_output, check_number_in_range

from galip_diffusers.pipelines.call_checks import (
    check_components, check_generator, check_latents_without_truncation, check_max_batch_size, check_memory,
)


def slerp(v0: torch.Tensor, v1: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation between rows of ``v0`` and ``v1``; lerp where they are parallel or one is zero (the
    angle is undefined there, e.g. for the zero noise)."""
    v0f, v1f = v0.float(), v1.float()
    norms = v0f.norm(dim=-1, keepdim=True) * v1f.norm(dim=-1, keepdim=True)
    dot = (v0f * v1f).sum(-1, keepdim=True) / norms.clamp_min(torch.finfo(torch.float32).tiny)
    omega = torch.arccos(dot.clamp(-1.0, 1.0))
    sin_omega = torch.sin(omega)
    lerp = (1 - t) * v0f + t * v1f
    spherical = (torch.sin((1 - t) * omega) * v0f + torch.sin(t * omega) * v1f) / sin_omega.clamp_min(1e-8)
    return torch.where((sin_omega.abs() < 1e-6) | (norms == 0), lerp, spherical).to(v0.dtype)


def _check_interpolation_inputs(prompt, prompt_embeds, num_steps, latents, interpolate_noise, interpolate_text,
                                truncation, max_batch_size) -> None:  # fmt: skip
    """What ``interpolate`` checks before anything runs (the rest is ``GALIPPipeline.check_inputs``)."""
    if prompt is not None and prompt_embeds is not None:
        raise ValueError("Cannot forward both `prompt` and `prompt_embeds` to `interpolate`; pass one of them.")
    if prompt is None and prompt_embeds is None:
        raise ValueError("Provide either `prompt` or `prompt_embeds` to `interpolate`.")
    check_latents_without_truncation(latents, truncation)
    check_number_in_range("`num_steps` (frames per segment, endpoints included)", num_steps, 2, integer=True)
    if latents is not None and not (isinstance(latents, torch.Tensor) and latents.ndim == 2):
        got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
        raise ValueError(f"`latents` must be a 2-D tensor (K endpoints or 1, z_dim), got {got}.")
    for name, value in (("interpolate_noise", interpolate_noise), ("interpolate_text", interpolate_text)):
        if not isinstance(value, bool):
            raise TypeError(f"`{name}` must be True or False, got {value!r}.")
    check_max_batch_size(max_batch_size)


def interpolate_frames(pipe: DiffusionPipeline, prompt, prompt_embeds, num_steps, latents, generator, interpolate_noise,
                       interpolate_text, truncation, max_batch_size, output_type, return_dict
                       ) -> ImagePipelineOutput | tuple:  # fmt: skip
    """The body of :meth:`GALIPPipeline.interpolate` (``pipe``; its docstring describes the arguments)."""
    _check_interpolation_inputs(prompt, prompt_embeds, num_steps, latents, interpolate_noise, interpolate_text,
                                truncation, max_batch_size)
    check_components(pipe, "interpolate", text_encoder=prompt_embeds is None)
    truncation = pipe.settings.resolve("sampling", truncation=truncation)["truncation"]
    device, dtype = pipe._device_and_dtype()
    if prompt_embeds is None:
        pipe.check_inputs(prompt, 1, None, None, None, output_type)
        text_points = pipe.encode_prompt(prompt, device)
        check_finite_output(text_points, "text encoder", getattr(pipe.text_encoder.config, "_name_or_path", None))
    else:
        pipe.check_inputs(None, 1, None, None, prompt_embeds, output_type)
        text_points = prompt_embeds.to(device)
    num_points = max(text_points.shape[0], latents.shape[0] if latents is not None else 2)
    if num_points < 2:
        raise ValueError("`interpolate` needs at least two endpoints, got one prompt and one `latents` row: give "
                         "two or more prompts (or `prompt_embeds` rows) or `latents` rows, or leave `latents` out to "
                         "draw two noise endpoints.")
    if text_points.shape[0] == 1:
        text_points = text_points.expand(num_points, -1)
    if latents is not None and latents.shape[0] == 1:
        latents = latents.expand(num_points, -1)
    check_generator(generator, num_points, per="noise endpoint")  # the images of the strip are frames, not draws
    pipe.check_inputs(None, 1, generator, latents, text_points, output_type, truncation, "resample", max_batch_size)
    num_frames = (num_points - 1) * (num_steps - 1) + 1
    check_memory("num_steps", num_steps, pipe.generator.config, num_frames, max_batch_size, device, dtype.itemsize)
    truncation = None if latents is not None else truncation  # the model's setting is for noise drawn here
    noise_points = pipe.prepare_latents(num_points, dtype, device, generator, latents, truncation)

    frames_z, frames_t = [], []
    for k in range(num_points - 1):
        z0, z1 = noise_points[k : k + 1], noise_points[k + 1 : k + 2]
        s0, s1 = text_points[k : k + 1], text_points[k + 1 : k + 2]
        for step in range(0 if k == 0 else 1, num_steps):
            t = step / (num_steps - 1)
            frames_z.append(slerp(z0, z1, t) if interpolate_noise else noise_points[:1])
            frames_t.append(torch.lerp(s0, s1, t) if interpolate_text else text_points[:1])
    images = pipe._generate(torch.cat(frames_z), torch.cat(frames_t).to(dtype), max_batch_size)
    return pipe._postprocess(images, output_type, return_dict)
