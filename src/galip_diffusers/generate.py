"""The ``diffusers`` engine of ``galip-generate`` (:mod:`galip_lite.generate` holds the command itself): a
``GALIPPipeline`` for any folder, Hub id, device or dtype."""

from __future__ import annotations

import argparse

from galip_lite.generate import build_parser, main, read_prompts  # noqa: F401  (the command, for `galip generate`)

from .cli import torch_dtype


def diffusers_engine(args: argparse.Namespace, total: int):
    """``(latents, make_images)`` for :func:`galip_lite.generate.write_images`, from a ``GALIPPipeline``: the noise of
    all ``total`` images drawn up front from ``--seed`` (as one pipeline call would draw it)."""
    import torch

    from .pipelines.pipeline_galip import GALIPPipeline
    from .utils import dtype_kwargs

    dtype = torch_dtype(args.dtype, args.device, warn=False)  # resolved (and warned about) by the command
    pipe = GALIPPipeline.from_pretrained(args.model, **dtype_kwargs(dtype)).to(args.device)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(args.seed)
    truncation = pipe.settings.resolve("sampling", truncation=args.truncation)["truncation"]
    latents = pipe.prepare_latents(total, pipe.generator.dtype, pipe.device, generator, truncation=truncation)
    return latents, lambda prompts, z: pipe(prompts, latents=z).images
