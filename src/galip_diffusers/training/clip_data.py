"""Train and evaluate a small CLIP on any image-caption data set (e.g. the emoji data set), not only the shapes.

``training/train_clip.py --train_data_dir DIR`` keeps the images of a ``save_to_disk`` folder (or an imagefolder) as
uint8 in memory, draws one caption per image for each batch (a list column gives several captions per image), and
contrasts every image with the batch's distinct captions: identical strings share one embedding and count as
positives for each other (:func:`~galip_diffusers.clip_training.multi_positive_contrastive_loss`).
"""

from __future__ import annotations

import random
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from transformers import CLIPModel, CLIPTokenizer

from .clip import encode_images, encode_texts
from .data import check_columns, decode_image, load_image_text_dataset


def _captions_of(value: Any, where: str) -> list[str]:
    captions = [value] if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else []
    captions = [c for c in captions if isinstance(c, str) and c.strip()]
    if not captions:
        raise ValueError(f"{where}: the caption column holds no non-empty caption (got {value!r})")
    return captions


def load_caption_pool(
    data_dir: str, image_column: str = "image", caption_column: str = "text", image_size: int = 64,
    drop_held_out: bool = True,
) -> tuple[torch.Tensor, list[list[str]], list[dict]]:
    """Images ``(N, 3, S, S)`` uint8, their caption lists and their other columns, from a data set folder.

    With ``drop_held_out`` (the default, for training), rows whose ``held_out`` column is true are dropped, so a
    folder that holds held-out pairs can never be trained on by mistake.
    """
    dataset = load_image_text_dataset(train_data_dir=data_dir)
    check_columns(dataset, image_column, caption_column)
    if drop_held_out and "held_out" in dataset.column_names:
        dataset = dataset.filter(lambda held_out: not held_out, input_columns="held_out")
    if len(dataset) == 0:
        raise ValueError(f"{data_dir}: no rows to use (held-out rows dropped: {drop_held_out})")
    images, captions, extras = [], [], []
    for index, row in enumerate(dataset):
        image = decode_image(row.pop(image_column)).convert("RGB")
        if image.size != (image_size, image_size):
            image = image.resize((image_size, image_size), Image.BICUBIC)
        images.append(np.asarray(image, dtype=np.uint8))
        captions.append(_captions_of(row.pop(caption_column), f"{data_dir} row {index}"))
        extras.append(row)
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(), captions, extras


def sample_batch_captions(caption_lists: Sequence[Sequence[str]], rng: random.Random
                          ) -> tuple[list[str], torch.Tensor]:
    """One caption per image, then the distinct captions and each image's column among them."""
    picked = [captions[rng.randrange(len(captions))] for captions in caption_lists]
    unique = sorted(set(picked))
    column = {caption: i for i, caption in enumerate(unique)}
    return unique, torch.tensor([column[c] for c in picked], dtype=torch.long)


@torch.no_grad()
def retrieval_accuracy(
    model: CLIPModel, tokenizer: CLIPTokenizer, images: torch.Tensor, targets: Sequence[str],
    candidates: Sequence[str], batch_size: int = 512, top_k: Sequence[int] = (1, 5),
) -> dict[str, float]:
    """Image-to-text retrieval: the share of images whose target caption is among the ``k`` most similar
    ``candidates`` (cosine of the projected embeddings), for each ``k`` in ``top_k``."""
    index = {caption: i for i, caption in enumerate(candidates)}
    missing = [t for t in targets if t not in index]
    if missing:
        raise ValueError(f"{len(missing)} target captions are not among the candidates, e.g. {missing[0]!r}")
    text = torch.cat([encode_texts(model, tokenizer, candidates[i:i + batch_size])
                      for i in range(0, len(candidates), batch_size)])
    image = encode_images(model, images.permute(0, 2, 3, 1).numpy(), batch_size)
    ranks = (image @ text.T).argsort(dim=1, descending=True)[:, : max(top_k)]
    hits = ranks == torch.tensor([index[t] for t in targets])[:, None]
    return {f"top{k}": float(hits[:, :k].any(dim=1).float().mean()) for k in top_k} | {"n": len(targets)}


def evaluate_on_folder(model: CLIPModel, tokenizer: CLIPTokenizer, data_dir: str, image_size: int = 64,
                       caption_column: str = "text", split_column: str = "held_out") -> dict[str, Any]:
    """Retrieval of each image's most specific caption (the last of its list) among every such caption of the
    folder, reported per value of ``split_column`` when the folder has that column (e.g. seen / held-out)."""
    images, captions, extras = load_caption_pool(data_dir, caption_column=caption_column, image_size=image_size,
                                                drop_held_out=False)
    targets = [c[-1] for c in captions]
    candidates = sorted(set(targets))
    was_training = model.training
    model.eval()
    groups = {"all": list(range(len(targets)))}
    if extras and split_column in extras[0]:
        groups = {f"{split_column}={value}": [i for i, e in enumerate(extras) if e[split_column] == value]
                  for value in sorted({e[split_column] for e in extras}, key=str)}
    report = {name: retrieval_accuracy(model, tokenizer, images[rows], [targets[i] for i in rows], candidates)
              for name, rows in groups.items() if rows}
    model.train(was_training)
    return {"candidates": len(candidates), **report}
