"""AugCLIP (FuseDream, Liu et al. 2021): a CLIP score averaged over random differentiable augmentations of the image.

A plain CLIP score can be raised by adversarial pixel patterns that a generator can easily produce; averaging the
cosine over views that are colour-jittered, translated, rescaled and cut out makes such patterns pay off far less.

Every augmentation is written in plain torch (no kornia/torchvision), is differentiable with respect to the image, and
draws all of its randomness from an explicit ``torch.Generator`` (so the same seed gives the same views). Images are in
the generator's range [-1, 1], shape (B, 3, H, W).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.utils import logging

from galip_core.text import clip_input_ids
from galip_diffusers.models.clip_bridge import preprocess_for_clip

logger = logging.get_logger(__name__)


@dataclass(frozen=True)
class AugmentationConfig:
    """The augmentation policy. Ranges are the defaults of FuseDream's policy ``color,translation,resize,cutout``.

    Attributes:
        brightness: brightness offset drawn from ``U(-b, b)`` (in [0, 1] pixel units).
        contrast: contrast factor drawn from ``U(1 - c, 1 + c)`` (about each image's mean).
        saturation: saturation factor drawn from ``U(1 - s, 1 + s)`` (about each pixel's grey value).
        translate: largest shift, as a fraction of the side (1/8).
        scale: range of the zoom factor (0.8-1.2); the resized image is centre-cropped or padded back to size.
        cutout: side of the cut-out square, as a fraction of the image side (1/2); it is filled with 0 (mid-grey).
    """

    brightness: float = 0.2
    contrast: float = 0.25
    saturation: float = 0.5
    translate: float = 0.125
    scale: tuple[float, float] = (0.8, 1.2)
    cutout: float = 0.5


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    u = torch.rand(n, generator=generator, device=generator.device if generator is not None else "cpu")
    return (low + (high - low) * u).to(device=like.device, dtype=like.dtype)


def random_color(
    images: torch.Tensor, generator: torch.Generator | None, brightness: float = 0.2, contrast: float = 0.25,
    saturation: float = 0.5,
) -> torch.Tensor:
    """Colour jitter per image: brightness offset, then saturation and contrast factors (computed in [0, 1])."""
    n = images.shape[0]
    x = images * 0.5 + 0.5
    x = x + _uniform(n, -brightness, brightness, generator, x).view(n, 1, 1, 1)
    grey = x.mean(dim=1, keepdim=True)
    x = grey + (x - grey) * _uniform(n, 1 - saturation, 1 + saturation, generator, x).view(n, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = mean + (x - mean) * _uniform(n, 1 - contrast, 1 + contrast, generator, x).view(n, 1, 1, 1)
    return x * 2 - 1


def affine_resample(images: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Zoom every image by ``scale[i]`` about its centre and move its content by ``shift[i] = (dx, dy)`` (fractions
    of the side; positive = right/down), in one bilinear ``grid_sample`` with zero (mid-grey) padding."""
    n = images.shape[0]
    theta = torch.zeros(n, 2, 3, device=images.device, dtype=images.dtype)
    theta[:, 0, 0] = 1.0 / scale
    theta[:, 1, 1] = 1.0 / scale
    theta[:, :, 2] = -2.0 * shift / scale[:, None]  # output (u) samples input (u - 2 * shift) / scale
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_translate(images: torch.Tensor, generator: torch.Generator | None, max_fraction: float = 0.125) -> torch.Tensor:
    """Shift each image's content by up to ``max_fraction`` of its side in x and y (vacated pixels become 0)."""
    n = images.shape[0]
    shift = _uniform(2 * n, -max_fraction, max_fraction, generator, images).view(n, 2)
    return affine_resample(images, torch.ones(n, device=images.device, dtype=images.dtype), shift)


def random_resize(
    images: torch.Tensor, generator: torch.Generator | None, scale: tuple[float, float] = (0.8, 1.2)
) -> torch.Tensor:
    """Resize each image by a factor in ``scale`` and centre-crop (zoom in) or zero-pad (zoom out) back to size."""
    n = images.shape[0]
    factors = _uniform(n, scale[0], scale[1], generator, images)
    return affine_resample(images, factors, torch.zeros(n, 2, device=images.device, dtype=images.dtype))


def random_cutout(images: torch.Tensor, generator: torch.Generator | None, fraction: float = 0.5) -> torch.Tensor:
    """Set a square of side ``round(fraction * side)`` at a random position fully inside each image to 0."""
    n, _, height, width = images.shape
    side_h, side_w = round(fraction * height), round(fraction * width)
    top = (_uniform(n, 0, 1, generator, images.float()) * (height - side_h + 1)).long().clamp_max(height - side_h)
    left = (_uniform(n, 0, 1, generator, images.float()) * (width - side_w + 1)).long().clamp_max(width - side_w)
    rows = torch.arange(height, device=images.device)[None, :, None]
    cols = torch.arange(width, device=images.device)[None, None, :]
    inside = (rows >= top[:, None, None]) & (rows < top[:, None, None] + side_h)
    inside = inside & (cols >= left[:, None, None]) & (cols < left[:, None, None] + side_w)
    return images * (~inside).unsqueeze(1).to(images.dtype)


def augment(
    images: torch.Tensor, num_augmentations: int, generator: torch.Generator | None,
    config: AugmentationConfig = AugmentationConfig(),
) -> torch.Tensor:
    """``num_augmentations`` random views of every image, shape (B * N, 3, H, W), views of image b at rows
    ``b * N ... b * N + N - 1``. Colour jitter, then translation and resize (one resampling), then cutout."""
    if not isinstance(num_augmentations, int) or num_augmentations < 1:
        raise ValueError(f"`num_augmentations` must be an int >= 1, got {num_augmentations!r}.")
    x = images.repeat_interleave(num_augmentations, dim=0)
    n = x.shape[0]
    x = random_color(x, generator, config.brightness, config.contrast, config.saturation)
    shift = _uniform(2 * n, -config.translate, config.translate, generator, x).view(n, 2)
    factors = _uniform(n, config.scale[0], config.scale[1], generator, x)
    x = affine_resample(x, factors, shift)
    return random_cutout(x, generator, config.cutout)


# ---------------------------------------------------------------------------------------------- scoring
def encode_images(scorer, images: torch.Tensor, output_hidden_states: bool = False):
    """L2-normalised scorer image embeddings of [-1, 1] images (standard CLIP preprocessing), and optionally the
    scorer's vision hidden states (a tuple, CLS included). ``scorer`` is a transformers ``CLIPModel``."""
    size = scorer.config.vision_config.image_size
    pixels = preprocess_for_clip(images.float(), size, "standard").to(scorer.dtype)
    out = scorer.vision_model(pixel_values=pixels, output_hidden_states=output_hidden_states, return_dict=True)
    embeds = F.normalize(scorer.visual_projection(out.pooler_output).float(), dim=-1)
    return (embeds, out.hidden_states) if output_hidden_states else embeds


def encode_text(scorer, tokenizer, prompts: list[str], device: torch.device | None = None) -> torch.Tensor:
    """L2-normalised scorer text embeddings. The tokenizer must be the one the scorer's text tower was trained with.
    The text path is the generator's (`galip_core.text.clip_input_ids`): the same CLIP text cleaning, and prompts
    longer than the scorer's limit (the tokenizer's ``model_max_length`` or the scorer's position embeddings, the
    smaller) are truncated with the same warning, naming the cut text."""
    max_length = min(tokenizer.model_max_length, scorer.config.text_config.max_position_embeddings)
    input_ids = clip_input_ids(tokenizer, list(prompts), max_length, warn=logger.warning)
    out = scorer.text_model(input_ids=input_ids.to(device or scorer.device), return_dict=True)
    return F.normalize(scorer.text_projection(out.pooler_output).float(), dim=-1)


def clip_score(scorer, images: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
    """Plain CLIP cosine between each image and its row of ``text_embeds`` (normalised), shape (B,)."""
    return (encode_images(scorer, images) * text_embeds).sum(-1)


def augclip_score(
    scorer, images: torch.Tensor, text_embeds: torch.Tensor, num_augmentations: int,
    generator: torch.Generator | None, config: AugmentationConfig = AugmentationConfig(),
) -> torch.Tensor:
    """AugCLIP: the mean cosine over ``num_augmentations`` random views of each image, shape (B,). Differentiable."""
    views = augment(images, num_augmentations, generator, config)
    cos = (encode_images(scorer, views) * text_embeds.repeat_interleave(num_augmentations, dim=0)).sum(-1)
    return cos.view(images.shape[0], num_augmentations).mean(dim=1)


@torch.no_grad()
def measure_augclip(
    scorer, images: torch.Tensor, text_embeds: torch.Tensor, num_augmentations: int = 128, seed: int = 0,
    config: AugmentationConfig = AugmentationConfig(), chunk_size: int = 256,
) -> torch.Tensor:
    """AugCLIP for reporting: more views, a fixed seed (so that scores before and after refinement see the very same
    views), no gradients, and views scored in chunks of ``chunk_size``. Shape (B,)."""
    generator = torch.Generator(device=images.device).manual_seed(int(seed))
    views_per_chunk = max(1, chunk_size // max(1, images.shape[0]))
    totals = torch.zeros(images.shape[0], device=images.device)
    done = 0
    while done < num_augmentations:
        n = min(views_per_chunk, num_augmentations - done)
        totals += augclip_score(scorer, images, text_embeds, n, generator, config) * n
        done += n
    return totals / num_augmentations
