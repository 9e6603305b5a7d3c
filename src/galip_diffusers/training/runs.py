"""A ``train_galip.py`` run as a pipeline: pick a checkpoint, attach the CLIP components, load the generator (EMA
weights when saved) and its discriminator. Shared by the packaging and evaluation scripts in ``training/``."""

from __future__ import annotations

import os
from typing import Any, Optional

from transformers import CLIPModel, CLIPTokenizer

from galip_diffusers.models.discriminator import GALIPDiscriminator
from galip_diffusers.models.generator import GALIPGenerator
from galip_diffusers.pipelines.pipeline_galip import GALIPPipeline
from galip_diffusers.training.checkpoints import list_checkpoints, load_checkpoint_generator
from galip_diffusers.training.setup import clip_towers


def checkpoint_path(run_dir: str, checkpoint: str) -> str:
    """The folder of ``checkpoint`` (``"latest"`` or a ``checkpoint-N`` name) in ``run_dir``."""
    checkpoints = list_checkpoints(run_dir)
    if checkpoint == "latest":
        if not checkpoints:
            raise FileNotFoundError(f"--checkpoint latest: no checkpoint-N folder in {run_dir!r}.")
        return checkpoints[-1][1]
    path = os.path.join(run_dir, checkpoint)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"--checkpoint {checkpoint!r}: {path!r} does not exist; have {[p for _, p in checkpoints]}.")
    return path


def check_run(run_dir: str, checkpoint: Optional[str]) -> None:
    """Before anything loads: ``--run_dir`` is a folder and ``--checkpoint`` (when given) names one in it; a
    ``FileNotFoundError`` naming the flag otherwise."""
    if not run_dir.strip() or not os.path.isdir(run_dir):
        raise FileNotFoundError(f"--run_dir {run_dir!r} is not a folder; give the --output_dir of a train_galip.py "
                                "run.")
    if checkpoint is not None:
        checkpoint_path(run_dir, checkpoint)


def clip_components(clip_model_name_or_path: str, scorer_model_name_or_path: Optional[str] = None) -> dict[str, Any]:
    """Tokenizer, text encoder and image encoder of the bridge CLIP, plus the scorer CLIP when given."""
    text_encoder, image_encoder = clip_towers(CLIPModel.from_pretrained(clip_model_name_or_path))
    components = {"tokenizer": CLIPTokenizer.from_pretrained(clip_model_name_or_path), "text_encoder": text_encoder,
                  "image_encoder": image_encoder}
    if scorer_model_name_or_path is not None:
        components["scorer"] = CLIPModel.from_pretrained(scorer_model_name_or_path)
    return components


def run_pipeline(run_dir: str, checkpoint: Optional[str], components: dict[str, Any]
                 ) -> tuple[GALIPPipeline, GALIPDiscriminator, str]:
    """The run's pipeline (final weights, or ``checkpoint`` with its EMA generator), its discriminator, and a
    description of where the generator came from."""
    if checkpoint is None:
        generator = GALIPGenerator.from_pretrained(run_dir, subfolder="generator")
        source = f"the final weights of `{os.path.basename(os.path.abspath(run_dir))}`"
        discriminator = GALIPDiscriminator.from_pretrained(run_dir, subfolder="discriminator")
    else:
        path = checkpoint_path(run_dir, checkpoint)
        generator, used_ema = load_checkpoint_generator(path)
        source = f"`{os.path.basename(path)}`" + (" (EMA weights)" if used_ema else "")
        discriminator = GALIPDiscriminator.from_pretrained(path, subfolder="discriminator")
    return GALIPPipeline(generator=generator.eval(), **components), discriminator, source
