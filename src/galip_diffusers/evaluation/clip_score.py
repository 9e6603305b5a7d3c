"""CLIP scores of generated images: the standard ``100 * max(cos, 0)`` (PIL bicubic, centre crop) and the official
GALIP raw cosine (nearest resize and the double shift), with any CLIP given by path or taken from the pipeline."""

from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from galip_diffusers.evaluation.fid import to_uint8
from galip_diffusers.models.clip_bridge import preprocess_for_clip

OFFICIAL_CLIP_NOTE = (
    "official GALIP CLIP preprocessing: nearest resize of x*0.5+0.5 and then (x+1)*0.5 once more before the CLIP "
    "normalisation (the 'double shift' quirk: the ViT sees pixels in [0.5, 1]); raw cosine, not x100"
)
STANDARD_CLIP_NOTE = ("standard CLIP preprocessing (PIL bicubic, shorter side, centre crop); mean of 100*max(cos, 0) "
                      "per image (Hessel et al. 2021's CLIP-S with w = 100)")


def center_crop_resize(image: Image.Image, resolution: int) -> np.ndarray:
    """Shorter side to ``resolution`` (PIL bicubic), centre crop; returns (resolution, resolution, 3) uint8."""
    image = image.convert("RGB")
    width, height = image.size
    scale = resolution / min(width, height)
    new_size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
    image = image.resize(new_size, Image.BICUBIC)
    left, top = (new_size[0] - resolution) // 2, (new_size[1] - resolution) // 2
    return np.asarray(image.crop((left, top, left + resolution, top + resolution)), dtype=np.uint8)


# ------------------------------------------------------------------------------------------------------ CLIP score
def check_pairs(images: torch.Tensor, prompts: Sequence[str]) -> None:
    """One prompt per image, at least one pair: ``ValueError`` "N images vs M prompts" otherwise. Without it, one
    image with three prompts silently broadcasts to three cosines, and other counts fail deep inside torch."""
    if isinstance(prompts, str):
        raise ValueError("prompts must be a list of strings, one per image, not a single str (whose characters would "
                         "count as prompts).")
    num_images = images.shape[0] if isinstance(images, torch.Tensor) and images.ndim == 4 else None
    if num_images is None:
        raise ValueError(f"images must be a float tensor (N, 3, H, W), got {_describe(images)}.")
    if num_images != len(prompts) or num_images == 0:
        raise ValueError(f"{num_images} images vs {len(prompts)} prompts: the CLIP score needs exactly one prompt per "
                         "image (and at least one image).")


def _describe(value) -> str:
    return f"a tensor of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__


class CLIPScorer:
    """Cosine similarity between images and captions with a CLIP (text and image towers with projections).

    ``images`` are float tensors (N,3,H,W) in [0, 1] and ``prompts`` a list of N strings, one per image: the cosine
    of image ``i`` with prompt ``i`` (any other count is a ``ValueError``, never a broadcast). ``standard_cosine``
    preprocesses like ``CLIPProcessor`` (PIL); ``official_cosine`` like the official GALIP code (see
    :data:`OFFICIAL_CLIP_NOTE`)."""

    def __init__(self, text_encoder, image_encoder, tokenizer, source: str = "", device: str | torch.device = "cpu"):
        self.text_encoder = text_encoder.to(device).eval()
        self.image_encoder = image_encoder.to(device).eval()
        self.tokenizer = tokenizer
        self.source = source
        self.device = torch.device(device)
        try:
            from transformers import CLIPImageProcessorPil as processor_cls
        except ImportError:  # older transformers: the slow processor is the PIL one
            from transformers import CLIPImageProcessor as processor_cls
        size = image_encoder.config.image_size
        self.processor = processor_cls(size={"shortest_edge": size}, crop_size={"height": size, "width": size})

    @classmethod
    def from_pretrained(cls, path: str, device: str | torch.device = "cpu") -> "CLIPScorer":
        """From a transformers ``CLIPModel`` folder with its tokenizer."""
        from transformers import CLIPModel, CLIPTokenizer

        from galip_diffusers.training.setup import clip_towers

        if not os.path.isdir(path):
            raise FileNotFoundError(f"--clip_model {path!r} is not a folder (a transformers CLIPModel + tokenizer).")
        text_encoder, image_encoder = clip_towers(CLIPModel.from_pretrained(path))
        return cls(text_encoder, image_encoder, CLIPTokenizer.from_pretrained(path), source=path, device=device)

    @torch.no_grad()
    def text_embeds(self, prompts: Sequence[str]) -> torch.Tensor:
        ids = self.tokenizer(
            list(prompts), padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True,
            return_tensors="pt",
        ).input_ids.to(self.device)
        return self.text_encoder(ids).text_embeds.float()

    @torch.no_grad()
    def standard_cosine(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """(N,) cosines of image ``i`` with prompt ``i``, standard CLIP preprocessing."""
        check_pairs(images, prompts)
        pil = [Image.fromarray(a) for a in to_uint8(images.permute(0, 2, 3, 1).cpu().numpy() * 255)]
        pixels = self.processor(images=pil, return_tensors="pt").pixel_values.to(self.device, self.image_encoder.dtype)
        image_embeds = self.image_encoder(pixel_values=pixels).image_embeds.float()
        return F.cosine_similarity(image_embeds, self.text_embeds(prompts), dim=-1).cpu()

    @torch.no_grad()
    def official_cosine(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """(N,) cosines of image ``i`` with prompt ``i``, official GALIP preprocessing."""
        check_pairs(images, prompts)
        x = images.to(self.device, torch.float32) * 2 - 1
        pixels = preprocess_for_clip(x, self.image_encoder.config.image_size, mode="official")
        image_embeds = self.image_encoder(pixel_values=pixels.to(self.image_encoder.dtype)).image_embeds.float()
        return F.cosine_similarity(image_embeds, self.text_embeds(prompts), dim=-1).cpu()


def clip_score_from_cosines(cosines: torch.Tensor) -> float:
    """Hessel et al. (2021), "CLIPScore": ``CLIP-S(c, v) = w * max(cos(c, v), 0)`` per image, averaged over images,
    with ``w = 100`` (the scale torchmetrics uses) instead of the paper's 2.5: ``mean(100 * max(cos, 0))``.

    torchmetrics' ``CLIPScore`` clamps after averaging, ``max(mean(100 * cos), 0)``: the same number when no cosine
    is negative, a larger one otherwise (``tests/evaluation/test_evaluation.py`` checks both on the same embeddings)."""
    return float((100 * cosines.clamp_min(0)).mean())


# ---------------------------------------------------------------------------------------------------------- data
def pipeline_clip_scorer(pipe) -> Optional[CLIPScorer]:
    """A scorer from the pipeline: its ``scorer`` CLIP if it has one, else its own (training) CLIP towers, as the
    official GALIP evaluation does (biased: the generator was trained against this CLIP)."""
    device = pipe._execution_device if hasattr(pipe, "_execution_device") else "cpu"
    if getattr(pipe, "scorer", None) is not None:
        from galip_diffusers.training.setup import clip_towers

        text_encoder, image_encoder = clip_towers(pipe.scorer)
        return CLIPScorer(text_encoder, image_encoder, pipe.tokenizer, "pipeline scorer", device)
    if getattr(pipe, "image_encoder", None) is not None:
        return CLIPScorer(
            pipe.text_encoder, pipe.image_encoder, pipe.tokenizer,
            "pipeline's own CLIP (the training CLIP, as in the official evaluation; biased)", device,
        )
    return None
