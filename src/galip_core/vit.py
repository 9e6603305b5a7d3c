"""The ViT-with-prompts loop of Mate-G, token <-> grid reshaping and CLIP's pixel statistics. Torch only.

GALIP runs the frozen CLIP-ViT on the *bridge feature* instead of patch embeddings (``conv1`` is skipped) and appends
one learned prompt token at the end of the sequence while some blocks run. :func:`prompted_vit` is that loop, the one
implementation behind both the diffusers model (transformers' CLIP layers, :class:`galip_diffusers.models.clip_bridge.
CLIPBridge`) and the fast runtime (plain-torch layers over a state dict, :mod:`galip_core.runtime`).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

Layer = Callable[[torch.Tensor], torch.Tensor]


def tokens_to_grid(tokens: torch.Tensor) -> torch.Tensor:
    """(B, N, C) patch tokens -> (B, C, g, g) with g = sqrt(N)."""
    batch, num_tokens, channels = tokens.shape
    grid = int(round(num_tokens**0.5))
    if grid * grid != num_tokens:
        raise ValueError(f"Cannot reshape {num_tokens} tokens into a square grid.")
    return tokens.transpose(1, 2).reshape(batch, channels, grid, grid)


def prompted_vit(
    bridge_feature: torch.Tensor,
    prompts: torch.Tensor,
    prompt_layers: Sequence[int],
    class_embedding: torch.Tensor,
    position_embedding: torch.Tensor,
    pre_layernorm: Layer,
    layers: Sequence[Layer],
) -> torch.Tensor:
    """Map ``bridge_feature`` (B, C, g, g) through the ViT ``layers`` (each ``hidden -> hidden``), appending
    ``prompts[:, k]`` (of (B, P, C)) as the last token while block ``prompt_layers[k]`` runs and dropping it after.

    The sequence is ``[CLS, patch tokens] + position_embedding``, then ``pre_layernorm``. Returns the patch tokens after
    the last block, CLS dropped and no post-layernorm, as a (B, C, g, g) map."""
    batch = bridge_feature.shape[0]
    tokens = bridge_feature.flatten(2).transpose(1, 2)
    cls = class_embedding.to(tokens.dtype).expand(batch, 1, -1)
    hidden = torch.cat([cls, tokens], dim=1) + position_embedding.to(tokens.dtype)
    hidden = pre_layernorm(hidden)
    prompt_index = {layer: k for k, layer in enumerate(prompt_layers)}
    for i, layer in enumerate(layers):
        k = prompt_index.get(i)
        if k is None:
            hidden = layer(hidden)
        else:
            hidden = layer(torch.cat([hidden, prompts[:, k : k + 1]], dim=1))[:, :-1]
    return tokens_to_grid(hidden[:, 1:])
