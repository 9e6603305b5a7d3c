"""Evaluation of a GALIP pipeline on the captioned-shapes task: pixel-level attribute accuracy on seen and held-out
caption combinations, positional diversity, scorer-CLIP score and a Fréchet distance in the scorer's feature space."""

from __future__ import annotations

import time
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from galip_diffusers.data import shapes


def generate(pipe, captions: Sequence[str], seed: int = 0, batch_size: int = 256, zero_noise: bool = False,
             **kwargs: Any) -> np.ndarray:
    """Images (N, H, W, 3) in [0, 1] for ``captions``, with per-image seeds ``seed + i`` (reproducible one by one);
    ``kwargs`` go to the pipeline call (e.g. ``truncation``). ``zero_noise=True`` draws every image at z = 0 instead
    (the sample a ``--reconstruction_weight`` anchor fits, and all a ``--reconstruction_warmup_steps`` stage trains)."""
    chunks = []
    for start in range(0, len(captions), batch_size):
        part = list(captions[start : start + batch_size])
        if zero_noise:
            noise = {"latents": torch.zeros(len(part), pipe.generator.config.z_dim)}
        else:
            noise = {"generator": [torch.Generator().manual_seed(seed + start + i) for i in range(len(part))]}
        chunks.append(pipe(part, output_type="np", **noise, **kwargs).images)
    return np.concatenate(chunks)


def caption_cycle(split: str, num_images: int) -> list[str]:
    """``num_images`` captions cycling through every caption of ``split`` (balanced over combinations)."""
    pool = shapes.all_captions(split)
    return [pool[i % len(pool)] for i in range(num_images)]


def center_spread(pipe, caption: str, num_seeds: int = 64, seed: int = 10_000) -> dict[str, float]:
    """Standard deviation (px) of the detected object centre over seeds for one prompt: positional diversity."""
    images = generate(pipe, [caption] * num_seeds, seed=seed)
    centres = [shapes.object_center(img) for img in images]
    found = np.array([c for c in centres if c is not None], dtype=np.float64)
    if len(found) < 2:
        return {"std_x": 0.0, "std_y": 0.0, "found": len(found)}
    return {"std_x": float(found[:, 0].std()), "std_y": float(found[:, 1].std()), "found": len(found)}


def pairwise_distance(images: np.ndarray, max_pairs: int = 2000, seed: int = 0) -> float:
    """Mean L1 distance between random pairs of images (0 would mean mode collapse)."""
    rng = np.random.default_rng(seed)
    i, j = rng.integers(0, len(images), (2, max_pairs))
    keep = i != j
    return float(np.abs(images[i[keep]] - images[j[keep]]).mean())


@torch.no_grad()
def scorer_embeddings(scorer, tokenizer, images: np.ndarray, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised scorer-CLIP image and text embeddings (standard CLIP preprocessing of [0, 1] images)."""
    from galip_diffusers.models.clip_bridge import preprocess_for_clip

    size = scorer.config.vision_config.image_size
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() * 2 - 1
    pixels = preprocess_for_clip(pixels, size, "standard").to(scorer.dtype)
    image_embeds = scorer.get_image_features(pixel_values=pixels)
    ids = tokenizer(list(captions), padding="max_length", truncation=True, return_tensors="pt").input_ids
    text_embeds = scorer.get_text_features(input_ids=ids)
    image_embeds = getattr(image_embeds, "pooler_output", image_embeds)
    text_embeds = getattr(text_embeds, "pooler_output", text_embeds)
    return torch.nn.functional.normalize(image_embeds.float(), dim=-1), torch.nn.functional.normalize(text_embeds.float(), dim=-1)


def frechet_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to the rows of ``x`` and ``y`` (float64, via symmetric eigh)."""
    x, y = x.double(), y.double()
    mu_x, mu_y = x.mean(0), y.mean(0)
    cov_x, cov_y = torch.cov(x.T), torch.cov(y.T)
    vals, vecs = torch.linalg.eigh(cov_x)
    sqrt_x = vecs @ torch.diag(vals.clamp_min(0).sqrt()) @ vecs.T
    cross = torch.linalg.eigvalsh(sqrt_x @ cov_y @ sqrt_x).clamp_min(0).sqrt().sum()
    return float((mu_x - mu_y).square().sum() + cov_x.trace() + cov_y.trace() - 2 * cross)


def time_generation(pipe, batch_size: int, repeats: int = 20) -> float:
    """Median seconds per image for ``batch_size`` images per call (after one warm-up call)."""
    prompts = caption_cycle("train", batch_size)
    pipe(prompts, output_type="pt")
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        pipe(prompts, output_type="pt")
        times.append(time.perf_counter() - start)
    return float(np.median(times)) / batch_size


def interpolation_strip(pipe, prompts: Sequence[str], num_steps: int = 8, seed: int = 0,
                        reader: Optional[Callable[[np.ndarray], Any]] = None) -> tuple[np.ndarray, dict[str, Any]]:
    """``pipe.interpolate`` through ``prompts`` as one (H, frames * W, 3) strip in [0, 1], plus what ``reader`` reads
    in every frame (default: the shape attributes of :func:`~galip_diffusers.data.shapes.predict_attributes`) and the
    L1 step between frames (a smooth path has no step much larger than the others)."""
    frames = pipe.interpolate(list(prompts), num_steps=num_steps, generator=torch.Generator().manual_seed(seed),
                              output_type="np").images
    steps = np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3))
    if reader is None:
        reader = lambda f: {k: v for k, v in shapes.predict_attributes(f).items()  # noqa: E731
                            if k in ("color", "shape", "size", "background")}
    info = {"prompts": list(prompts), "frames": len(frames), "attributes": [reader(f) for f in frames],
            "l1_steps": [round(float(x), 4) for x in steps],
            "max_over_mean_step": float(steps.max() / steps.mean()) if steps.mean() > 0 else 0.0}
    return np.concatenate(list(frames), axis=1), info


def evaluate_shapes_pipeline(pipe, num_images: int = 1000, seed: int = 0, with_speed: bool = True) -> dict[str, Any]:
    """All the figures of the shipped model's card."""
    pipe.set_progress_bar_config(disable=True)
    report: dict[str, Any] = {"num_images_per_split": num_images, "seed": seed}
    generated = {}
    for split in ("train", "held_out"):
        captions = caption_cycle(split, num_images)
        images = generate(pipe, captions, seed=seed)
        generated[split] = (images, captions)
        report[f"accuracy_{split}"] = {k: v for k, v in shapes.score_images(images, captions).items() if k != "n"}
    report["center_spread"] = center_spread(pipe, "a small red circle on a white background")
    report["pairwise_l1_generated"] = pairwise_distance(generated["train"][0])
    real_images, real_captions = _real_shapes(num_images, seed=seed + 777)
    report["pairwise_l1_real"] = pairwise_distance(real_images)
    if pipe.scorer is not None:
        fake_img, fake_txt = scorer_embeddings(pipe.scorer, pipe.tokenizer, *generated["train"])
        real_img, real_txt = scorer_embeddings(pipe.scorer, pipe.tokenizer, real_images, real_captions)
        report["scorer_clip_score_generated"] = float(100 * (fake_img * fake_txt).sum(-1).mean())
        report["scorer_clip_score_real"] = float(100 * (real_img * real_txt).sum(-1).mean())
        report["frechet_distance_scorer_clip"] = frechet_distance(fake_img, real_img)
        report["frechet_feature_network"] = "scorer CLIP image embeddings (L2-normalised), trained on shapes here"
    if with_speed:
        report["seconds_per_image_batch1"] = time_generation(pipe, 1)
        report["seconds_per_image_batch64"] = time_generation(pipe, 64, repeats=5)
    return report


def _real_shapes(num_images: int, seed: int) -> tuple[np.ndarray, list[str]]:
    examples = shapes.generate_shapes(num_images, seed=seed, split="train", as_array=True)
    images = np.stack([img for img, _ in examples]).astype(np.float32) / 255.0
    return images, [cap for _, cap in examples]
