"""Reusable pieces of ``training/train_clip.py``: the small CLIP's config, a multi-positive contrastive loss, pixel
preprocessing, and zero-shot / linear-probe evaluation on the procedural shapes data set.

The shapes data set has only 96 distinct training captions, so a batch of 64 or more holds many identical captions.
Plain CLIP loss treats them as negatives of each other; :func:`multi_positive_contrastive_loss` instead spreads the
target mass evenly over every pair with the same caption (SupCon-style soft targets), in both directions.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

from galip_diffusers.data.shapes import BACKGROUNDS, COLORS, SHAPES, SIZES, all_captions, generate_shapes, parse_caption
from galip_core.finite import check_number_in_range
from galip_core.vit import CLIP_MEAN, CLIP_STD

ATTRIBUTES: tuple[str, ...] = ("size", "color", "shape", "background")
PROBE_RIDGES: tuple[float, ...] = (0.01, 0.1, 1.0)
ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {
    "size": tuple(SIZES), "color": tuple(COLORS), "shape": tuple(SHAPES), "background": tuple(BACKGROUNDS),
}


# ----------------------------------------------------------------------------- model
def check_clip_sizes(sizes: Mapping[str, Any], prefix: str = "") -> None:
    """``ValueError`` naming the bad size (``prefix + name``: ``"--"`` for train_clip.py's flags) unless every value of
    ``sizes`` (keyword names of :func:`build_clip_config`) is an integer >= 1, each tower's width a multiple of its
    heads, and ``image_size`` a multiple of ``patch_size``."""
    for name, value in sizes.items():
        check_number_in_range(prefix + name, value, 1, integer=True)
    for tower in ("vision", "text"):
        width, heads = sizes.get(f"{tower}_width"), sizes.get(f"{tower}_heads")
        if width is not None and heads is not None and width % heads != 0:
            raise ValueError(f"{prefix}{tower}_width ({width}) must be divisible by {prefix}{tower}_heads ({heads}).")
    image_size, patch_size = sizes.get("image_size"), sizes.get("patch_size")
    if image_size is not None and patch_size is not None and image_size % patch_size != 0:
        raise ValueError(f"{prefix}image_size ({image_size}) must be a multiple of {prefix}patch_size ({patch_size}).")


def build_clip_config(
    tokenizer: CLIPTokenizer,
    vision_width: int = 128,
    vision_layers: int = 4,
    vision_heads: int = 4,
    text_width: int = 128,
    text_layers: int = 3,
    text_heads: int = 4,
    projection_dim: int = 128,
    image_size: int = 64,
    patch_size: int = 8,
    mlp_ratio: float = 4.0,
) -> CLIPConfig:
    """A small ``CLIPConfig`` whose text tower matches ``tokenizer`` (vocabulary size, special ids, and
    ``max_position_embeddings == tokenizer.model_max_length``). Activations are ``quick_gelu`` as in OpenAI CLIP."""
    check_clip_sizes(dict(vision_width=vision_width, vision_layers=vision_layers, vision_heads=vision_heads,
                          text_width=text_width, text_layers=text_layers, text_heads=text_heads,
                          projection_dim=projection_dim, image_size=image_size, patch_size=patch_size))
    text_config = {
        "vocab_size": len(tokenizer),
        "hidden_size": text_width,
        "intermediate_size": int(text_width * mlp_ratio),
        "num_hidden_layers": text_layers,
        "num_attention_heads": text_heads,
        "max_position_embeddings": tokenizer.model_max_length,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
        "projection_dim": projection_dim,
    }
    vision_config = {
        "hidden_size": vision_width,
        "intermediate_size": int(vision_width * mlp_ratio),
        "num_hidden_layers": vision_layers,
        "num_attention_heads": vision_heads,
        "image_size": image_size,
        "patch_size": patch_size,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
        "projection_dim": projection_dim,
    }
    return CLIPConfig(text_config=text_config, vision_config=vision_config, projection_dim=projection_dim)


def pixel_values_from_uint8(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``(N, H, W, 3)`` uint8 images -> CLIP pixel values ``(N, 3, H, W)`` float32: ``x / 255`` normalised with the
    OpenAI CLIP mean and std (the ``"standard"`` mode of :func:`~galip_diffusers.models.clip_bridge.preprocess_for_clip`
    on images already at the CLIP resolution). ``(N, 3, H, W)`` uint8 tensors are accepted too."""
    x = torch.as_tensor(images)
    if x.dtype != torch.uint8 or x.ndim != 4:
        raise ValueError(f"images must be a uint8 (N, H, W, 3) array, got dtype {x.dtype} and shape {tuple(x.shape)}")
    if x.shape[-1] == 3:
        x = x.permute(0, 3, 1, 2)
    elif x.shape[1] != 3:
        raise ValueError(f"images must have 3 channels (N, H, W, 3) or (N, 3, H, W), got shape {tuple(x.shape)}")
    x = x.float() / 255.0
    mean = torch.tensor(CLIP_MEAN, dtype=x.dtype)[None, :, None, None]
    std = torch.tensor(CLIP_STD, dtype=x.dtype)[None, :, None, None]
    return ((x - mean) / std).contiguous()


@torch.no_grad()
def whiten_patch_embedding(model: CLIPModel, pixel_values: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Data-dependent initialisation of the vision tower's patch embedding (a ``Conv2d`` with stride = kernel).

    The patches of ``pixel_values`` (``(N, 3, H, W)``, already CLIP-normalised) are whitened with PCA: the conv's
    ``hidden_size`` filters become the top principal components of the patches, each divided by the square root of
    its eigenvalue (plus ``eps`` times the mean eigenvalue). Low-variance directions (edges and corners at every
    offset, which tell shapes apart) then enter the transformer as strongly as the dominant colour directions,
    instead of being learned from scratch. Returns the eigenvalues used (for logging).
    """
    conv = model.vision_model.embeddings.patch_embedding
    out_channels, in_channels, kernel, _ = conv.weight.shape
    patches = F.unfold(pixel_values.float(), kernel_size=kernel, stride=kernel)  # (N, C*k*k, L)
    patches = patches.transpose(1, 2).reshape(-1, in_channels * kernel * kernel).double()
    if out_channels > patches.shape[1]:
        raise ValueError(f"vision hidden_size ({out_channels}) must be <= the patch dimension ({patches.shape[1]}) "
                         "for a whitened patch embedding")
    patches = patches - patches.mean(dim=0, keepdim=True)
    covariance = patches.t() @ patches / max(len(patches) - 1, 1)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
    eigenvalues, eigenvectors = eigenvalues.flip(0)[:out_channels], eigenvectors.flip(1)[:, :out_channels]
    scale = (eigenvalues.clamp_min(0) + eps * eigenvalues.mean()).rsqrt()
    weight = (eigenvectors * scale).t().reshape(out_channels, in_channels, kernel, kernel)
    conv.weight.copy_(weight.to(conv.weight.dtype))
    return eigenvalues.float()


def save_image_processor(save_directory: str, image_size: int = 64) -> None:
    """Write the matching ``preprocessor_config.json`` (a ``CLIPImageProcessor`` at ``image_size``: bicubic resize,
    centre crop, OpenAI CLIP mean/std), so ``CLIPProcessor``/``AutoImageProcessor.from_pretrained`` work on the
    folder. For images already at ``image_size`` it equals :func:`pixel_values_from_uint8`."""
    from transformers import CLIPImageProcessor

    processor = CLIPImageProcessor(size={"shortest_edge": image_size},
                                   crop_size={"height": image_size, "width": image_size},
                                   image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))
    processor.save_pretrained(save_directory)


# ----------------------------------------------------------------------------- loss
def multi_positive_targets(row_labels: torch.Tensor, col_labels: torch.Tensor | None = None) -> torch.Tensor:
    """Row-normalised soft targets: ``T[i, j] = [row_i == col_j] / #{j : col_j == row_i}``.

    Every column whose label equals the row's label is a positive with equal mass; each row sums to 1. A row with
    no positive column raises ValueError.
    """
    col_labels = row_labels if col_labels is None else col_labels
    positives = (row_labels[:, None] == col_labels[None, :]).float()
    counts = positives.sum(dim=1, keepdim=True)
    if bool((counts == 0).any()):
        raise ValueError("every row label must occur among the column labels (a row has no positive)")
    return positives / counts


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over rows of ``-sum_j targets[i, j] * log_softmax(logits)[i, j]``."""
    return -(targets * F.log_softmax(logits.float(), dim=-1)).sum(dim=-1).mean()


def multi_positive_contrastive_loss(
    logits_per_image: torch.Tensor,
    image_labels: torch.Tensor,
    text_labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric CLIP loss with multi-positive soft targets.

    Args:
        logits_per_image: ``(N_img, N_txt)`` scaled cosine similarities (``CLIPModel``'s ``logits_per_image``).
        image_labels: ``(N_img,)`` integer caption ids of the images.
        text_labels: ``(N_txt,)`` caption ids of the texts (defaults to ``image_labels``, the usual square batch).
            Texts whose caption matches no image (extra negatives, e.g. every training caption) only take part in
            the image -> text term. Images whose label matches no text (e.g. ``-1`` for near-miss shapes, which no
            caption describes) only take part in the text -> image term, as extra negatives for every text.

    Returns:
        ``(CE(image -> text) + CE(text -> image)) / 2`` where each row's target spreads evenly over all columns with
        the same caption id. With all ids distinct this is exactly the standard CLIP loss.
    """
    text_labels = image_labels if text_labels is None else text_labels
    if logits_per_image.shape != (image_labels.shape[0], text_labels.shape[0]):
        raise ValueError(
            f"logits_per_image has shape {tuple(logits_per_image.shape)}, expected "
            f"({image_labels.shape[0]}, {text_labels.shape[0]}) from the labels"
        )
    same_caption = image_labels[:, None] == text_labels[None, :]
    described, matched = same_caption.any(dim=1), same_caption.any(dim=0)  # images with a text, texts with an image
    if not bool(described.any()):
        raise ValueError("no image label occurs among the text labels: nothing to contrast")
    loss_i2t = soft_cross_entropy(logits_per_image[described],
                                  multi_positive_targets(image_labels[described], text_labels))
    loss_t2i = soft_cross_entropy(logits_per_image.t()[matched],
                                  multi_positive_targets(text_labels[matched], image_labels))
    return 0.5 * (loss_i2t + loss_t2i)


def clamp_logit_scale(model: CLIPModel, max_scale: float = 100.0) -> None:
    """Clip the learnable temperature as OpenAI CLIP does: ``exp(logit_scale) <= max_scale``."""
    with torch.no_grad():
        model.logit_scale.clamp_(0.0, math.log(max_scale))


def jitter_brightness_contrast(images: torch.Tensor, contrast: float = 0.2, brightness: float = 0.08,
                               generator: torch.Generator | None = None) -> torch.Tensor:
    """Caption-safe photometric augmentation of ``(N, 3, H, W)`` uint8 images: per image, the same random contrast
    factor in ``[1 - contrast, 1 + contrast]`` (around mid-gray) and brightness shift in ``[-brightness,
    brightness]`` for all three channels, so hues (the colour names) are kept. Returns uint8."""
    n = images.shape[0]
    c = 1 + contrast * (2 * torch.rand(n, 1, 1, 1, generator=generator) - 1)
    b = brightness * (2 * torch.rand(n, 1, 1, 1, generator=generator) - 1)
    x = (images.float() / 255.0 - 0.5) * c.to(images.device) + 0.5 + b.to(images.device)
    return (x.clamp(0, 1) * 255.0).round().to(torch.uint8)


# ----------------------------------------------------------------------------- evaluation
def _device_dtype(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    param = next(model.parameters())
    return param.device, param.dtype


@torch.no_grad()
def encode_texts(model: CLIPModel, tokenizer: CLIPTokenizer, texts: Sequence[str], normalize: bool = True
                 ) -> torch.Tensor:
    """Projected text embeddings ``(N, projection_dim)`` (float32), L2-normalised by default. Prompts are padded to
    ``tokenizer.model_max_length`` as the GALIP pipeline does."""
    device, _ = _device_dtype(model)
    inputs = tokenizer(list(texts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                       return_tensors="pt")
    embeds = model.get_text_features(input_ids=inputs.input_ids.to(device))
    embeds = getattr(embeds, "pooler_output", embeds).float()  # transformers 5 may return a model output
    return F.normalize(embeds, dim=-1) if normalize else embeds


@torch.no_grad()
def encode_images(model: CLIPModel, images: np.ndarray, batch_size: int = 256, normalize: bool = True
                  ) -> torch.Tensor:
    """Projected image embeddings ``(N, projection_dim)`` (float32) of uint8 ``(N, H, W, 3)`` images."""
    device, dtype = _device_dtype(model)
    out = []
    for start in range(0, len(images), batch_size):
        pixels = pixel_values_from_uint8(images[start:start + batch_size]).to(device=device, dtype=dtype)
        embeds = model.get_image_features(pixel_values=pixels)
        out.append(getattr(embeds, "pooler_output", embeds).float())
    embeds = torch.cat(out) if out else torch.zeros(0, model.config.projection_dim)
    return F.normalize(embeds, dim=-1) if normalize else embeds


def zero_shot_attribute_accuracy(
    model: CLIPModel,
    tokenizer: CLIPTokenizer,
    images: np.ndarray,
    captions: Sequence[str],
    candidate_captions: Sequence[str] | None = None,
    batch_size: int = 256,
) -> dict[str, dict[str, float]]:
    """Zero-shot attribute classification by cosine similarity with caption prompts.

    Each image is compared with every candidate caption (default: all 108, held-out ones included).

    * ``"caption"``: the argmax caption is predicted and its four attributes are read off;
    * ``"marginal"``: ``softmax(logit_scale * cos)`` over the candidates is summed per attribute value and the most
      probable value is predicted.

    Returns ``{"caption": {...}, "marginal": {...}}``, each with the accuracy of ``size``, ``color``, ``shape``,
    ``background``, their ``mean`` and ``all`` (all four right), plus ``"n"``.
    """
    if len(images) != len(captions):
        raise ValueError(f"got {len(images)} images but {len(captions)} captions; lengths must match")
    candidates = list(candidate_captions) if candidate_captions is not None else all_captions("all")
    cand_attrs = [parse_caption(c) for c in candidates]
    targets = [parse_caption(c) for c in captions]
    text = encode_texts(model, tokenizer, candidates)
    image = encode_images(model, images, batch_size=batch_size)
    logits = model.logit_scale.exp().float().cpu() * image.cpu() @ text.cpu().t()
    probs = logits.softmax(dim=-1)
    best = logits.argmax(dim=-1).tolist()
    report: dict[str, Any] = {"caption": {}, "marginal": {}}
    hits_caption, hits_marginal = [], []
    for attr in ATTRIBUTES:
        values = ATTRIBUTE_VALUES[attr]
        truth = torch.tensor([values.index(t[attr]) for t in targets], dtype=torch.long)
        cand_index = torch.tensor([values.index(a[attr]) for a in cand_attrs], dtype=torch.long)
        pred_caption = cand_index[torch.tensor(best, dtype=torch.long)] if best else truth[:0]
        marginal = torch.zeros(len(images), len(values)).index_add_(1, cand_index, probs)
        pred_marginal = marginal.argmax(dim=-1)
        hits_caption.append(pred_caption == truth)
        hits_marginal.append(pred_marginal == truth)
    for key, hits in (("caption", hits_caption), ("marginal", hits_marginal)):
        stacked = torch.stack(hits, dim=1).float() if len(images) else torch.zeros(0, len(ATTRIBUTES))
        for i, attr in enumerate(ATTRIBUTES):
            report[key][attr] = float(stacked[:, i].mean()) if len(images) else 0.0
        report[key]["mean"] = float(np.mean([report[key][a] for a in ATTRIBUTES]))
        report[key]["all"] = float(stacked.all(dim=1).float().mean()) if len(images) else 0.0
    report["n"] = len(images)
    return report


def _one_hot_attributes(attrs: Sequence[Mapping[str, str]]) -> dict[str, torch.Tensor]:
    return {a: torch.tensor([ATTRIBUTE_VALUES[a].index(x[a]) for x in attrs], dtype=torch.long) for a in ATTRIBUTES}


def linear_probe_accuracy(
    train_features: torch.Tensor,
    train_captions: Sequence[str],
    test_features: torch.Tensor,
    test_captions: Sequence[str],
    ridge: float = 0.1,
) -> dict[str, float]:
    """Per-attribute accuracy of a ridge-regression (one-hot targets) linear read-out fitted on ``train_features``
    and tested on ``test_features``. Features are standardised with the training statistics first."""
    mean, std = train_features.mean(0, keepdim=True), train_features.std(0, keepdim=True) + 1e-6
    x_train = torch.cat([(train_features - mean) / std, torch.ones(len(train_features), 1)], dim=1).double()
    x_test = torch.cat([(test_features - mean) / std, torch.ones(len(test_features), 1)], dim=1).double()
    y_train = _one_hot_attributes([parse_caption(c) for c in train_captions])
    y_test = _one_hot_attributes([parse_caption(c) for c in test_captions])
    gram = x_train.t() @ x_train + ridge * len(x_train) * torch.eye(x_train.shape[1], dtype=torch.float64)
    result = {}
    for attr in ATTRIBUTES:
        onehot = F.one_hot(y_train[attr], len(ATTRIBUTE_VALUES[attr])).double()
        weights = torch.linalg.solve(gram, x_train.t() @ onehot)
        result[attr] = float(((x_test @ weights).argmax(dim=1) == y_test[attr]).double().mean())
    result["mean"] = float(np.mean([result[a] for a in ATTRIBUTES]))
    return result


def evaluate_clip(
    model: CLIPModel,
    tokenizer: CLIPTokenizer,
    num_images: int = 1000,
    seed: int = 1_000_003,
    batch_size: int = 256,
) -> dict[str, Any]:
    """The evaluation report written next to a trained shapes CLIP.

    * ``zero_shot.train_split``: ``num_images`` new images (seed ``seed``) of the 96 training captions;
    * ``zero_shot.held_out``: ``num_images`` images (seed ``seed + 1``) of the 12 held-out captions (purple triangle,
      orange circle), never seen in training (unless the CLIP was trained with `--caption_split all`);
    * ``text_linear_probe``: attributes read linearly from the (unnormalised) text embeddings, fitted on the 96
      training captions and tested on the 12 held-out ones (what the GALIP generator is conditioned on), for each
      ridge strength in ``PROBE_RIDGES`` (with 96 fitting points the read-out depends on it);
    * ``image_linear_probe``: the same for image embeddings, fitted on the train-split images and tested on the
      held-out images.
    """
    was_training = model.training
    model.eval()
    train = generate_shapes(num_images, seed=seed, split="train", as_array=True)
    held = generate_shapes(num_images, seed=seed + 1, split="held_out", as_array=True)
    train_images, train_caps = np.stack([p[0] for p in train]) if train else np.zeros((0, 64, 64, 3), np.uint8), [
        p[1] for p in train]
    held_images, held_caps = np.stack([p[0] for p in held]) if held else np.zeros((0, 64, 64, 3), np.uint8), [
        p[1] for p in held]
    report: dict[str, Any] = {
        "zero_shot": {
            "candidates": "all 108 captions",
            "train_split": zero_shot_attribute_accuracy(model, tokenizer, train_images, train_caps,
                                                        batch_size=batch_size),
            "held_out": zero_shot_attribute_accuracy(model, tokenizer, held_images, held_caps, batch_size=batch_size),
        },
        "eval_seed": seed,
    }
    train_text, held_text = all_captions("train"), all_captions("held_out")
    text_train = encode_texts(model, tokenizer, train_text, normalize=False).cpu()
    text_held = encode_texts(model, tokenizer, held_text, normalize=False).cpu()
    report["text_linear_probe"] = {
        f"ridge={r:g}": linear_probe_accuracy(text_train, train_text, text_held, held_text, r) for r in PROBE_RIDGES}
    if num_images >= 2:
        image_train = encode_images(model, train_images, batch_size, normalize=False).cpu()
        image_held = encode_images(model, held_images, batch_size, normalize=False).cpu()
        report["image_linear_probe"] = {
            f"ridge={r:g}": linear_probe_accuracy(image_train, train_caps, image_held, held_caps, r)
            for r in PROBE_RIDGES}
    report["logit_scale"] = float(model.logit_scale.detach().exp())
    model.train(was_training)
    return report
